"""Idle workers: coordinator memory with 10,000 connected, heartbeating nodes, and what they do to
dispatch latency.

The coordinator runs in its own process (`python -m coordinator --chain none`), so its RSS is
its own. 30 simulated instant workers (`bench._sim`, one child process) do the work; the idle
nodes (`bench._idle`, two child processes) hold real Connect streams after the real handshake
(signed Register) and heartbeat at the idle interval the coordinator names (30 s by default;
`--idle-heartbeat-s 5` makes them beat as often as busy nodes), but advertise SD
only on another card, so the GPT tasks of the bench never go to them. Dispatch latency is
submit -> VALIDATED as the creator sees it (CreateTask, then WatchTask), one task at a time,
first with the 30 workers alone, then with the idle nodes connected too, in the same run.

    python -m bench.idle_workers [--idle 10000] [--tasks 1000] [--fleets 2] [--profile FILE]

The fleets stop starting handshakes after --join-deadline (150 s, to keep the run near 5 minutes);
when fewer nodes joined by then, the figures are for those and a NOTE line says so. On a busy
2-core host 10,000 take about 5 minutes to join: `--join-deadline 360 --phase-budget 60`.
`--profile FILE` runs the coordinator under cProfile and prints where its time went (the
figures are then slower than without it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from eth_account import Account

from bench._coord import sim_workers
from bench.added_latency import percentile
from helium.client import TaskClient
from helium.v1 import admin_pb2, admin_pb2_grpc, task_pb2
from tests.support.network import gpt_args

MIB = 1 << 20


def child_env() -> dict[str, str]:
    """This environment without HELIUM_* settings, so the coordinator runs as the flags say."""
    return {k: v for k, v in os.environ.items() if not k.startswith("HELIUM_")}


@contextlib.asynccontextmanager
async def coordinator_process(data_dir: Path, profile: str | None, idle_heartbeat_s: float | None = None):
    """`python -m coordinator --chain none` on a free port; yields (process, grpc address)."""
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-o", profile]
    cmd += ["-m", "coordinator", "--chain", "none", "--port", "0", "--http-port", "-1",
            "--data-dir", str(data_dir), "--log-level", "error"]  # fmt: skip
    if idle_heartbeat_s is not None:
        cmd += ["--idle-heartbeat-interval-s", str(idle_heartbeat_s)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env=child_env())
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line.startswith("ready grpc="):
            raise RuntimeError(f"coordinator did not start: {line!r}")
        yield proc, line.split()[1].removeprefix("grpc=")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT if profile else signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class IdleFleet:
    """One `bench._idle` child; `stats` keeps its latest counters."""

    def __init__(self, address: str, nodes: int, deadline: float, concurrency: int) -> None:
        self.address, self.nodes, self.deadline, self.concurrency = address, nodes, deadline, concurrency
        self.proc: asyncio.subprocess.Process | None = None
        self.ready: dict[str, float] = {}
        self.stats: dict[str, int] = {}
        self._reader: asyncio.Task | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench._idle", "--coordinator", self.address, "--nodes", str(self.nodes),
            "--deadline", str(self.deadline), "--concurrency", str(self.concurrency),
            stdout=asyncio.subprocess.PIPE, env=child_env())  # fmt: skip

    async def wait_ready(self, timeout: float) -> dict[str, float]:
        assert self.proc is not None and self.proc.stdout is not None
        end = time.monotonic() + timeout
        while True:
            line = (
                await asyncio.wait_for(self.proc.stdout.readline(), max(1.0, end - time.monotonic()))
            ).decode()
            if not line:
                raise RuntimeError(f"idle fleet exited before it was ready (rc {await self.proc.wait()})")
            if line.startswith("ready "):
                self.ready = _fields(line)
                self._reader = asyncio.create_task(self._read())
                return self.ready

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := (await self.proc.stdout.readline()).decode():
            if line.startswith("stats "):
                self.stats = {k: int(v) for k, v in _fields(line).items()}

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def _fields(line: str) -> dict[str, float]:
    return {k: float(v) for k, v in (f.split("=", 1) for f in line.split()[1:] if "=" in f)}


async def latencies(client: TaskClient, reqs: list, warmup: int, budget_s: float) -> list[float]:
    """Submit -> VALIDATED (ms) for each request, one at a time; stops early after `budget_s`."""
    out = []
    end = time.monotonic() + budget_s
    for i, req in enumerate(reqs):
        t0 = time.perf_counter()
        resp = await client.stub.CreateTask(req, timeout=30)
        task = await client.wait(resp.task_id, timeout=30)
        if task.state != task_pb2.TASK_STATE_VALIDATED:
            raise RuntimeError(
                f"task {resp.task_id} ended {task_pb2.TaskState.Name(task.state)}: {task.reason}"
            )
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
            if time.monotonic() > end and len(out) >= 20:
                break
    return out


async def idle_counts(address: str, token: str) -> dict[str, int]:
    """The coordinator's own view: connected nodes by state and by card (AdminService.GetStats)."""
    async with grpc.aio.insecure_channel(address) as ch:
        stats = await admin_pb2_grpc.AdminServiceStub(ch).GetStats(
            admin_pb2.GetStatsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=60)  # fmt: skip
    return {**{f"state:{c.key}": c.value for c in stats.nodes_by_state},
            **{f"card:{c.key}": c.value for c in stats.nodes_by_card}}  # fmt: skip


