"""Dispatch throughput: validated tasks per second through the coordinator, with 30
simulated instant workers in a separate process and the creator in another (as
applications are), against raw gRPC echo round trips measured in the same run.
The creator sends CreateTasks calls of 50 tasks (`--batch 1`: one CreateTask each), and each
node asks to hold 8 assignments (`--max-assignments 1`: one at a time, the worker's default):
an instant node would otherwise idle for a round trip between tasks.
The clock runs from the creator's first call to the last validation.

    python -m bench.dispatch_throughput [--tasks 3000] [--workers 30] [--batch 50] [--max-assignments 8]
                                        [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time

from bench._coord import coordinator, sim_workers
from bench._creator import creator
from bench._sim import echo_round_trips


async def run(tasks: int, workers: int, concurrency: int, max_assignments: int, batch: int) -> tuple[float, float]:
    """One round: a fresh coordinator, workers and creator. Returns (validated tasks/s, echo round trips/s)."""
    echo = await echo_round_trips()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"round: {tasks / elapsed:.0f} validated tasks/s, echo {echo:.0f} rt/s; coordinator process CPU "
          f"{1000 * cpu / tasks:.3f} ms/task, workers and creator processes (start-up included) "
          f"{1000 * children / tasks:.3f} ms/task", flush=True)  # fmt: skip
    return tasks / elapsed, echo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dispatch_throughput")
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--workers", type=int, default=30)
    p.add_argument("--concurrency", type=int, default=8, help="calls in flight from the creator")
    p.add_argument("--max-assignments", type=int, default=8,
                   help="assignments each node holds at once (prefetch; the coordinator allows up to 8)")
    p.add_argument("--batch", type=int, default=50, help="tasks per CreateTasks call (1: one CreateTask each)")
    p.add_argument("--rounds", type=int, default=3, help="independent rounds; medians are reported")
    args = p.parse_args(argv)
    results = [asyncio.run(run(args.tasks, args.workers, args.concurrency, args.max_assignments, args.batch))
               for _ in range(args.rounds)]  # fmt: skip
    rate = statistics.median(r for r, _ in results)
    echo = statistics.median(e for _, e in results)
    print(f"validated {rate:.0f} tasks/s (median of {args.rounds}) with {args.workers} simulated workers holding "
          f"{args.max_assignments} assignment(s) each, creator batches of {args.batch}; raw gRPC echo {echo:.0f} "
          f"round trips/s")  # fmt: skip
    print(f"figure=dispatch_throughput value={rate:.0f} unit=tasks/s baseline=grpc_echo ratio={rate / echo:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
