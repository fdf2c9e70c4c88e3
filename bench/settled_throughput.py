"""Settled throughput: validated-and-settled tasks per second with settlement to the embedded chain,
against the same network without settlement (chain "none": tasks end VALIDATED), in the same run.

Each side: a coordinator in this process on a real port, 12 worker nodes on real gRPC streams (instant
test-double executors), one creator submitting TASKS GPT tasks with 8 in flight. The chain side stakes the
nodes, checks the creator's deposit and settles in batches (50 tasks or 1 s) on the embedded EVM, which runs
as the coordinator runs it by default: revm in its own process (`python -m chain serve`, JSON-RPC over HTTP
on loopback, `DevChain.spawn`); `--evm pyevm` runs the py-evm backend instead. A task counts when it is
SETTLED. The baseline counts VALIDATED.

    python -m bench.settled_throughput [--tasks N] [--rounds R] [--evm revm|pyevm]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from chain.devchain import DEFAULT_EVM, EVMS
from coordinator.domain.models import Task, TaskState
from coordinator.service.settlement import SettlementSettings
from helium.log import configure_logging
from tests.integration.protocol.chainnet import ChainNet
from tests.integration.protocol.simnet import new_creator, submit_all
from tests.support.network import TestNetwork, gpt_args
from worker.testing import InstantExecutor

NODES = 12


@dataclass(frozen=True)
class Rate:
    """Tasks/s from the first submission to the last task reaching its final state (end to end), and in
    steady state: between the 10th and the 90th percentile of those arrivals, which leaves out the
    start-up and the drain (for settlement, the last partial batch waiting for its interval)."""

    end_to_end: float
    steady: float


async def _drive(net, client, n: int, final: TaskState) -> Rate:
    """Submits n tasks and waits until all reached `final`, seen through the coordinator's task events
    in this process (no polling that would load one side more than the other)."""
    items = [(gpt_args(f"bench task {i}"), 2500 + i) for i in range(n)]
    reached: dict[str, float] = {}
    failed: list[Task] = []
    done = asyncio.Event()

    def observe(task: Task) -> None:
        if task.state == final and task.task_id not in reached:
            reached[task.task_id] = time.monotonic()
        elif task.state in (TaskState.ABORTED, TaskState.CANCELLED):
            failed.append(task)
        if len(reached) >= n or failed:
            done.set()

    net.app.dispatcher.events.observers.append(observe)
    t0 = time.monotonic()
    ids = await submit_all(client, items, concurrency=8)
    await asyncio.wait_for(done.wait(), timeout=600)
    elapsed = time.monotonic() - t0
    if failed:
        raise RuntimeError(f"{len(failed)} tasks ended {failed[0].state.value}")
    if not set(reached).issuperset(ids):
        raise RuntimeError(f"{len(set(ids) - set(reached))} submitted tasks never reached {final.value}")
    times = sorted(reached.values())
    lo, hi = n // 10, n - 1 - n // 10
    return Rate(n / elapsed, (hi - lo) / max(1e-9, times[hi] - times[lo]))


async def without_settlement(root: Path, n: int) -> Rate:
    async with TestNetwork(root, heartbeat_s=0.5) as net:
        await net.add_nodes(NODES, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        return await _drive(net, net.client(), n, TaskState.VALIDATED)


async def with_settlement(root: Path, n: int, evm: str = DEFAULT_EVM) -> Rate:
    settle = SettlementSettings(batch_max_tasks=50, batch_interval=timedelta(seconds=1))
    async with ChainNet(root, settlement=settle, process=True, evm=evm) as net:
        await net.add_nodes(NODES, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        creator = await new_creator(net, 10**20)
        return await _drive(net, net.client(creator), n, TaskState.SETTLED)


async def run(n: int, evm: str = DEFAULT_EVM, rounds: int = 5) -> None:
    """`rounds` alternating pairs (baseline, then settled), each on a fresh network; the figure is the
    ratio of the medians of the steady-state rates, so one noisy moment on a shared machine moves it little.
    The end-to-end ratio (including the last batch's wait) is printed beside it."""
    base: list[Rate] = []
    settled: list[Rate] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            base.append(await without_settlement(Path(tmp) / f"none-{r}", n))
            settled.append(await with_settlement(Path(tmp) / f"embedded-{r}", n, evm))
            b, s = base[-1], settled[-1]
            print(f"round {r + 1}: no settlement (chain none) {b.steady:.1f} validated tasks/s steady "
                  f"({b.end_to_end:.1f} end to end); settlement on the embedded chain ({evm}) {s.steady:.1f} settled "
                  f"tasks/s steady ({s.end_to_end:.1f} end to end); ratio {s.steady / b.steady:.3f}", flush=True)  # fmt: skip
    med = statistics.median
    b, s = med(x.steady for x in base), med(x.steady for x in settled)
    b_e2e, s_e2e = med(x.end_to_end for x in base), med(x.end_to_end for x in settled)
    print(f"medians over {rounds} rounds of {n} tasks: steady {b:.1f} validated/s without settlement, {s:.1f} "
          f"settled/s; end to end {b_e2e:.1f} and {s_e2e:.1f} (ratio {s_e2e / b_e2e:.3f})")
    print(f"figure=settled_throughput value={s:.3f} unit=tasks/s baseline=no_settlement ratio={s / b:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.settled_throughput")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5, help="alternating baseline/settled pairs (medians compared)")
    p.add_argument("--evm", default=DEFAULT_EVM, choices=EVMS)
    args = p.parse_args()
    configure_logging(False, "error")
    asyncio.run(run(args.tasks, args.evm, args.rounds))


if __name__ == "__main__":
    main()
