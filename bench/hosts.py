"""Hosts throughput: validated tasks/s and added latency with every part in a network namespace of its own
(TLS on every link, frames through the test switch of tests/hosts), without and with netem-like delay on
the workers' links; the baseline is the same network with every part on 127.0.0.1 of one namespace
(TLS too), measured in the same run.

Each phase: a coordinator (no chain) and 3 instant workers holding 8 assignments each, as separate
`helium` processes; a creator process sends `--tasks` GPT tasks in CreateTasks of 50 and waits for every
outcome (throughput), then `--latency-tasks` one at a time (submit-to-validated latency). Needs root
(network namespaces).

    python -m bench.hosts [--tasks 300] [--latency-tasks 30] [--delay-ms 100] [--jitter-ms 20] [--loss 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

from tests.hosts.netns import Hosts, unavailable_reason
from tests.hosts.network import HostNet


def _stamp(line: str) -> float:
    return dt.datetime.fromisoformat(line.split()[0]).timestamp()


def _measure(net: HostNet, tasks: int, latency_tasks: int) -> dict:
    """Throughput from the coordinator's own log (first task queued to last validated), so the creator's
    waiting (a watch stream per task) does not bound the figure; latency as the creator sees it."""
    net.submit(20, timeout=120)  # warm-up: connections, caches, the coordinator's first rounds
    mark = len(net.coord_log())
    out = net.submit(tasks, timeout=300)
    if out["states"] != {"TASK_STATE_VALIDATED": tasks}:
        raise SystemExit(f"not every task validated: {out['states']} {out['reasons']}")
    ids = set(out["ids"])
    lines = [ln for ln in net.coord_log(mark) if ln[:4].isdigit()]
    queued = [_stamp(ln) for ln in lines if " task_queued " in ln and ln.rsplit("task_id=", 1)[-1].split()[0] in ids]
    done = [_stamp(ln) for ln in lines if " task_validated " in ln and ln.rsplit("task_id=", 1)[-1].split()[0] in ids]
    if len(done) != tasks:
        raise SystemExit(f"{len(done)} task_validated lines for {tasks} tasks (coordinator log level must be info)")
    seconds = max(done) - min(queued)
    seq = net.submit(latency_tasks, timeout=300, extra=["--sequential"])
    return {"tps": tasks / seconds, "seconds": seconds, "client_s": out["seconds"], **seq["latency_ms"]}


def _network(root: Path, hosts: Hosts, loopback: bool) -> HostNet:
    net = HostNet(hosts, root, workers=3, chain=False, loopback=loopback, task_timeout_s=900,
                  worker_args=["--max-assignments", "8", "--log-level", "warning"])  # fmt: skip
    net.start()
    return net


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hosts", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--latency-tasks", type=int, default=30)
    p.add_argument("--delay-ms", type=float, default=100.0, help="delay added to each frame a worker sends")
    p.add_argument("--jitter-ms", type=float, default=20.0)
    p.add_argument("--loss", type=float, default=0.0, help="fraction of a worker's frames dropped")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"bench.hosts needs network namespaces: {reason}", file=sys.stderr)
        return 2
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-hosts-") as tmp:
        with Hosts(Path(tmp) / "lo") as hosts:
            rows["loopback"] = _measure(_network(Path(tmp) / "lo", hosts, True), args.tasks, args.latency_tasks)
        with Hosts(Path(tmp) / "ns") as hosts:
            net = _network(Path(tmp) / "ns", hosts, False)
            rows["namespaces"] = _measure(net, args.tasks, args.latency_tasks)
            for w in net.workers:
                hosts.impair(w, delay_ms=args.delay_ms, jitter_ms=args.jitter_ms, loss=args.loss)
            netem = f"namespaces+delay {args.delay_ms:g}±{args.jitter_ms:g} ms loss {args.loss:g}"
            rows[netem] = _measure(net, args.tasks, args.latency_tasks)
    base = rows["loopback"]
    print(f"{args.tasks} tasks at once (throughput: first queued to last validated, in the coordinator's log), "
          f"{args.latency_tasks} one at a time (latency: submit to validated, at the creator); 3 instant workers "
          "holding 8 assignments; TLS on every link")  # fmt: skip
    for name, r in rows.items():
        print(f"{name:<44} {r['tps']:8.1f} tasks/s ({r['seconds']:.2f} s; creator saw {r['client_s']:.2f} s)  latency p50 {r['p50']:8.2f} ms "
              f"p99 {r['p99']:8.2f} ms  added p50 {r['p50'] - base['p50']:+8.2f} ms")  # fmt: skip
    print(f"figure=hosts_delay_throughput value={rows[netem]['tps']:.1f} unit=tasks/s baseline=loopback "
          f"ratio={rows[netem]['tps'] / base['tps']:.3f}")  # fmt: skip
    ns = rows["namespaces"]
    print(f"figure=hosts_throughput value={ns['tps']:.1f} unit=tasks/s baseline=loopback ratio={ns['tps'] / base['tps']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
