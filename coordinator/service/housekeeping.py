"""The dispatcher's clock-driven side: leases that lapse without heartbeats, and tasks
whose execution deadline passes (aborted, no fee taken).

`Housekeeping` is a mixin of `Dispatcher`, split out only to keep each module readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from coordinator.domain.models import Assignment, AssignmentState, TaskState, evolve
from coordinator.service.messages import CancelMsg

if TYPE_CHECKING:
    from coordinator.service.flight import InFlight

__all__ = ["Housekeeping"]

log = structlog.get_logger("coordinator.dispatch")


class Housekeeping:
    def _lapse(self, flight: InFlight, a: Assignment, why: str) -> None:
        a = evolve(a, state=AssignmentState.EXPIRED, error=why)
        session = self.nodes.get(a.node)
        if session is not None and session.release(a.assignment_id):
            self._candidate(session)
            session.send(CancelMsg(a.assignment_id, a.task_id, why))
        log.info("lease_lapsed", task_id=a.task_id, node=a.node, reason=why)
        # An assignment recovered after a coordinator restart, never resent: the crash was not the node's.
        self._close_assignment(flight, a, timeout=a.assignment_id not in self._recovered)

    def _expire_leases(self) -> None:
        now = self.now_ms()
        for flight in list(self.inflight.values()):
            for a in list(flight.assignments.values()):
                if a.state.open and a.lease_expires_ms < now:
                    self._lapse(flight, a, "lease lapsed: no heartbeat")

    def _expire_deadlines(self) -> None:
        now = self.now_ms()
        expired = [t for t in self.queue if t.expires_ms < now]
        for task in expired:
            task = evolve(task, state=TaskState.ABORTED, reason="deadline passed before dispatch", updated_ms=now)
            self.store.save_task(task)
            self.queue.remove(task.task_id)
            self.events.publish_task(task)
            self.store.after_commit(lambda task=task: self.settlement.task_finished(task, []))
        for flight in list(self.inflight.values()):
            if flight.task.state == TaskState.DISPATCHED and flight.task.expires_ms < now:
                task = evolve(flight.task, state=TaskState.ABORTED, reason="deadline passed; no fee is taken",
                               updated_ms=now)  # fmt: skip
                self.store.save_task(task)
                flight.task = task
                self.events.publish_task(task)
                self._cancel_open(flight, task.reason)
                self._maybe_finish(flight)

