"""bench.relay end to end: real relay and bare-gRPC peer processes, the machine-readable last line."""

from __future__ import annotations

import re

from bench import relay as bench_relay


def test_relay_bench_with_transport_floor_prints_its_figure_last(capsys) -> None:
    assert bench_relay.main(["--rounds", "1", "--transport-floor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"bare gRPC put\+get median [\d.]+ ms = \d+ MB/s: ratio [\d.]+ with no relay work at all", lines[-2])
    assert re.fullmatch(r"figure=relay_throughput value=[\d.]+ unit=MB/s baseline=file_copy ratio=[\d.]+", lines[-1])
    assert sum(line.startswith("round ") and "bare gRPC" in line for line in lines) == 2  # warm-up + 1
