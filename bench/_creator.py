"""Bench support: a creator in its own process, as applications are in production.

    python -m bench._creator --coordinator HOST:PORT --tasks N [--concurrency 64] [--batch 1]

signs N GPT tasks up front, prints `ready`, waits for a line on stdin, then sends
them all (at most `concurrency` calls in flight) and prints `sent N seconds=S`:
one CreateTask each, or with `--batch B > 1` CreateTasks calls of B tasks. Keeping the creator out of the coordinator's process means
the coordinator's core serves only the coordinator, and the figure measures it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

import grpc
from eth_account import Account

from helium.client import TaskClient
from helium.log import configure_logging
from tests.support.network import gpt_args


async def run(address: str, tasks: int, concurrency: int, batch: int) -> int:
    async with grpc.aio.insecure_channel(address) as ch:
        client = TaskClient(ch, Account.create())
        reqs = [await client.build(gpt_args(f"task {i}"), fee=1000 + i) for i in range(tasks)]
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        sem = asyncio.Semaphore(concurrency)

        async def send(req) -> None:
            async with sem:
                await client.stub.CreateTask(req, timeout=60)

        async def send_many(part) -> None:
            async with sem:
                refused = [o for o in await client.create_many(part) if o.code != 0]
                if refused:
                    raise RuntimeError(f"{len(refused)} tasks refused: {refused[0].message}")

        start = time.perf_counter()
        if batch > 1:
            await asyncio.gather(*(send_many(reqs[i:i + batch]) for i in range(0, len(reqs), batch)))
        else:
            await asyncio.gather(*(send(r) for r in reqs))
        print(f"sent {tasks} seconds={time.perf_counter() - start:.3f}", flush=True)
    return 0


@contextlib.asynccontextmanager
async def creator(address: str, tasks: int, concurrency: int = 64, batch: int = 1, timeout: float = 300.0):
    """Starts the creator process; yields an async `go()` that starts the sending."""
    from bench._coord import ready_child

    async with ready_child("bench._creator", "--coordinator", address, "--tasks", str(tasks), "--concurrency",
                           str(concurrency), "--batch", str(batch), what="creator", timeout=timeout,
                           stdin=True) as proc:  # fmt: skip

        async def go() -> None:
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()

        yield go


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    configure_logging(False, "error")
    a = p.parse_args()
    return asyncio.run(run(a.coordinator, a.tasks, a.concurrency, a.batch))


if __name__ == "__main__":
    sys.exit(main())
