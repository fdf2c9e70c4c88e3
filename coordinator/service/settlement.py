"""Batched on-chain settlement: payouts, slashes and kick-outs, journaled before they are sent.

What is paid. A VALIDATED task is paid against its creator's Task signature and the signed results of
its matching nodes, with their submission orders (the ledger computes the 10/9/6 split). GPT results
match by equal hashes. SD results match by pHash: each paid result is sent with its own pHashes and its
signature over their hash, and the ledger checks that the paid results match PAIRWISE within the pHash
threshold; validation matches each result against the accepted one, so a later winner that is not within
the threshold of every other paid one is left out of the payment (it is not an outlier either). A task aborted
because the majority reported invalid args is paid the same way, with the nodes' signatures over
INVALID_ARGS_HASH. Any other abort (all results differ, deadline) takes no fee and is never sent.
A submitted result that disagrees with the accepted one becomes slash evidence only once CONFIRMATIONS (3)
independent matching results disagree with it (the dispatcher gives a task with a minority result one
confirming re-run on a fresh node of the group): the two first agreeing signed results and the outlier's
(SD: with the pHashes), at most one per node. With fewer, the minority node only gets its QoS score: one
disagreement (nondeterminism, a flaky card) never costs stake before it is confirmed.

When. A batch is sent every `batch_max_tasks` finished tasks or `batch_interval` after the oldest
unsent one, whichever comes first; slashes ride in the same batches.

Journal and recovery. What to pay is already durable in the store (task state, signed assignments).
Before a batch is sent, `settle.batch` in the store's key-value table records its task ids, slash
nodes and the chain height; it is cleared after the receipt has been applied. After a crash (or a
failed send / receipt wait), the open batch is reconciled with the chain: `settled_flags` says which
tasks are paid and the events since the journaled height give their transaction, so nothing is paid
twice (the ledger's nonce bitmap refuses it anyway) and nothing is left unpaid (the rest is re-sent).
Pending payouts are rebuilt at start from the VALIDATED (and paid-abort) tasks in the store.

Chain down. Each flush has bounded retries (tenacity); the loop keeps going with a capped backoff, so
the queue keeps running and settlement catches up when the chain is back.

Kick-outs (`kick`) are journaled in `protocol.kicks` and sent with retries the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import structlog
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from chain.errors import (
    ChainError,
    ChainTimeout,
    ChainUnavailable,
    ContractRevert,
    SettlementRejected,
    TransactionReverted,
)
from chain.models import EvidenceResult, SignedResult, SlashEvidence, SlashKind, TaskSettlement
from coordinator import metrics
from coordinator.domain.models import Assignment, AssignmentState, NodeState, Task, TaskState, TaskType
from coordinator.service import validation
from coordinator.service.judging import CONFIRMATIONS

__all__ = ["BatchSettlement", "SettlementSettings", "TEST_KILL_AFTER_SEND_ENV", "paid_results", "settlement_for"]

log = structlog.get_logger("coordinator.settlement")

BATCH_KEY = "settle.batch"
SLASHES_KEY = "settle.slashes"
STATS_KEY = "settle.stats"
KICKS_KEY = "protocol.kicks"
ABANDONED_PREFIX = "settle.abandoned."
# Test hook, off by default: when this variable is "1", the coordinator SIGKILLs itself right after a
# settlement transaction is sent and before its receipt is seen (crash-during-settlement tests only).
TEST_KILL_AFTER_SEND_ENV = "HELIUM_TEST_KILL_AFTER_SETTLE_SEND"
_TRANSIENT = (ChainUnavailable, ChainTimeout, ConnectionError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class SettlementSettings:
    # A batch goes out when this many tasks wait, or `batch_interval` after the oldest waiting one.
    batch_max_tasks: int = 50
    batch_interval: timedelta = timedelta(seconds=10)
    # At most this many slashes per batch (each carries three signed results).
    batch_max_slashes: int = 4
    # Bounded retries of one flush (send + receipt) on a transient chain error...
    attempts: int = 3
    retry_wait: timedelta = timedelta(milliseconds=200)
    # ...after which the loop waits, doubling up to this, and tries again (forever).
    outage_backoff_max: timedelta = timedelta(seconds=5)
    receipt_timeout: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        if self.batch_max_tasks < 1:
            raise ValueError(f"batch_max_tasks must be >= 1, got {self.batch_max_tasks}")
        if self.batch_interval.total_seconds() <= 0:
            raise ValueError(f"batch_interval must be > 0, got {self.batch_interval}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")


def _paid(task: Task) -> bool:
    return task.state == TaskState.VALIDATED or (task.state == TaskState.ABORTED and task.validation == "invalid_args")


def _sd_sub(a: Assignment) -> validation.Submission:
    return validation.Submission(a.node, a.submission_order, a.result_hash, a.phashes)


def paid_results(task: Task, assigns: Sequence[Assignment], phash_threshold: int = 5) -> list[Assignment]:
    """The submitted results a paid task pays, in submission order (at most three). GPT and invalid-args
    verdicts: the matching results with the accepted hash. SD: the accepted result, then each later
    matching one within the threshold of every one already taken (the ledger checks them pairwise)."""
    winners = sorted((a for a in assigns if a.state == AssignmentState.SUBMITTED and a.matched),
                     key=lambda a: a.submission_order)  # fmt: skip
    if task.state == TaskState.ABORTED or task.type != TaskType.SD:
        want = validation.INVALID_ARGS_HASH if task.state == TaskState.ABORTED else task.result_hash
        return [a for a in winners if a.result_hash == want][:3]
    # Only a result the ledger can recompute the hash of can be paid (stores from before the dispatcher
    # refused unbound SD results may hold others).
    provable = [a for a in winners if validation.sd_hash_binds(a.result_hash, a.phashes)]
    accepted = next((a for a in provable if a.result_hash == task.result_hash), None)
    if accepted is None:
        return []
    paid = [accepted]
    for a in provable:
        if a is not accepted and len(paid) < 3 and all(
            validation.results_match("sd", _sd_sub(a), _sd_sub(p), phash_threshold) for p in paid
        ):
            paid.append(a)
    return sorted(paid, key=lambda a: a.submission_order)


def settlement_for(task: Task, assigns: Sequence[Assignment], phash_threshold: int = 5) -> TaskSettlement | None:
    """The TaskSettlement of a paid task, or None when it cannot be paid (fewer than two results to pay).
    An SD task's results carry their own pHashes (each node signed the hash of its own images)."""
    paid = paid_results(task, assigns, phash_threshold)
    if len(paid) < 2:
        return None
    # The ledger splits 10/9/6 by order 1..3: a paid result's order is its rank among the paid ones (a
    # confirming re-run may have submitted 4th, after the minority result that is not paid).
    if task.type == TaskType.SD and task.state == TaskState.VALIDATED:
        results = tuple(SignedResult.sd(a.node, a.phashes, a.signature, i) for i, a in enumerate(paid, 1))
    else:
        results = tuple(SignedResult(a.node, a.result_hash, a.signature, i) for i, a in enumerate(paid, 1))
    return TaskSettlement(
        task_id=bytes.fromhex(task.task_id[2:]), args_hash=task.args_hash, creator=task.creator, fee=task.fee,
        nonce=task.nonce, deadline=task.deadline, creator_signature=task.signature, results=results,
    )  # fmt: skip


