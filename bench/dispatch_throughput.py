"""Dispatch throughput: validated tasks per second through the coordinator, with 30
simulated instant workers in a separate process and the creator in another (as
applications are), against raw gRPC echo round trips measured in the same run.
The clock runs from the creator's first CreateTask to the last validation.

    python -m bench.dispatch_throughput [--tasks 3000] [--workers 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from bench._coord import coordinator, sim_workers
from bench._creator import creator
from bench._sim import echo_round_trips


async def run(tasks: int, workers: int, concurrency: int) -> tuple[float, float]:
    echo = await echo_round_trips()
    async with coordinator(heartbeat_interval_s=5.0) as app:
        async with sim_workers(app.address, workers):
            done = asyncio.Event()
            validated = 0

            def on_validated(task) -> None:
                nonlocal validated
                validated += 1
                if validated >= tasks:
                    done.set()

            app.dispatcher.on_validated.append(on_validated)
            async with creator(app.address, tasks, concurrency) as go:
                start = time.perf_counter()
                await go()
                await asyncio.wait_for(done.wait(), timeout=600)
                elapsed = time.perf_counter() - start
    return tasks / elapsed, echo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dispatch_throughput")
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--workers", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=64)
    args = p.parse_args(argv)
    rate, echo = asyncio.run(run(args.tasks, args.workers, args.concurrency))
    print(f"validated {rate:.0f} tasks/s with {args.workers} simulated workers; raw gRPC echo {echo:.0f} round trips/s")
    print(f"figure=dispatch_throughput value={rate:.0f} unit=tasks/s baseline=grpc_echo ratio={rate / echo:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
