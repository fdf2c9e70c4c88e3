"""The relay on a host of its own (`helium relay`, TLS): SD outputs travel from the workers to it, and a
partition of the relay makes tasks wait, then recover when it returns, or abort by their deadline."""

from __future__ import annotations

import json
import time

import pytest

from tests.hosts.netns import Host

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300), pytest.mark.xdist_group("hosts-fast")]


def _files(root) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_outputs_travel_through_the_relay_host_over_tls(fast_net):
    net = fast_net
    before, bundled = _files(net.root / "relay"), _files(net.root / "coord" / "relay")
    out = net.submit(3, extra=["--kind", "sd", "--outputs"], timeout=60)
    assert out["states"] == {"TASK_STATE_VALIDATED": 3}, out
    images = [img for o in out["outputs"] for img in json.loads(o)["images"]]
    assert len(images) == 3, out["outputs"]
    new = _files(net.root / "relay") - before
    # Each node stores its own image on the relay's host (3 nodes x 3 tasks; the last may be cancelled
    # once two agree); the coordinator's bundled relay stays out of it.
    assert len(new) >= 6, new
    assert _files(net.root / "coord" / "relay") == bundled
    relay_log = "\n".join(net.procs["relay"].lines)
    assert "relay_started" in relay_log and "tls=True" in relay_log, relay_log[-1000:]


def test_relay_partition_makes_tasks_wait_then_recover_or_abort_by_deadline(fast_net):
    net = fast_net
    assert net.relay is not None
    # A short cut (shorter than keepalive's 40 s): transfers on the workers' open connections to the relay
    # wait, then finish once it is back. (A worker with no connection yet gets "no route to host" at once,
    # and its 3 quick relay attempts end the assignment as crashed: see the closing note.)
    warm = net.submit(3, extra=["--kind", "sd"], timeout=60)  # every worker has a connection to the relay
    assert warm["states"] == {"TASK_STATE_VALIDATED": 3}, warm
    net.hosts.down(net.relay)
    cut_at = time.time()
    waiting = net.submit(2, wait=False, extra=["--kind", "sd"])["ids"]
    time.sleep(8)
    mid = net.peek(waiting)
    assert not {"TASK_STATE_VALIDATED", "TASK_STATE_ABORTED"} & set(mid["states"]), mid  # waiting
    net.hosts.up(net.relay)
    healed_at = time.time()
    try:
        done = net.wait(waiting, timeout=120)
    except AssertionError:
        about = [ln[:300] for w in net.workers for ln in net.procs[w.name].lines if any(t in ln for t in waiting)
                 or "relay" in ln or "Error" in ln]  # fmt: skip
        raise AssertionError("\n".join(about[-40:])) from None
    assert done["states"] == {"TASK_STATE_VALIDATED": 2}, done
    print(f"relay cut for {healed_at - cut_at:.0f} s: the waiting tasks validated {time.time() - healed_at:.1f} s "
          "after it returned")  # fmt: skip
    # A task whose deadline comes while the relay is away is aborted by it, no fee taken.
    net.hosts.down(net.relay)
    doomed = net.submit(1, wait=False, extra=["--kind", "sd", "--task-deadline-s", "12"])["ids"]
    aborted = net.wait(doomed, timeout=40)
    net.hosts.up(net.relay)
    assert aborted["states"] == {"TASK_STATE_ABORTED": 1} and "deadline" in aborted["reasons"][0], aborted


def test_relay_accepts_the_workers_keepalive_pings(fast_net):
    """The standalone relay answered a worker's keepalive pings with GOAWAY too_many_pings (its server
    kept gRPC's 5-minute floor), dropping the connection, and any transfer on it, every few pings."""
    net = fast_net
    extra = Host("pinger", net.client.ns, net.client.ip)  # a fourth worker, on the client's host, pinging every second
    mark = 0
    net.start_workers([extra], "--keepalive-time", "1", "--keepalive-timeout", "5")
    try:
        mark = len(net.procs[extra.name].lines)
        deadline = time.time() + 60
        while time.time() < deadline and not [ln for ln in net.procs[extra.name].lines[mark:]
                                              if "assignment_received" in ln and "TASK_TYPE_SD" in ln]:
            net.submit(3, extra=["--kind", "sd"], timeout=60)  # until it has stored an image on the relay
        time.sleep(8)  # idle: only keepalive pings on the relay connection
        lines = net.procs[extra.name].lines[mark:]
        assert not [ln for ln in lines if "too_many_pings" in ln], [ln for ln in lines if "GOAWAY" in ln][:2]
    finally:
        net.procs[extra.name].terminate(timeout=20)  # drains: the coordinator stops assigning to it at once
