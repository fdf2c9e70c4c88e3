"""Blob retention: a background sweep removes what is older than the retention period.

Bundled, the coordinator runs the sweep among its background jobs and pins the blobs of a task that holds
slash evidence for `evidence_retention` (so the evidence outlives the normal period); standalone,
`helium relay` runs it itself. A sweep walks the store on a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import timedelta

import structlog

from relay.store import BlobStore

__all__ = ["RetentionSweeper"]

log = structlog.get_logger("relay.retention")


class RetentionSweeper:
    """`await sweeper.run()` sweeps `store` at once and then every `interval` until cancelled or stopped."""

    def __init__(self, store: BlobStore, retention: timedelta, interval: timedelta,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.store, self.retention, self.interval, self.clock = store, retention, interval, clock
        self.removed = 0
        self.sweeps = 0
        self._task: asyncio.Task | None = None

    async def sweep_once(self) -> int:
        removed = await asyncio.to_thread(self.store.sweep, self.retention.total_seconds(), self.clock())
        self.removed += removed
        self.sweeps += 1
        return removed

    async def run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except Exception:  # a sweep that fails (a vanished directory, say) is tried again next time
                log.exception("relay_sweep_failed")
            await asyncio.sleep(self.interval.total_seconds())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="relay-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
