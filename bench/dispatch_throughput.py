"""Dispatch throughput: validated tasks per second through the coordinator, with 30
simulated instant workers in a separate process and the creator in another (as
applications are), against raw gRPC echo round trips measured in the same run.
The clock runs from the creator's first CreateTask to the last validation.

    python -m bench.dispatch_throughput [--tasks 3000] [--workers 30]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time

from bench._coord import coordinator, sim_workers
from bench._creator import creator
from bench._sim import echo_round_trips


async def run(tasks: int, workers: int, concurrency: int, max_assignments: int, batch: int) -> tuple[float, float]:
    echo = await echo_round_trips()
    async with coordinator(heartbeat_interval_s=5.0) as app:
        async with sim_workers(app.address, workers, max_assignments=max_assignments):
            done = asyncio.Event()
            validated = 0

            def on_validated(task) -> None:
                nonlocal validated
                validated += 1
                if validated >= tasks:
                    done.set()

            app.dispatcher.on_validated.append(on_validated)
            async with creator(app.address, tasks, concurrency, batch) as go:
                start, cpu0 = time.perf_counter(), time.process_time()
                await go()
                await asyncio.wait_for(done.wait(), timeout=600)
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"coordinator process CPU {1000 * cpu / tasks:.3f} ms/task; workers and creator processes (whole run) "
          f"{1000 * (children.ru_utime + children.ru_stime) / tasks:.3f} ms/task")
    return tasks / elapsed, echo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dispatch_throughput")
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--workers", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--max-assignments", type=int, default=1, help="assignments each node holds at once")
    p.add_argument("--batch", type=int, default=1, help="tasks per CreateTasks call (1: one CreateTask each)")
    args = p.parse_args(argv)
    rate, echo = asyncio.run(run(args.tasks, args.workers, args.concurrency, args.max_assignments, args.batch))
    print(f"validated {rate:.0f} tasks/s with {args.workers} simulated workers; raw gRPC echo {echo:.0f} round trips/s")
    print(f"figure=dispatch_throughput value={rate:.0f} unit=tasks/s baseline=grpc_echo ratio={rate / echo:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
