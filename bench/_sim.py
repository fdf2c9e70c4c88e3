"""Bench support: simulated workers in their own process, and a gRPC echo baseline.

    python -m bench._sim --coordinator HOST:PORT --nodes 30 [--delay S] [--card NAME]

runs N real worker nodes (real streams, keys, signatures) with the instant
test-double executor, and prints `ready nodes=N` once all are registered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from datetime import timedelta
from pathlib import Path

import grpc
from eth_account import Account

from helium.log import configure_logging

ECHO = "/bench.Echo/Stream"


async def run_nodes(args) -> int:
    from worker.config import WorkerConfig
    from worker.session import NodeProfile, WorkerNode
    from worker.testing import InstantExecutor

    channel = grpc.aio.insecure_channel(args.coordinator)
    # durable_results off: the simulated nodes stand in for 30 machines, each with a disk of its own; one
    # process fsyncing all their results would measure this host's disk, not the coordinator.
    cfg = WorkerConfig(coordinator=args.coordinator, data_dir=Path("/tmp/helium-bench-sim"),
                       heartbeat_interval=timedelta(seconds=args.heartbeat),
                       max_assignments=args.max_assignments, durable_results=False)  # fmt: skip
    profile = NodeProfile(card_name=args.card, vram_bytes=24 << 30, device="cpu")
    nodes = [WorkerNode(cfg, Account.create(), [InstantExecutor("gpt", delay=args.delay)], profile=profile,
                        channel=channel) for _ in range(args.nodes)]  # fmt: skip
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    await asyncio.gather(*(n.registered.wait() for n in nodes))
    print(f"ready nodes={len(nodes)}", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    return 0


@contextlib.asynccontextmanager
async def echo_stream():
    """A raw grpc.aio bidirectional echo stream (client and server in this process): the baseline the
    coordinator benchmarks compare against. Yields the client call."""

    async def handler(request_iterator, context):
        async for msg in request_iterator:
            yield msg

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(handler)}),))  # fmt: skip
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            call = ch.stream_stream(ECHO)()
            yield call
            await call.done_writing()
    finally:
        await server.stop(0)


async def echo_round_trips(seconds: float = 2.0) -> float:
    """Round trips per second of the raw echo stream."""
    async with echo_stream() as call:
        n, payload = 0, b"x" * 64
        start = time.perf_counter()
        end = start + seconds
        while time.perf_counter() < end:
            await call.write(payload)
            await call.read()
            n += 1
        return n / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--nodes", type=int, default=30)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--card", default="sim-card")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--max-assignments", type=int, default=1)
    configure_logging(False, "error")
    return asyncio.run(run_nodes(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
