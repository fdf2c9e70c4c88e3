"""A real worker process with a test-double executor, for crash tests.

    python -m tests.support.worker_proc --coordinator HOST:PORT --data-dir D [--delay S] [--lie]
        [--max-assignments N]

The node process, its key, its stream, reconnects and signatures are the real
ones (`worker.session.WorkerNode`); only the executor is a double, so the test
controls how long a task runs and what it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path

from chain.signing import load_or_create_key
from helium.log import configure_logging
from worker.config import WorkerConfig
from worker.session import NodeProfile, WorkerNode
from worker.testing import LyingExecutor, SlowExecutor


async def run(args) -> int:
    cfg = WorkerConfig(
        coordinator=args.coordinator, data_dir=Path(args.data_dir), heartbeat_interval=timedelta(seconds=0.3),
        reconnect_initial=timedelta(milliseconds=100), reconnect_max=timedelta(seconds=1),
        connect_timeout=timedelta(seconds=3), max_assignments=args.max_assignments,
    )  # fmt: skip
    key = load_or_create_key(Path(args.data_dir) / "keys" / "node-0.key")
    executor = LyingExecutor("gpt") if args.lie else SlowExecutor(args.delay)
    profile = NodeProfile(card_name=args.card, vram_bytes=8 << 30, device="cpu")

    def ready(node: WorkerNode) -> None:
        print(f"ready node={node.address}", flush=True)

    node = WorkerNode(cfg, key, [executor], profile=profile, on_ready=ready)
    await node.run()
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--lie", action="store_true")
    p.add_argument("--card", default="test-card")
    p.add_argument("--max-assignments", type=int, default=1)
    configure_logging(False, "warning")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
