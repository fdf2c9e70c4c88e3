"""Relay throughput: Put then Get of a 10 MB blob over real gRPC on loopback, against a plain file copy.

The relay runs as its own process (`python -m relay`, as `helium relay` does; bundled in the coordinator
it is the same servicer), the client here signs with a worker key and a coordinator grant. One round
is Put + Get of a fresh 10 MB blob (one durable write and one read, like a copy); the baseline round is
``shutil.copyfile`` of a 10 MB file plus fsync of the copy. Rounds are interleaved; medians compared.
Last line: ``figure=relay_throughput value=<MB/s> unit=MB/s baseline=file_copy ratio=<r>``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from eth_account import Account

from chain.signing import DEV_DOMAIN
from relay.auth import make_grant, worker_grant_slots
from relay.client import RelayClient
from relay.config import grpc_options
from relay.store import result_slot

SIZE = 10_000_000


def _start_relay(data_dir: Path, coordinator: str, chunk_bytes: int) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIUM_")}
    env["HELIUM_CHUNK_BYTES"] = str(chunk_bytes)
    cmd = [sys.executable, "-m", "relay", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--coordinator-address", coordinator, "--max-blob-bytes", str(64 << 20)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("ready grpc="):
            return proc, line.split("=", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("relay did not print its ready line within 30 s")


def _copy_round(src: Path, dst: Path) -> float:
    t = time.perf_counter()
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - t
    dst.unlink()
    return elapsed


async def _run(rounds: int, chunk_bytes: int, work: Path) -> tuple[float, float]:
    coordinator, worker = Account.create(), Account.create()
    proc, address = _start_relay(work / "relay", coordinator.address, chunk_bytes)
    src = work / "src.bin"
    data = os.urandom(SIZE)
    src.write_bytes(data)
    relay_times: list[float] = []
    copy_times: list[float] = []
    try:
        async with grpc.aio.insecure_channel(address, options=grpc_options(chunk_bytes)) as channel:
            client = RelayClient(channel, worker, DEV_DOMAIN, chunk_bytes=chunk_bytes)
            read, write = worker_grant_slots(worker.address)
            for i in range(rounds + 1):  # round 0 warms up the channel and caches
                task_id = "0x" + secrets.token_hex(32)
                read_own = [*read, result_slot(worker.address)]
                grant = make_grant(coordinator, DEV_DOMAIN, task_id, worker.address, read_own, write, int(time.time()) + 600)
                t = time.perf_counter()
                await client.put(task_id, result_slot(worker.address), data, grant)
                t_put = time.perf_counter() - t
                back = await client.get(task_id, result_slot(worker.address), grant)
                elapsed = time.perf_counter() - t
                assert back == data, "relay returned different bytes"
                copy_elapsed = _copy_round(src, work / "dst.bin")
                if i:
                    relay_times.append(elapsed)
                    copy_times.append(copy_elapsed)
                print(
                    f"round {i}: relay put+get {elapsed * 1e3:7.1f} ms (put {t_put * 1e3:5.1f}, "
                    f"get {(elapsed - t_put) * 1e3:5.1f})   file copy {copy_elapsed * 1e3:7.1f} ms"
                )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return statistics.median(relay_times), statistics.median(copy_times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--chunk-bytes", type=int, default=1 << 20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="helium-bench-relay-") as tmp:
        relay_s, copy_s = asyncio.run(_run(args.rounds, args.chunk_bytes, Path(tmp)))
    mb = SIZE / 1e6
    value, baseline = mb / relay_s, mb / copy_s
    print(f"relay put+get median {relay_s * 1e3:.1f} ms = {value:.0f} MB/s; file copy median {copy_s * 1e3:.1f} ms = {baseline:.0f} MB/s")
    print(f"figure=relay_throughput value={value:.1f} unit=MB/s baseline=file_copy ratio={value / baseline:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
