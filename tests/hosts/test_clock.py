"""A worker whose clock is 10 minutes fast: it still joins (registration signs the coordinator's
challenge, not a time), but the signed requests that carry a timestamp are refused, and the refusal names
the clock: the relay's (storing an output) and the coordinator's (its signed quit on SIGTERM)."""

from __future__ import annotations

import re
import signal
import time

import pytest

from tests.hosts.netns import Host, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("hosts-fast")]

SKEW_S = 600


def _found(proc, pattern: re.Pattern) -> list[str]:
    return [m.group(1) for line in proc.lines if (m := pattern.search(line))]


def test_a_worker_with_a_skewed_clock_is_refused_with_a_message_naming_the_clock(fast_net):
    net = fast_net
    host = Host("skewed", net.client.ns, net.client.ip)  # a fourth worker, on the client's host
    net.stake([host])
    proc = net.procs[host.name] = net.hosts.spawn(
        host, ["-m", "tests.hosts._skewed", str(SKEW_S), *net.worker_argv(host)], "skewed", helium=False)
    try:
        proc.wait_for("ready node=", 90)
        relay_says = re.compile(r"the caller's clock is (\d+) s ahead of the relay's clock; sync it \(NTP\)")
        deadline = time.time() + 60
        while time.time() < deadline and not _found(proc, relay_says):
            out = net.submit(3, extra=["--kind", "sd"], timeout=60)  # until it has tried to store an image
            assert out["states"] == {"TASK_STATE_VALIDATED": 3}, out  # the others carry the tasks
        said = _found(proc, relay_says)
        assert said and abs(int(said[0]) - SKEW_S) <= 2, proc.tail(20)
        assert proc.popen.poll() is None, "a refused request is an error of that task, not of the worker"
        print("worker events:", sorted({m.group(1) for ln in proc.lines if (m := re.search(r"^\S+Z \[\w+\s*\] (\w+)", ln))}))
        proc.popen.send_signal(signal.SIGTERM)  # drain: a signed quit, stamped 10 minutes ahead
        coord_says = re.compile(r"the node's clock is (\d+) s ahead of the coordinator's clock; sync it \(NTP\)")
        said = wait_until(lambda: _found(proc, coord_says), 30, "the coordinator refused the quit, naming the clock")
        assert abs(int(said[0]) - SKEW_S) <= 2
    finally:
        proc.kill9()
