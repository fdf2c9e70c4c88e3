"""Bench support: an in-process coordinator (no chain, garbage collector tuned as `helium coordinator` tunes
it) plus simulated worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorApp
from helium.gctune import tune_for_server
from helium.log import configure_logging


@contextlib.asynccontextmanager
async def coordinator(**config):
    configure_logging(False, "error")
    with tempfile.TemporaryDirectory(prefix="helium-bench-") as tmp:
        app = CoordinatorApp(CoordinatorConfig(data_dir=Path(tmp), port=0, chain="none", **config))
        await app.start()
        tune_for_server()  # as `helium coordinator` runs
        try:
            yield app
        finally:
            await app.stop(0.5)


@contextlib.asynccontextmanager
async def ready_child(*args: str, what: str, timeout: float = 300.0, stdin: bool = False):
    """Starts `python -m ARGS`, waits for the line it prints once serving (`ready ...`) and yields the
    process; terminates it on exit (killed after 10 s)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.PIPE if stdin else None)  # fmt: skip
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout)).decode()
        if not line.startswith("ready"):
            raise RuntimeError(f"{what} did not start: {line!r}")
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()


@contextlib.asynccontextmanager
async def sim_workers(address: str, nodes: int, *, delay: float = 0.0, card: str = "sim-card", heartbeat: float = 5.0,
                      timeout: float = 300.0, max_assignments: int = 1):  # fmt: skip
    """Starts `nodes` simulated workers in one child process; yields once all are registered."""
    async with ready_child("bench._sim", "--coordinator", address, "--nodes", str(nodes), "--delay", str(delay),
                           "--card", card, "--heartbeat", str(heartbeat), "--max-assignments", str(max_assignments),
                           what="simulated workers", timeout=timeout) as proc:  # fmt: skip
        yield proc
