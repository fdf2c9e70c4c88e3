"""Per-task fan-out of state changes and token deltas to WatchTask streams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from coordinator import metrics
from coordinator.domain.models import Task

__all__ = ["DeltaEvent", "TaskEvents"]


@dataclass(frozen=True)
class DeltaEvent:
    task_id: str
    node: str
    seq: int
    chunk_json: str


class TaskEvents:
    """Watchers get a bounded queue each; a watcher that falls too far behind loses deltas,
    never state changes (those are re-read from the store when the watcher catches up)."""

    def __init__(self, max_pending: int = 4096) -> None:
        self._watchers: dict[str, set[asyncio.Queue]] = {}
        self.max_pending = max_pending
        # In-process observers of every published state change (benchmarks, embedding code).
        self.observers: list[Callable[[Task], None]] = []

    def subscribe(self, task_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(self.max_pending)
        self._watchers.setdefault(task_id, set()).add(q)
        return q

    def unsubscribe(self, task_id: str, q: asyncio.Queue) -> None:
        watchers = self._watchers.get(task_id)
        if watchers is not None:
            watchers.discard(q)
            if not watchers:
                del self._watchers[task_id]

    def publish_task(self, task: Task) -> None:
        metrics.observe_task(task)
        for observe in self.observers:
            observe(task)
        for q in self._watchers.get(task.task_id, ()):
            if q.full():
                try:
                    q.get_nowait()
                except asyncio.QueueEmpty:
                    pass
            q.put_nowait(task)

    def publish_delta(self, task_id: str, node: str, seq: int, chunk_json: str) -> None:
        for q in self._watchers.get(task_id, ()):
            if not q.full():
                q.put_nowait(DeltaEvent(task_id, node, seq, chunk_json))