def _evidence_result(task: Task, a: Assignment) -> EvidenceResult:
    if task.type == TaskType.SD:
        return EvidenceResult.sd(a.node, a.phashes if a.result_hash != validation.INVALID_ARGS_HASH else (), a.signature)
    return EvidenceResult(a.node, a.result_hash, a.signature)


def slash_evidence(task: Task, assigns: Sequence[Assignment], phash_threshold: int = 5) -> list[SlashEvidence]:
    """Evidence against every submitted result of a validated task that disagrees with CONFIRMATIONS matching
    ones; the two agreeing results are the first two paid ones. Never against a matching result, and never
    on an invalid-args verdict (a node that ran the task is no cheat because two others could not)."""
    if task.state != TaskState.VALIDATED:
        return []
    subs = [a for a in assigns if a.state == AssignmentState.SUBMITTED]
    if not any(not a.matched and len(a.signature) == 65 for a in subs):
        return []  # no outlier: the common case, with no evidence to build
    winners = paid_results(task, assigns, phash_threshold)
    if len(winners) < CONFIRMATIONS:
        return []
    agreeing = (_evidence_result(task, winners[0]), _evidence_result(task, winners[1]))
    kind = SlashKind.SD if task.type == TaskType.SD else SlashKind.GPT
    out = []
    for a in subs:
        if not a.matched and len(a.signature) == 65:
            out.append(SlashEvidence(bytes.fromhex(task.task_id[2:]), kind, agreeing, _evidence_result(task, a)))
    return out


