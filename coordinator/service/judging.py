"""The dispatcher's result side: checking a result's signature, applying the validation
rules after each submission (early quorum, outliers, mismatch, invalid-args majority),
and scoring the nodes once a task's outcome is final.

`Judging` is a mixin of `Dispatcher`, split out only to keep each module readable.
"""

from __future__ import annotations

import json
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
from helium.tasks import results

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
                        error_kind, output: bytes = b"") -> str:
        """Why a submitted result cannot count (it is outvoted: treated like a timeout, its signed result kept
        as evidence), or "" when it can. What is returned must be what was signed: a GPT output must hash to
        its signed result hash (token ids and text); an SD result's hash must be the hash of its pHashes (the
        chain pays only a result whose hash it can recompute) and every image it stored must have its signed
        pHash (recomputed from the PNG bytes)."""
        if not self._signature_ok(task, node, result_hash, signature):
            return "result signature does not verify"
        if error_kind is not None:
            return ""
        if task.type == TaskType.GPT:
            return results.gpt_output_problem(output, result_hash)
        if not validation.sd_hash_binds(result_hash, phashes):
            return "SD result hash is not the hash of its pHashes"
        return self._sd_images_problem(task, node, phashes, output)

    def _sd_images_problem(self, task: Task, node: str, phashes: Sequence[int], output: bytes) -> str:
        try:
            manifest = json.loads(output or b"{}").get("images") or []
            listed = [int(r["phash"], 16) for r in manifest if isinstance(r, dict) and "phash" in r]
        except (ValueError, TypeError, AttributeError, KeyError):
            return "SD output is not an image manifest"
        if listed and listed != list(phashes):
            return "SD manifest pHashes differ from the signed ones"
        store = getattr(self, "image_store", None)
        if store is None:  # a relay of its own: the gateway checks the images it reads
            return ""
        images = []
        for i in range(len(phashes)):
            slot = f"result/{node}/{i}"
            try:
                if not store.exists(task.task_id, slot):
                    continue
                with store.open_read(task.task_id, slot) as r:
                    images.append(b"".join(r.chunks(1 << 20)))
            except Exception as exc:  # noqa: BLE001 - an unreadable image cannot be returned
                return f"image {i} cannot be read: {type(exc).__name__}"
        if images and len(images) != len(phashes):
            return f"{len(images)} images stored for {len(phashes)} signed pHashes"
        return results.sd_images_problem(images, phashes)

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
