"""Settled throughput: validated-and-settled tasks per second with settlement to the embedded chain,
against the same network without settlement (chain "none": tasks end VALIDATED), in the same run.

Each side: a coordinator in this process on a real port, 12 worker nodes on real gRPC streams (instant
test-double executors), one creator submitting TASKS GPT tasks with 8 in flight. The chain side stakes the
nodes, checks the creator's deposit and settles in batches (50 tasks or 1 s) on the embedded EVM, which runs
as the coordinator runs it by default: revm in its own process (`python -m chain serve`, JSON-RPC over HTTP
on loopback, `DevChain.spawn`); `--evm pyevm` runs the py-evm backend instead. A task counts when it is
SETTLED. The baseline counts VALIDATED.

    python -m bench.settled_throughput [--tasks N] [--evm revm|pyevm]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from chain.devchain import DEFAULT_EVM, EVMS
from coordinator.domain.models import TaskState
from coordinator.service.settlement import SettlementSettings
from helium.log import configure_logging
from tests.integration.protocol.chainnet import ChainNet
from tests.integration.protocol.simnet import new_creator, submit_all
from tests.support.network import TestNetwork, gpt_args
from worker.testing import InstantExecutor

NODES = 12


async def _drive(net, client, n: int, final: TaskState) -> float:
    items = [(gpt_args(f"bench task {i}"), 2500 + i) for i in range(n)]
    t0 = time.monotonic()
    ids = await submit_all(client, items, concurrency=8)
    store = net.app.store
    left = set(ids)  # only tasks not yet final are read again: the polling stays light on the coordinator
    while True:
        states = {i: store.get_task(i).state for i in left}
        bad = [s for s in states.values() if s in (TaskState.ABORTED, TaskState.CANCELLED)]
        if bad:
            raise RuntimeError(f"{len(bad)} tasks ended {bad[0].value}")
        left = {i for i, s in states.items() if s != final}
        if not left:
            return n / (time.monotonic() - t0)
        await asyncio.sleep(0.05)


async def without_settlement(root: Path, n: int) -> float:
    async with TestNetwork(root, heartbeat_s=0.5) as net:
        await net.add_nodes(NODES, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        return await _drive(net, net.client(), n, TaskState.VALIDATED)


async def with_settlement(root: Path, n: int, evm: str = DEFAULT_EVM) -> float:
    settle = SettlementSettings(batch_max_tasks=50, batch_interval=timedelta(seconds=1))
    async with ChainNet(root, settlement=settle, process=True, evm=evm) as net:
        await net.add_nodes(NODES, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        creator = await new_creator(net, 10**20)
        return await _drive(net, net.client(creator), n, TaskState.SETTLED)


async def run(n: int, evm: str = DEFAULT_EVM) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = await without_settlement(Path(tmp) / "none", n)
        print(f"no settlement (chain none): {base:.2f} validated tasks/s", flush=True)
        settled = await with_settlement(Path(tmp) / "embedded", n, evm)
        print(f"settlement on the embedded chain ({evm}): {settled:.2f} settled tasks/s", flush=True)
    print(f"figure=settled_throughput value={settled:.3f} unit=tasks/s baseline=no_settlement "
          f"ratio={settled / base:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.settled_throughput")
    p.add_argument("--tasks", type=int, default=300)
    p.add_argument("--evm", default=DEFAULT_EVM, choices=EVMS)
    args = p.parse_args()
    configure_logging(False, "error")
    asyncio.run(run(args.tasks, args.evm))


if __name__ == "__main__":
    main()