def _ev_to_json(e: SlashEvidence) -> dict:
    def r(x: EvidenceResult) -> dict:
        return {"node": x.node, "hash": x.result_hash.hex(), "sig": x.signature.hex(), "phashes": list(x.phashes)}

    return {"task_id": e.task_id.hex(), "kind": int(e.kind), "agreeing": [r(x) for x in e.agreeing], "slashed": r(e.slashed)}


def _ev_from_json(d: dict) -> SlashEvidence:
    def r(x: dict) -> EvidenceResult:
        return EvidenceResult(x["node"], bytes.fromhex(x["hash"]), bytes.fromhex(x["sig"]), tuple(x["phashes"]))

    return SlashEvidence(bytes.fromhex(d["task_id"]), SlashKind(d["kind"]), tuple(r(x) for x in d["agreeing"]),
                         r(d["slashed"]))  # fmt: skip


class BatchSettlement:
    """hooks.SettlementHook over a ChainClient; `run(dispatcher)` is the background batch loop."""

    def __init__(self, store, client, settings: SettlementSettings = SettlementSettings(), *, clock=time.monotonic,
                 on_settled=None, phash_threshold: int = 5) -> None:  # fmt: skip
        self.store = store
        # The dispatcher's SD threshold (distance < it matches); NodeStaking.phashThreshold must not be lower.
        self.phash_threshold = phash_threshold
        self.client = client
        self.settings = settings
        self.clock = clock
        self.dispatcher = None
        self.on_settled = on_settled  # called with (creator, fee) per settled task (deposit cache)
        self.pending: dict[str, TaskSettlement] = {}
        self._since: dict[str, float] = {}
        self.slashes: dict[str, SlashEvidence] = {
            n: _ev_from_json(d) for n, d in json.loads(store.get_value(SLASHES_KEY) or "{}").items()
        }
        self.kicks: dict[str, dict] = json.loads(store.get_value(KICKS_KEY) or "{}")
        stats = json.loads(store.get_value(STATS_KEY) or "{}")
        self.settled_batches: int = stats.get("settled_batches", 0)
        self.outcomes: dict[str, int] = stats.get("validation_outcomes", {})
        self.slashed_nodes: set[str] = set()
        self._wake = asyncio.Event()
        self.chain_ok = True
        self._recover_pending()
        metrics.watch_settlement_lag(lambda: self.clock() - min(list(self._since.values()), default=self.clock()))

    # --- hooks.SettlementHook -------------------------------------------------------------------------

    def task_finished(self, task: Task, assignments: Sequence[Assignment]) -> None:
        """Records the outcome; a paid task joins the next batch (its payout is already durable in the
        store: the task's state and signed assignments), outliers become slash evidence (journaled)."""
        outcome = task.validation or ("deadline" if "deadline" in task.reason else task.state.value)
        outcome = outcome.split(" ")[0] if outcome.startswith("quorum") else outcome
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if not _paid(task):
            return
        ts = settlement_for(task, assignments, self.phash_threshold)
        if ts is None:
            log.warning("settlement_unpayable", task_id=task.task_id, reason="fewer than two matching signed results")
            self.store.put_value(ABANDONED_PREFIX + task.task_id, "unpayable")
            return
        self.pending.setdefault(task.task_id, ts)
        self._since.setdefault(task.task_id, self.clock())
        new_slash = False
        for ev in slash_evidence(task, assignments, self.phash_threshold):
            if ev.node not in self.slashes and ev.node not in self.slashed_nodes:
                self.slashes[ev.node] = ev
                new_slash = True
                self.outcomes["outlier"] = self.outcomes.get("outlier", 0) + 1
                log.info("slash_evidence", task_id=task.task_id, node=ev.node)
        if new_slash:
            self._save_slashes()
        if len(self.pending) >= self.settings.batch_max_tasks:
            self._wake.set()

    def _save_slashes(self) -> None:
        self.store.put_value(SLASHES_KEY, json.dumps({n: _ev_to_json(e) for n, e in self.slashes.items()}))

    def _recover_pending(self) -> None:
        tasks = [t for t in self.store.list_tasks([TaskState.VALIDATED, TaskState.ABORTED], limit=1 << 30) if _paid(t)]
        for t in tasks:
            if t.settlement_tx or self.store.get_value(ABANDONED_PREFIX + t.task_id) is not None:
                continue
            assigns = self.store.assignments_for(t.task_id)
            if any(a.state.open for a in assigns):
                continue  # still in flight: task_finished will come
            ts = settlement_for(t, assigns, self.phash_threshold)
            if ts is not None:
                self.pending[t.task_id] = ts
                self._since[t.task_id] = self.clock()
        if self.pending:
            log.info("settlement_recovered", pending=len(self.pending), slashes=len(self.slashes))

    # --- figures --------------------------------------------------------------------------------------

    def stats(self) -> dict:
        return {"validation_outcomes": dict(self.outcomes), "settled_batches": self.settled_batches,
                "pending_settlements": len(self.pending), "pending_slashes": len(self.slashes),
                "chain_ok": self.chain_ok}  # fmt: skip

    def _save_stats(self) -> None:
        self.store.put_value(STATS_KEY, json.dumps({"settled_batches": self.settled_batches,
                                                    "validation_outcomes": self.outcomes}))  # fmt: skip

    # --- the loop -------------------------------------------------------------------------------------

    def _due(self) -> bool:
        if len(self.pending) >= self.settings.batch_max_tasks or self.kicks_open():
            return True
        if not self.pending and not self.slashes:
            return bool(self.store.get_value(BATCH_KEY))
        oldest = min(self._since.values(), default=self.clock())
        return self.slashes or self.clock() - oldest >= self.settings.batch_interval.total_seconds()

    def kicks_open(self) -> bool:
        return any(not k.get("done") for k in self.kicks.values())

    async def run(self, dispatcher) -> None:
        self.dispatcher = dispatcher
        backoff = self.settings.retry_wait.total_seconds()
        tick = min(0.25, self.settings.batch_interval.total_seconds() / 4)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            except TimeoutError:
                pass
            self._wake.clear()
            if not self._due():
                continue
            try:
                await self.flush_with_retries()
                backoff = self.settings.retry_wait.total_seconds()
                self.chain_ok = True
            except asyncio.CancelledError:
                raise
            except _TRANSIENT as exc:
                metrics.record_settlement_failure("chain_unavailable")
                self.chain_ok = False
                log.warning("settlement_chain_unavailable", error=str(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.outage_backoff_max.total_seconds())
            except Exception:
                metrics.record_settlement_failure("error")
                log.exception("settlement_flush_failed")
                await asyncio.sleep(backoff)

    async def flush_with_retries(self) -> None:
        s = self.settings
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(s.attempts), wait=wait_exponential(multiplier=s.retry_wait.total_seconds(), max=2),
            retry=retry_if_exception_type(_TRANSIENT), reraise=True,
        ):  # fmt: skip
            with attempt:
                await self.flush()

    async def flush(self) -> None:
        """Reconciles an open batch, sends pending kick-outs, then sends one batch and applies its receipt."""
        await self.reconcile()
        await self._send_kicks()
        s = self.settings
        ids = list(self.pending)[: s.batch_max_tasks]
        items = [self.pending[i] for i in ids]
        slashes = [e for n, e in self.slashes.items() if n not in self.slashed_nodes][: s.batch_max_slashes]
        if not items and not slashes:
            return
        block = await asyncio.wait_for(self.client.w3.eth.block_number, s.receipt_timeout.total_seconds())
        self.store.put_value(BATCH_KEY, json.dumps({"ids": ids, "slashes": [e.node for e in slashes], "block": block,
                                                    "tx": ""}))  # fmt: skip
        try:
            tx = await self.client.settle(items, slashes)
        except SettlementRejected as exc:
            metrics.record_settlement_failure("rejected")
            self.store.put_value(BATCH_KEY, "")
            self._reject(exc, ids, slashes)
            return
        if tx is None:  # everything in it was already settled: reconcile marks it
            await self.reconcile()
            return
        self.store.put_value(BATCH_KEY, json.dumps({"ids": ids, "slashes": [e.node for e in slashes], "block": block,
                                                    "tx": tx.hex()}))  # fmt: skip
        if os.environ.get(TEST_KILL_AFTER_SEND_ENV) == "1":
            log.warning("test_hook_kill_after_settle_send", tx=tx.hex())
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            receipt = await self.client.wait_receipt(tx, s.receipt_timeout)
        except TransactionReverted:
            metrics.record_settlement_failure("reverted")
            self.store.put_value(BATCH_KEY, "")
            await self._diagnose(ids, items, slashes)
            return
        settled = {e.args["taskId"].hex(): receipt.tx_hash.hex() for e in receipt.events if e.name == "TaskSettled"}
        slashed = [e.args["node"] for e in receipt.events if e.name == "Slashed"]
        self._apply(settled, slashed, [i for i in ids if i[2:] not in settled])
        metrics.record_settlement("settled", len(settled))
        self.settled_batches += 1
        self._save_stats()
        self.store.put_value(BATCH_KEY, "")
        log.info("settlement_batch_settled", tx=tx.hex(), tasks=len(settled), slashes=len(slashed),
                 gas=receipt.gas_used)  # fmt: skip

    async def _diagnose(self, ids: list[str], items: list[TaskSettlement], slashes: list[SlashEvidence]) -> None:
        """A batch sent without preflight reverted: replay it as an eth_call to learn which task or slash
        the ledger refuses, and drop that one."""
        fn = self.client.ledger.functions.settle([t.as_abi() for t in items], [e.as_abi() for e in slashes])
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        try:
            await self.client.sender_for(None).preflight(self.client.ledger.address, data)
        except ContractRevert as exc:
            rejected = SettlementRejected(str(exc), task_id=exc.args_dict.get("taskId"), error=exc.error,
                                          args=exc.args_dict, data=exc.data)  # fmt: skip
            self._reject(rejected, ids, slashes)
            return
        log.warning("settlement_batch_reverted_then_passed", tasks=len(items), slashes=len(slashes))

    def _reject(self, exc: SettlementRejected, ids: list[str], slashes: list[SlashEvidence]) -> None:
        """A batch the ledger refuses: drop the task (or slash) it names, so the rest goes out next time."""
        tid = exc.task_id.hex() if isinstance(exc.task_id, bytes | bytearray) else None
        node = exc.args_dict.get("node")
        slash_tasks = {e.task_id.hex(): e.node for e in slashes}
        if tid is not None and "0x" + tid in self.pending and tid not in slash_tasks:
            self.pending.pop("0x" + tid, None)
            self._since.pop("0x" + tid, None)
            self.store.put_value(ABANDONED_PREFIX + "0x" + tid, exc.error or "rejected")
            self.outcomes["settlement_rejected"] = self.outcomes.get("settlement_rejected", 0) + 1
            log.error("settlement_task_rejected", task_id="0x" + tid, error=exc.error, args=str(exc.args_dict))
            return
        culprit = slash_tasks.get(tid) if tid is not None else None
        if culprit is None and node is not None:
            culprit = next((e.node for e in slashes if node in (e.node, *(x.node for x in e.agreeing))), None)
        if culprit is None and slashes:
            culprit = slashes[0].node
        if culprit is not None:
            self.slashes.pop(culprit, None)
            self._save_slashes()
            log.warning("slash_rejected", node=culprit, error=exc.error, args=str(exc.args_dict))
            return
        log.error("settlement_batch_rejected", error=exc.error, args=str(exc.args_dict))
        raise exc

    async def reconcile(self) -> None:
        """Settles the books of a batch that was journaled but whose receipt was never applied."""
        raw = self.store.get_value(BATCH_KEY)
        if not raw:
            return
        batch = json.loads(raw)
        ids = [i for i in batch["ids"] if i in self.pending]
        items = [self.pending[i] for i in ids]
        flags = await self.client.settled_flags(items)
        events = await self.client.events(from_block=int(batch["block"]))
        txs = {e.args["taskId"].hex(): e.tx_hash.hex() for e in events if e.name == "TaskSettled"}
        settled = {i[2:]: txs.get(i[2:], batch.get("tx") or "reconciled") for i, f in zip(ids, flags, strict=True) if f}
        slashed = []
        for node in batch.get("slashes", []):
            info = await self.client.node_info(node)
            if info.slashed:
                slashed.append(node)
        self._apply(settled, slashed, [])
        if settled:
            metrics.record_settlement("reconciled", len(settled))
        if settled or slashed:
            self.settled_batches += 1
            self._save_stats()
        self.store.put_value(BATCH_KEY, "")
        log.info("settlement_reconciled", tasks=len(settled), slashes=len(slashed), tx=batch.get("tx"))

    def _apply(self, settled: dict[str, str], slashed: Sequence[str], unsettled: Sequence[str]) -> None:
        now = int(time.time() * 1000)
        for hex_id, tx in settled.items():
            task_id = "0x" + hex_id
            ts = self.pending.pop(task_id, None)
            metrics.observe_settlement_delay(self.clock() - self._since.pop(task_id, self.clock()))
            task = self.store.get_task(task_id)
            if task is None or task.state == TaskState.SETTLED:
                continue
            task = replace(task, state=TaskState.SETTLED, settlement_tx="0x" + tx.removeprefix("0x"), updated_ms=now)
            self.store.save_task(task)
            if self.dispatcher is not None:
                self.dispatcher.events.publish_task(task)
            if self.on_settled is not None and ts is not None:
                self.on_settled(ts.creator, ts.fee)
        for node in slashed:
            metrics.record_slash()
            self.slashed_nodes.add(node)
            self.slashes.pop(node, None)
            self.outcomes["slashed"] = self.outcomes.get("slashed", 0) + 1
            reason = "slashed: a signed result that disagrees with two matching signed results (evidence on chain)"
            if self.dispatcher is not None:
                try:
                    self.dispatcher.set_node_state(node, NodeState.SLASHED, reason)
                except Exception:
                    log.exception("slash_state_failed", node=node)
            log.warning("node_slashed", node=node)
        if slashed:
            self._save_slashes()
        for task_id in unsettled:  # in the batch but not settled by it (already settled before): reconcile
            if task_id in self.pending:
                log.info("settlement_not_in_receipt", task_id=task_id)

    # --- kick-outs ------------------------------------------------------------------------------------

    def kick(self, address: str, reason: str) -> None:
        """Journals a kick-out (its stake is returned on chain by the next flush)."""
        if address in self.kicks:
            return
        self.kicks[address] = {"reason": reason, "done": False}
        self.store.put_value(KICKS_KEY, json.dumps(self.kicks))
        self._wake.set()

    async def _send_kicks(self) -> None:
        for node, k in list(self.kicks.items()):
            if k.get("done"):
                continue
            info = await self.client.node_info(node)
            if info.stake > 0 and not info.slashed:
                try:
                    await self.client.wait_receipt(await self.client.kick_out(node), self.settings.receipt_timeout)
                except ContractRevert as exc:
                    log.warning("kick_out_rejected", node=node, error=exc.error)
            k["done"] = True
            self.store.put_value(KICKS_KEY, json.dumps(self.kicks))
            log.info("node_kicked_out_on_chain", node=node)


# Re-exported for chain_parts: anything the chain raises that a caller may treat as "chain unavailable".
TRANSIENT_ERRORS = _TRANSIENT
_ = ChainError
