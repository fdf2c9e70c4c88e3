"""Keeps the relay blobs of a task that holds slash evidence past the relay's normal retention.

Outputs are kept for the relay's retention period (a week by default) and then swept. When a finished
task holds slash evidence (a signed result that disagrees with the accepted one), its blobs are what a
dispute would look at, so the coordinator pins them for `evidence_retention_s` from that moment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from coordinator.domain.models import Assignment, Task
from coordinator.service.settlement import slash_evidence

__all__ = ["BlobPins", "evidence_pinner"]

log = structlog.get_logger("coordinator.retention")


class BlobPins(Protocol):
    def pin_task(self, task_id: str, until: float) -> float: ...


def evidence_pinner(pins: BlobPins, evidence_retention_s: float, phash_threshold: int = 5,
                    clock: Callable[[], float] = time.time) -> Callable[[str, Task, Sequence[Assignment]], None]:  # fmt: skip
    """A `Dispatcher.on_outcome` callback: pins the blobs of a finished task with slash evidence (the
    pin's fsync runs on a thread, off the event loop)."""

    def pin(task_id: str, until: float) -> None:
        try:
            pins.pin_task(task_id, until)
            log.info("evidence_blobs_pinned", task_id=task_id, until=int(until))
        except Exception:  # a lost pin leaves the blobs to the normal retention, no worse
            log.exception("evidence_pin_failed", task_id=task_id)

    def on_outcome(event: str, task: Task, assigns: Sequence[Assignment]) -> None:
        if event != "finished" or not slash_evidence(task, assigns, phash_threshold):
            return
        until = clock() + evidence_retention_s
        try:
            asyncio.get_running_loop().run_in_executor(None, pin, task.task_id, until)
        except RuntimeError:  # no loop (a test, a shutdown): pin in place
            pin(task.task_id, until)

    return on_outcome
