"""The dispatcher's result side: checking a result's signature, applying the validation
rules after each submission (early quorum, outliers, mismatch, invalid-args majority),
and scoring the nodes once a task's outcome is final.

`Judging` is a mixin of `Dispatcher`, split out only to keep each module readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import structlog

from chain import signing
from coordinator.domain.models import (
    Assignment,
    AssignmentState,
    Task,
    TaskState,
    TaskType,
    evolve,
)
from coordinator.service import validation

if TYPE_CHECKING:
    from coordinator.service.flight import InFlight

__all__ = ["Judging"]

log = structlog.get_logger("coordinator.dispatch")


class Judging:
    def _signature_ok(self, task: Task, node: str, result_hash: bytes, signature: bytes) -> bool:
        try:
            tid = bytes.fromhex(task.task_id[2:])
            return signing.result_signer(self.domain, tid, result_hash, node, signature) == node
        except (signing.SignatureError, ValueError):
            return False

    def _result_problem(self, task: Task, node: str, result_hash: bytes, signature: bytes, phashes: Sequence[int],
                        error_kind) -> str:
        """Why a submitted result cannot count (it is then treated like a timeout), or "" when it can.
        An SD result is compared by its pHashes but signed and settled by its hash, so the two must agree:
        the chain pays an SD result only when its hash is sd_result_hash(its pHashes)."""
        if not self._signature_ok(task, node, result_hash, signature):
            return "result signature does not verify"
        if task.type == TaskType.SD and error_kind is None and not validation.sd_hash_binds(result_hash, phashes):
            return "SD result hash is not the hash of its pHashes"
        return ""

    def _judge(self, flight: InFlight, changed: list[Assignment]) -> None:
        """Applies the validation rules after a submission, and stores the outcome in one transaction."""
        task = flight.task
        now = self.now_ms()
        s = self.settings
        decision = validation.decide(
            task.type.value, flight.submissions(), group_size=s.group_size, quorum=s.quorum,
            phash_threshold=s.phash_threshold,
        )  # fmt: skip
        new_task = None
        if task.state == TaskState.DISPATCHED and decision.verdict != validation.Verdict.PENDING:
            new_task = self._decided(flight, decision, now)
        if decision.accepted is not None:
            winners = {w.node for w in decision.winners}
            for a in flight.assignments.values():
                if a.state == AssignmentState.SUBMITTED and a.matched != (a.node in winners):
                    a = evolve(a, matched=a.node in winners)
                    flight.assignments[a.assignment_id] = a
                    if a not in changed:
                        changed.append(a)
        changed = [flight.assignments[a.assignment_id] for a in changed]
        self.store.save_assignments(changed, new_task)
        if new_task is not None:
            flight.task = new_task
            self.store.after_commit(lambda: self._announce(new_task))
            if new_task.state == TaskState.VALIDATED:
                log.info("task_validated", task_id=task.task_id, nodes=list(new_task.result_nodes))
            else:
                log.info("task_aborted", task_id=task.task_id, reason=new_task.reason)
                self._cancel_open(flight, new_task.reason)
        self._refresh_need(flight)
        self._maybe_finish(flight)

    def _announce(self, task: Task) -> None:
        """Tells watchers (and `on_validated` hooks) of an outcome, once it is durable."""
        self.events.publish_task(task)
        if task.state == TaskState.VALIDATED:
            for cb in self.on_validated:
                cb(task)

    def _decided(self, flight: InFlight, decision: validation.Decision, now: int) -> Task:
        task = flight.task
        if decision.verdict == validation.Verdict.VALIDATED:
            acc = next(a for a in flight.assignments.values() if a.node == decision.accepted.node
                       and a.state == AssignmentState.SUBMITTED)  # fmt: skip
            n = len(decision.winners)
            return evolve(
                task, state=TaskState.VALIDATED, result_hash=acc.result_hash, output=acc.output,
                result_nodes=tuple(w.node for w in decision.winners), validation=f"quorum {n}/{self.settings.group_size}",
                validated_ms=now, updated_ms=now,
            )  # fmt: skip
        if decision.verdict == validation.Verdict.INVALID_ARGS:
            return evolve(
                task, state=TaskState.ABORTED, result_hash=validation.INVALID_ARGS_HASH, validation="invalid_args",
                result_nodes=tuple(w.node for w in decision.winners), updated_ms=now,
                reason="the nodes' majority reports invalid task arguments",
            )  # fmt: skip
        return evolve(task, state=TaskState.ABORTED, validation="mismatch", updated_ms=now,
                       reason="all results differ; no fee is taken")  # fmt: skip

    def _score(self, task: Task, assigns: Sequence[Assignment]) -> None:
        now = self.now_ms()
        for a in assigns:
            if a.state != AssignmentState.SUBMITTED:
                continue
            session = self.nodes.get(a.node)
            record = session.record if session else self.store.get_node(a.node)
            if record is not None:
                self._save_qos(record, self.qos.on_scored(record, a.submission_order, a.matched, now))
