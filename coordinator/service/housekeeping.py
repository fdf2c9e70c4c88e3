"""The dispatcher's clock-driven and recovery side: leases that lapse without heartbeats, tasks whose
execution deadline passes (aborted, no fee taken), and rebuilding the view from the store after a
restart or a failed commit.

`Housekeeping` is a mixin of `Dispatcher`, split out only to keep each module readable.
"""

from __future__ import annotations

import structlog

from coordinator.domain.models import Assignment, AssignmentState, TaskState, evolve
from coordinator.errors import CoordinatorError
from coordinator.service.flight import InFlight
from coordinator.service.messages import CancelMsg

__all__ = ["STORE_FAILURE_PAUSE_S", "Housekeeping"]

log = structlog.get_logger("coordinator.dispatch")

STORE_FAILURE_PAUSE_S = 1.0  # after a failed commit, dispatch rounds wait this long (a full disk stays full)


class Housekeeping:
    def recover(self) -> None:
        """Rebuilds the queue and the tasks in flight from the store after a (re)start. An open assignment
        keeps its node for one lease: a node that reconnects meanwhile gets it again (`attach`); one that
        does not is replaced, and may itself be drawn again once back."""
        now = self.now_ms()
        for task in self.store.queued_tasks():
            self.queue.push(task)
        for task in self.store.active_tasks():
            assigns = {a.assignment_id: a for a in self.store.assignments_for(task.task_id)}
            for a in list(assigns.values()):
                if a.state.open:  # give the node time to reconnect and resend
                    assigns[a.assignment_id] = evolve(a, lease_expires_ms=now + self.settings.lease_ms)
                    self._recovered.add(a.assignment_id)
            flight = InFlight(task, assigns)
            self.inflight[task.task_id] = flight
            self._by_assignment.update(dict.fromkeys(assigns, task.task_id))
            self._refresh_need(flight)
        log.info("recovered", queued=len(self.queue), inflight=len(self.inflight))

    # --- a failed commit ---------------------------------------------------------------------------

    def _store_failed(self) -> None:
        """The store lost a group of writes (a full disk): this view may show some of them. Dispatching
        pauses a moment (each round would only fail again), and the view is rebuilt from the store on
        the loop's next turn, once whatever was running when the commit failed has finished."""
        self._store_failed_at = self.clock()
        if self._loop is not None and not self._resync_scheduled:
            self._resync_scheduled = True
            self._loop.call_soon(self._resync)

    def _resync(self) -> None:
        self._resync_scheduled = False
        if self._stopping:
            return
        try:  # what was written since the failure is committed (or lost) first: the view reads durable state
            self.store.flush()
        except CoordinatorError:
            pass  # that group is lost too (and schedules another resync); the store holds what is durable
        for task in list(self.queue):
            self.queue.remove(task.task_id)
        self._unqueued.clear()
        self.inflight.clear()
        self._by_assignment.clear()
        self._needs_node.clear()
        self.recover()
        for session in self.nodes.values():
            if self.store.get_node(session.address) != session.record:  # its write may be among the lost
                self.store.save_node(session.record, soon=True)
            session.assigned.clear()
            self._resume_assignments(session)
            self._candidate(session)
        log.warning("store_resynced", queued=len(self.queue), inflight=len(self.inflight))
        self.wake()

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

