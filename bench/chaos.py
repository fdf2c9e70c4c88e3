"""Chaos run: tasks through a real network while its parts are `kill -9`ed and restarted.

A chain node (`python -m chain serve`, the persistent embedded EVM), a coordinator reaching it over
JSON-RPC, and three near-instant workers (tests/support/worker_proc.py, WORK seconds a task, so that a kill
finds work in flight), each a real process. One creator sends TASKS GPT tasks over about KILLS x INTERVAL
seconds, resending each signed request until it gets an answer (an OK means accepted). Every
INTERVAL seconds a random part (the coordinator, a worker, or the chain) is killed with SIGKILL and started
again on the same data directory and port; a part that exits on its own (a worker whose reconnects ran
out) is started again too. Then every accepted task must reach a final state (SETTLED, ABORTED or
CANCELLED), and the chain must show each task settled at most once and each (task, node) paid at most once,
with every node's credit the sum of its payments.

QoS exclusion and kick-out are off for the run (HELIUM_H_EXCLUDE_BELOW=0, HELIUM_KICK_MEAN_BELOW=0): a worker
killed twice would otherwise be excluded for many minutes, and this run measures crash safety, not QoS.

    python -m bench.chaos [--tasks 300] [--kills 10] [--interval 3] [--work 0.1]

The figure counts the accepted tasks that ended in a final state, against the accepted tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from chain.devchain import DevChain
from chain.signing import load_or_create_key
from helium.client import TaskClient
from helium.log import configure_logging
from helium.v1 import task_pb2
from tests.support.network import gpt_args
from tests.support.procs import Proc, spawn

__all__ = ["ChaosResult", "run_chaos"]

_FINAL = (task_pb2.TASK_STATE_SETTLED, task_pb2.TASK_STATE_ABORTED, task_pb2.TASK_STATE_CANCELLED)
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
              grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED}  # fmt: skip
_WORKERS = 3


@dataclass
class ChaosResult:
    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    states: dict[str, int] = field(default_factory=dict)  # task id -> final TaskState (or the last seen)
    kills: list[str] = field(default_factory=list)
    restarts_on_exit: int = 0
    settled_twice: list[str] = field(default_factory=list)
    paid_twice: list[tuple[str, str]] = field(default_factory=list)
    settled_unknown: list[str] = field(default_factory=list)  # settled on chain, never accepted
    credit_mismatch: dict[str, tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def final(self) -> int:
        return sum(1 for s in self.states.values() if s in _FINAL)

    def problems(self) -> list[str]:
        out = []
        if self.final != len(self.accepted):
            missing = Counter(task_pb2.TaskState.Name(s) for s in self.states.values() if s not in _FINAL)
            out.append(f"{len(self.accepted) - self.final} accepted tasks not final: {dict(missing)}")
        for name in ("settled_twice", "paid_twice", "settled_unknown", "credit_mismatch"):
            if getattr(self, name):
                out.append(f"{name}: {getattr(self, name)}")
        settled = [t for t, s in self.states.items() if s == task_pb2.TASK_STATE_SETTLED]
        if len(settled) != self.on_chain_settled:
            out.append(f"{len(settled)} tasks SETTLED, {self.on_chain_settled} settled on chain")
        return out

    on_chain_settled: int = 0


class _Net:
    """The parts, each a process started by name: 'chain', 'coordinator', 'w0'..'w2'."""

    def __init__(self, root: Path, work_s: float) -> None:
        self.root = root
        self.work_s = work_s
        self.procs: dict[str, Proc] = {}
        self.busy: set[str] = set()  # parts being killed or started: the supervisor leaves them alone
        self.chain_port = 0
        self.coord_port = 0
        self.coord_address = ""

    def start(self, name: str, ready: bool = False) -> Proc:
        """Starts a part; the chain and the coordinator are waited for, a worker only when `ready`."""
        r = self.root
        if name == "chain":
            p = spawn(["-m", "chain", "serve", "--data-dir", str(r / "chain"), "--port", str(self.chain_port),
                       "--lock-wait", "30", "--log-level", "warning"], name)  # fmt: skip
            url = p.wait_for("ready", 90).split("rpc=")[1].split()[0]
            self.chain_port = int(url.rsplit(":", 1)[1].rstrip("/"))
        elif name == "coordinator":
            env = {"HELIUM_CHAIN_ADDRESSES": str(r / "chain-addresses.json"), "HELIUM_BATCH_MAX_TASKS": "20",
                   "HELIUM_BATCH_INTERVAL": "0.5", "HELIUM_H_EXCLUDE_BELOW": "0", "HELIUM_KICK_MEAN_BELOW": "0"}
            p = spawn(["-m", "coordinator", "--data-dir", str(r / "coord"), "--port", str(self.coord_port),
                       "--http-port", "-1", "--chain", f"http://127.0.0.1:{self.chain_port}",
                       "--heartbeat-interval-s", "0.3", "--task-timeout-s", "600", "--log-level", "warning"],
                      name, env=env)  # fmt: skip
            self.coord_address = p.wait_for("ready", 90).split("grpc=")[1].split()[0]
            self.coord_port = int(self.coord_address.rsplit(":", 1)[1])
        else:
            p = spawn(["-m", "tests.support.worker_proc", "--coordinator", self.coord_address, "--data-dir",
                       str(r / name), "--delay", str(self.work_s)], name)  # fmt: skip
            if ready:
                self.procs[name] = p
                p.wait_for("ready", 60)
        self.procs[name] = p
        return p

    def kill(self, name: str) -> None:
        self.procs[name].kill9()

    def stop_all(self) -> None:
        for p in self.procs.values():
            p.kill9()


async def _prepare(root: Path) -> tuple:
    """A new chain (deployed, the creator's deposit), the three workers staked, the coordinator's key and
    contract addresses where a coordinator on a JSON-RPC chain reads them."""
    keys = [load_or_create_key(root / f"w{i}" / "keys" / "node-0.key") for i in range(_WORKERS)]
    async with await DevChain.open(root / "chain") as chain:
        for k in keys:
            await chain.fund_and_stake(k)
        (root / "chain-addresses.json").write_text(json.dumps(chain.addresses.as_dict()))
        (root / "coord").mkdir(parents=True, exist_ok=True)
        (root / "coord" / "coordinator.key").write_text(bytes(chain.keys.coordinator.key).hex())
        return chain.keys.creator, [k.address for k in keys]


async def _send(address: str, creator, n: int, spread_s: float, result: ChaosResult) -> None:
    """Sends n tasks over about spread_s seconds; each signed request is resent until it is answered."""
    async with grpc.aio.insecure_channel(address) as ch:
        client = TaskClient(ch, creator, rpc_timeout=5)
        base = int(time.time() * 1000) << 8
        t0 = time.monotonic()
        for i in range(n):
            req = await client.build(gpt_args(f"chaos {i}"), fee=1_000_000 + i, nonce=base + i)
            while True:
                try:
                    resp = await client.stub.CreateTask(req, timeout=5)
                    result.accepted.append(resp.task_id)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() not in _RETRYABLE:
                        result.refused += 1
                        break
                    await asyncio.sleep(0.2)
            await asyncio.sleep(max(0.0, t0 + spread_s * (i + 1) / n - time.monotonic()))


async def _chaos(net: _Net, victims: list[str], interval_s: float, rng: random.Random, result: ChaosResult,
                 sending: asyncio.Task) -> None:  # fmt: skip
    for victim in victims:
        await asyncio.sleep(interval_s * rng.uniform(0.6, 1.4))
        # 'network': every part at once (a power cut), restarted chain first, as an operator would.
        names = list(net.procs) if victim == "network" else [victim]
        net.busy.update(names)
        try:
            for name in names:
                net.kill(name)
            result.kills.append(victim)
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            for name in sorted(names, key=_start_order):
                await _start(net, name)
        finally:
            net.busy.difference_update(names)
    await sending


def _start_order(name: str) -> int:
    return {"chain": 0, "coordinator": 1}.get(name, 2)


async def _start(net: _Net, name: str, tries: int = 3, ready: bool = False) -> None:
    for attempt in range(tries):
        try:
            await asyncio.to_thread(net.start, name, ready)
            return
        except (RuntimeError, TimeoutError) as exc:  # it died starting (its peer was down): again
            if name in net.procs:
                net.procs[name].kill9()
            if attempt == tries - 1:
                coord = net.procs.get("coordinator")
                raise RuntimeError(f"{name} did not start: {exc}\ncoordinator:\n{coord.tail() if coord else ''}") from exc
            await asyncio.sleep(1.0)


async def _supervise(net: _Net, result: ChaosResult, stop: asyncio.Event) -> None:
    """A part that exited on its own (a worker whose reconnects ran out) is started again. The network
    is stopped by killing every part, so nothing is running this then."""
    while not stop.is_set():
        for name, p in list(net.procs.items()):
            if p.popen.poll() is not None and name not in net.busy:
                result.restarts_on_exit += 1
                net.busy.add(name)
                try:
                    await _start(net, name)
                finally:
                    net.busy.discard(name)
        await asyncio.sleep(0.5)


async def _await_final(address: str, creator, result: ChaosResult, timeout_s: float) -> None:
    async with grpc.aio.insecure_channel(address) as ch:
        client = TaskClient(ch, creator, rpc_timeout=5)
        deadline = time.monotonic() + timeout_s
        pending = list(result.accepted)
        while pending and time.monotonic() < deadline:
            still = []
            for task_id in pending:
                try:
                    state = (await client.get(task_id)).state
                except grpc.aio.AioRpcError:
                    state = result.states.get(task_id, task_pb2.TASK_STATE_UNSPECIFIED)
                result.states[task_id] = state
                if state not in _FINAL:
                    still.append(task_id)
            pending = still
            if pending:
                await asyncio.sleep(1.0)


async def _check_chain(root: Path, workers: list[str], result: ChaosResult) -> None:
    async with await DevChain.open(root / "chain") as chain:
        c = chain.client()
        events = await c.events()
        settled = Counter("0x" + e.args["taskId"].hex() for e in events if e.name == "TaskSettled")
        paid = Counter(("0x" + e.args["taskId"].hex(), e.args["node"]) for e in events if e.name == "Paid")
        result.on_chain_settled = len(settled)
        result.settled_twice = sorted(t for t, n in settled.items() if n > 1)
        result.paid_twice = sorted(k for k, n in paid.items() if n > 1)
        result.settled_unknown = sorted(set(settled) - set(result.accepted))
        for node in workers:
            owed = sum(e.args["amount"] for e in events if e.name == "Paid" and e.args["node"] == node)
            credit = await c.credit_of(node)
            if credit != owed:
                result.credit_mismatch[node] = (credit, owed)


async def run_chaos(root: Path, *, tasks: int = 300, kills: int = 10, interval_s: float = 3.0, seed: int = 1,
                    final_timeout_s: float = 240.0, victims: list[str] | None = None,
                    work_s: float = 0.1) -> ChaosResult:  # fmt: skip
    """`victims`: the parts to kill, in order ('coordinator', 'chain', 'w0'..'w2', or 'network' for all of
    them at once); default `kills` random single parts (workers are three of the five)."""
    result = ChaosResult()
    rng = random.Random(seed)
    parts = ["coordinator", "chain", *(f"w{i}" for i in range(_WORKERS))]
    victims = list(victims) if victims is not None else [rng.choice(parts) for _ in range(kills)]
    t0 = time.monotonic()
    creator, workers = await _prepare(root)
    net = _Net(root, work_s)
    stop = asyncio.Event()
    try:
        await _start(net, "chain")
        await _start(net, "coordinator")
        for i in range(_WORKERS):
            await _start(net, f"w{i}", ready=True)
        supervisor = asyncio.create_task(_supervise(net, result, stop))
        sending = asyncio.create_task(_send(net.coord_address, creator, tasks, len(victims) * interval_s, result))
        await _chaos(net, victims, interval_s, rng, result, sending)
        await _await_final(net.coord_address, creator, result, final_timeout_s)
        stop.set()
        await supervisor
    finally:
        stop.set()
        net.stop_all()
    await _check_chain(root, workers, result)
    result.seconds = time.monotonic() - t0
    return result


def report(result: ChaosResult) -> None:
    kinds = Counter("worker" if k[0] == "w" and k[1:].isdigit() else k for k in result.kills)
    states = Counter(task_pb2.TaskState.Name(s).removeprefix("TASK_STATE_").lower() for s in result.states.values())
    print(f"chaos: {len(result.accepted)} tasks accepted ({result.refused} refused), final {result.final}: "
          f"{dict(states)}; kills {len(result.kills)} {dict(kinds)}, {result.restarts_on_exit} exited workers "
          f"restarted; settled on chain {result.on_chain_settled}, settled twice {len(result.settled_twice)}, "
          f"(task, node) paid twice {len(result.paid_twice)}, credit mismatches {len(result.credit_mismatch)}; "
          f"{result.seconds:.0f} s")  # fmt: skip
    for problem in result.problems():
        print(f"problem: {problem}")
    accepted = len(result.accepted)
    ratio = result.final / accepted if accepted else 0.0
    print(f"figure=chaos_tasks_final value={result.final} unit=tasks baseline=accepted ratio={ratio:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.chaos")
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--interval", type=float, default=3.0, help="mean seconds between kills")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=float, default=0.1, help="seconds each worker takes per task")
    args = p.parse_args()
    configure_logging(False, "warning")
    with tempfile.TemporaryDirectory(prefix="helium-chaos-") as d:
        result = asyncio.run(run_chaos(Path(d), tasks=args.tasks, kills=args.kills, interval_s=args.interval,
                                       seed=args.seed, work_s=args.work))  # fmt: skip
    report(result)


if __name__ == "__main__":
    main()