async def cpu_share(proc: psutil.Process, seconds: float) -> float:
    """The process's CPU use over `seconds`, as a fraction of one core."""
    t = proc.cpu_times()
    start = time.monotonic()
    await asyncio.sleep(seconds)
    t2 = proc.cpu_times()
    return (t2.user + t2.system - t.user - t.system) / (time.monotonic() - start)


async def run(args) -> dict:
    r: dict = {}
    with tempfile.TemporaryDirectory(prefix="helium-bench-idle-") as tmp:
        async with coordinator_process(Path(tmp) / "coordinator", args.profile, args.idle_heartbeat_s) as (proc, address):
            ps = psutil.Process(proc.pid)
            r["rss_empty"] = ps.memory_info().rss / MIB
            token = (Path(tmp) / "coordinator" / "admin.token").read_text().strip()
            async with sim_workers(address, args.workers), grpc.aio.insecure_channel(address) as ch:
                client = TaskClient(ch, Account.create())
                n = args.warmup + args.tasks
                reqs = [await client.build(gpt_args(f"idle bench {i}"), fee=1000 + i) for i in range(2 * n)]
                r["lat_30"] = await latencies(client, reqs[:n], args.warmup, args.phase_budget)
                r["rss_30"] = ps.memory_info().rss / MIB
                r["cpu_30"] = await cpu_share(ps, 5)

                per = -(-args.idle // args.fleets)
                fleets = [IdleFleet(address, min(per, args.idle - i * per), args.join_deadline, args.concurrency)
                          for i in range(args.fleets)]  # fmt: skip
                t0 = time.monotonic()
                try:
                    for f in fleets:
                        await f.start()
                    readies = [await f.wait_ready(args.join_deadline + 120) for f in fleets]
                    r["join_s"] = time.monotonic() - t0
                    r["idle"] = int(sum(x["nodes"] for x in readies))
                    r["idle_failed"] = int(sum(x["failed"] for x in readies))
                    # Let every idle node heartbeat at least once (5 s interval) before measuring.
                    r["cpu_idle"] = await cpu_share(ps, 6)
                    r["rss_idle"] = ps.memory_info().rss / MIB
                    r["view"] = await idle_counts(address, token)
                    hb0, t_hb0 = sum(f.stats.get("heartbeats", 0) for f in fleets), time.monotonic()
                    cpu0 = ps.cpu_times()
                    r["lat_idle"] = await latencies(client, reqs[n:], args.warmup, args.phase_budget)
                    cpu1 = ps.cpu_times()
                    r["cpu_busy"] = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (
                        time.monotonic() - t_hb0
                    )
                    r["load"] = os.getloadavg()[0]
                    r["rss_after"] = ps.memory_info().rss / MIB
                    r["heartbeats"] = sum(f.stats.get("heartbeats", 0) for f in fleets)
                    r["hb_rate"] = (r["heartbeats"] - hb0) / (time.monotonic() - t_hb0)
                    r["lost"] = sum(f.stats.get("lost", 0) for f in fleets)
                finally:
                    for f in fleets:
                        await f.stop()
    return r


def print_profile(path: str, top: int = 25) -> None:
    print(f"--- coordinator profile ({path}), top {top} by own time ---")
    st = pstats.Stats(path)
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.idle_workers", description=__doc__.splitlines()[0])
    p.add_argument("--idle", type=int, default=10_000, help="idle nodes to connect")
    p.add_argument("--fleets", type=int, default=2, help="child processes holding the idle nodes")
    p.add_argument("--workers", type=int, default=30, help="simulated instant workers doing the tasks")
    p.add_argument("--tasks", type=int, default=1000,
                   help="sequential tasks per phase (the p99 of a few hundred is one or two samples: noisy)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument(
        "--phase-budget", type=float, default=75.0, help="seconds per latency phase (at least 20 tasks)"
    )
    p.add_argument("--join-deadline", type=float, default=150.0, help="seconds the fleets may spend joining")
    p.add_argument("--concurrency", type=int, default=150, help="handshakes in flight per fleet process")
    p.add_argument("--idle-heartbeat-s", type=float, help="the coordinator's idle heartbeat interval (default: its "
                   "own, 30 s; 5 makes idle nodes beat as often as busy ones)")
    p.add_argument("--profile", metavar="FILE", help="run the coordinator under cProfile, write FILE")
    args = p.parse_args(argv)
    r = asyncio.run(run(args))
    p30, pidle = percentile(r["lat_30"], 0.99), percentile(r["lat_idle"], 0.99)
    idle = r["idle"]
    if idle < args.idle:
        print(f"NOTE: only {idle} of {args.idle} idle nodes joined within {args.join_deadline:.0f} s "
              f"({r['idle_failed']} failed); the figures are for {idle}")  # fmt: skip
    print(f"idle nodes connected {idle} (failed {r['idle_failed']}) in {r['join_s']:.1f} s "
          f"({idle / r['join_s']:.0f} registrations/s) over {args.fleets} processes")  # fmt: skip
    every = args.idle_heartbeat_s or 30.0  # the coordinator's default idle interval
    view = r["view"]
    print(f"coordinator view: available={view.get('state:available', 0)} "
          f"idle-card={sum(v for k, v in view.items() if k.startswith('card:idle-card'))}")  # fmt: skip
    print(f"heartbeats sent by the idle nodes: {r['heartbeats']} in all, {r['hb_rate']:.0f}/s during the "
          f"task phase (fleet counters every 5 s; expected {idle / every:.0f}/s at {every:g} s), "
          f"streams lost: {r['lost']}")  # fmt: skip
    print(f"coordinator RSS: empty {r['rss_empty']:.0f} MiB, with {args.workers} workers {r['rss_30']:.0f} MiB, "
          f"with {idle} idle {r['rss_idle']:.0f} MiB ({(r['rss_idle'] - r['rss_30']) * 1024 / max(1, idle):.1f} KiB "
          f"a node), after the tasks {r['rss_after']:.0f} MiB")  # fmt: skip
    print(f"coordinator CPU while idle: {r['cpu_30'] * 100:.0f}% of a core with {args.workers} workers, "
          f"{r['cpu_idle'] * 100:.0f}% with {idle} idle heartbeating, {r['cpu_busy'] * 100:.0f}% during the tasks "
          f"with them (host load average {r['load']:.1f} on {os.cpu_count()} cores)")  # fmt: skip
    for name, lat in (("30 workers", r["lat_30"]), (f"+{idle} idle", r["lat_idle"])):
        print(f"dispatch submit->validated [{name:>12}] n={len(lat):4d} p50 {percentile(lat, 0.5):8.1f} ms  "
              f"p99 {percentile(lat, 0.99):8.1f} ms")  # fmt: skip
    print(f"slowest with idle nodes (ms): {[round(x) for x in sorted(r['lat_idle'])[-5:]]}")
    print(f"dispatch_p99_30={p30:.1f} ms dispatch_p99_idle={pidle:.1f} ms (target: within 2x); "
          f"RSS target <= 1536 MiB")  # fmt: skip
    if args.profile:
        print_profile(args.profile)
    rss = max(r["rss_idle"], r["rss_after"])
    print(
        f"figure=idle_workers_rss value={rss:.0f} unit=MiB baseline=dispatch_p99_ratio ratio={pidle / p30:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
