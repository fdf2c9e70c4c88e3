"""The dispatcher's result side: checking that a result is what its node signed (signature, the GPT
output against its hash, SD images against their pHashes), applying the validation rules after each
submission (early quorum, outliers, mismatch, invalid-args majority), one confirming re-run for a
minority result, and scoring the nodes once a task's outcome is final.

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

__all__ = ["CONFIRMATIONS", "Judging"]

# Independent matching results a minority result must disagree with before it is slashed (settlement).
CONFIRMATIONS = 3
# How long a validated task with a minority result waits for a fresh node of its group to re-run it.
CONFIRM_WAIT_S = 5.0

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
        if task.state == TaskState.VALIDATED and task.result_nodes:
            # Decided already: later results (a confirming re-run) match the accepted one or not; a later pair
            # agreeing with each other never displaces it.
            subs = flight.submissions()
            acc = next((x for x in subs if x.node == task.result_nodes[0]), None)
            winners = {x.node for x in subs if acc is not None
                       and validation.results_match(task.type.value, acc, x, s.phash_threshold)}  # fmt: skip
            self._mark_matched(flight, winners, changed)
        elif decision.accepted is not None:
            self._mark_matched(flight, {w.node for w in decision.winners}, changed)
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
        self._maybe_confirm(flight)
        self._refresh_need(flight)
        self._maybe_finish(flight)

    def _mark_matched(self, flight: InFlight, winners: set[str], changed: list[Assignment]) -> None:
        for a in list(flight.assignments.values()):
            if a.state == AssignmentState.SUBMITTED and a.matched != (a.node in winners):
                a = evolve(a, matched=a.node in winners)
                flight.assignments[a.assignment_id] = a
                if a not in changed:
                    changed.append(a)

    def _confirm_wanted(self, flight: InFlight) -> bool:
        """A validated task with a minority result and fewer than CONFIRMATIONS matching ones, no assignment
        open and none made since it was validated (one confirming re-run at most)."""
        task = flight.task
        if task.state != TaskState.VALIDATED or any(a.state.open for a in flight.assignments.values()):
            return False
        subs = [a for a in flight.assignments.values() if a.state == AssignmentState.SUBMITTED]
        if all(a.matched for a in subs) or sum(a.matched for a in subs) >= CONFIRMATIONS:
            return False
        return not any(a.leased_ms >= task.validated_ms for a in flight.assignments.values())

    def _confirm_pending(self, flight: InFlight) -> bool:
        """Whether the task waits (at most CONFIRM_WAIT_S after its validation) for a node to re-run it."""
        return self._confirm_wanted(flight) and self.now_ms() < flight.task.validated_ms + CONFIRM_WAIT_S * 1000

    def _maybe_confirm(self, flight: InFlight) -> None:
        """One disagreement costs no stake before it is confirmed. A validated task with a minority result gets
        one more assignment, on a node the task has not used, of the same card (GPT: the card is the group key:
        card, backend, library versions), at once or when one frees up within CONFIRM_WAIT_S; settlement builds
        slash evidence only from CONFIRMATIONS matching results. No node in time, or the re-run fails or
        disagrees: the minority node keeps its QoS score and is never slashed."""
        if not self._confirm_pending(flight):
            return
        task = flight.task
        used = frozenset(a.node for a in flight.assignments.values())
        group = self.selector.pick(task, self._free_views(task.type, {}), 1, used)
        if group:
            log.info("task_confirming", task_id=task.task_id, node=group[0].address)
            self._assign(flight, group)
            return
        loop = getattr(self, "_loop", None)
        if loop is not None:  # otherwise the next dispatch round or housekeeping finds it
            left = (task.validated_ms + CONFIRM_WAIT_S * 1000 - self.now_ms()) / 1000
            loop.call_later(max(0.0, left) + 0.01, self._confirm_expired, flight)

    def _confirm_expired(self, flight: InFlight) -> None:
        if self.inflight.get(flight.task.task_id) is flight and not self._confirm_pending(flight):
            if not any(a.leased_ms >= flight.task.validated_ms for a in flight.assignments.values()):
                log.info("task_confirm_skipped", task_id=flight.task.task_id, reason="no free node of the group")
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
