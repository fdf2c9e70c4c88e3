"""The dispatcher: the live half of the coordinator.

It owns the in-memory view of the queue, the tasks in flight and the connected
nodes, and drives every task through its lifecycle. Every state change is
written to the store (one transaction) *before* anything is sent or
acknowledged, so a `kill -9` at any point loses no accepted task and no
acknowledged result: `recover()` rebuilds this view from the store.

One asyncio loop runs it all; store calls are short synchronous transactions.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from chain import signing
from coordinator import metrics
from coordinator.domain.models import (
    Assignment,
    AssignmentState,
    ErrorKind,
    NodeState,
    Task,
    TaskState,
    TaskType,
    evolve,
)
from coordinator.errors import FailedPrecondition, NotFound
from coordinator.service import hooks, validation
from coordinator.service.events import DeltaEvent, TaskEvents
from coordinator.service.flight import InFlight
from coordinator.service.housekeeping import STORE_FAILURE_PAUSE_S, Housekeeping
from coordinator.service.judging import Judging
from coordinator.service.messages import (
    AssignMsg,
    CancelMsg,
    DrainMsg,
    Grant,
)
from coordinator.service.nodes import NodeRegistry, NodeSession
from coordinator.store.base import CoordinatorStore

__all__ = ["Dispatcher", "DispatchSettings", "NodeSession"]

log = structlog.get_logger("coordinator.dispatch")


@dataclass(frozen=True)
class DispatchSettings:
    heartbeat_interval_s: float = 5.0
    # A node with no assignment has no lease to keep: it heartbeats this seldom (Registered names it).
    idle_heartbeat_interval_s: float = 30.0
    lapse_after_missed: int = 3
    # An ack waits at most this long for a message to ride with (nodes that read batches).
    ack_delay_s: float = 0.02
    # A node asks how many assignments it holds at once (NodeInfo.max_assignments); at most this many.
    max_assignments_per_node: int = 8
    group_size: int = 3
    quorum: int = 2
    phash_threshold: int = 5
    # Args larger than this travel through the relay's `input` slot instead of inline.
    inline_args_limit: int = 256 * 1024
    grant_ttl_s: int = 3600
    # How many queued tasks one dispatch round looks at.
    max_scan: int = 2000
    max_buffered_deltas: int = 16384

    @property
    def lease_ms(self) -> int:
        return int(self.heartbeat_interval_s * self.lapse_after_missed * 1000)


class Dispatcher(NodeRegistry, Judging, Housekeeping):
    def __init__(
        self,
        store: CoordinatorStore,
        settings: DispatchSettings,
        *,
        key,
        domain: signing.Domain,
        queue: hooks.TaskQueue,
        selector: hooks.Selector,
        pricer: hooks.Pricer,
        settlement: hooks.SettlementHook,
        qos: hooks.QosHook | None = None,
        events: TaskEvents | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.key = key
        self.domain = domain
        self.queue = queue
        self.selector = selector
        self.pricer = pricer
        self.settlement = settlement
        self.qos = qos
        self.events = events or TaskEvents()
        self.clock = clock
        self.nodes: dict[str, NodeSession] = {}
        self.inflight: dict[str, InFlight] = {}
        self._needs_node: dict[str, int] = {}  # task id -> missing assignments (replacements)
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # set while run() runs
        self._round_scheduled = False
        self._stopping = False
        self._observed_at = 0.0
        self._maybe_free: dict[TaskType, set[str]] = {}
        self._by_assignment: dict[str, str] = {}  # open or recent assignment id -> its task id
        self._registered: tuple = (object(), [], {})
        self._unqueued: dict[str, Task] = {}  # created, queued once durable (a failed commit leaves no ghost)
        self._recovered: set[str] = set()  # open assignments found by recover(): their lapse is not the node's fault
        self._store_failed_at = float("-inf")
        self._resync_scheduled = False
        store.on_commit_failed(self._store_failed)
        self.on_validated: list[Callable[[Task], None]] = []
        self.on_outcome: list[Callable[[str, Task, Sequence[Assignment]], None]] = []

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # --- startup and loops --------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch and housekeeping until `stop()`. Between ticks, `wake()` runs a dispatch round on the
        loop's next turn, so a new task or a freed node costs no tick of latency."""
        tick = max(0.05, self.settings.heartbeat_interval_s / 4)
        self._loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=tick)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                self._expire_leases()
                self._expire_deadlines()
                self._dispatch_round()
                self._observe(tick)
            except Exception:
                log.exception("dispatch_round_failed")

    def _observe(self, every_s: float) -> None:
        """Queue and node gauges for /metrics, at most once per `every_s` (they cost O(nodes))."""
        now = self.clock()
        if now - self._observed_at < every_s:
            return
        self._observed_at = now
        metrics.observe_queue(self.queue.depth_by_type())
        metrics.observe_nodes(evolve(r, state=self.node_view_state(r)) for r in self.store.list_nodes())

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def wake(self) -> None:
        if self._loop is None:  # not running yet: the first tick dispatches
            self._wake.set()
        elif not self._round_scheduled:
            self._round_scheduled = True
            self._loop.call_soon(self._round_now)

    def _round_now(self) -> None:
        self._round_scheduled = False
        if self._stopping:
            return
        try:
            self._dispatch_round()
        except Exception:
            log.exception("dispatch_round_failed")

    # --- tasks ----------------------------------------------------------------------------------

    def enqueue(self, task: Task) -> None:
        """Stores a new task and queues it (the caller has validated it)."""
        self.queue.check_room()
        self.store.create_task(task)
        self._unqueued[task.task_id] = task
        self.store.after_commit(lambda: self._queued(task.task_id))

    def _queued(self, task_id: str) -> None:
        """A new task is durable: only now it enters the queue (a failed commit would leave a ghost)."""
        task = self._unqueued.pop(task_id, None)
        if task is None:  # cancelled meanwhile, or lost with a failed commit
            return
        self.queue.push(task)
        self.events.publish_task(task)
        log.info("task_queued", task_id=task.task_id, type=task.type.value, fee=str(task.fee))
        self.wake()

    def get(self, task_id: str) -> tuple[Task, list[Assignment]]:
        flight = self.inflight.get(task_id)
        if flight is not None:
            return flight.task, sorted(flight.assignments.values(), key=lambda a: a.leased_ms)
        task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found")
        return task, self.store.assignments_for(task_id)

    def cancel(self, task_id: str, reason: str = "cancelled by its creator", *, running: bool = False) -> Task:
        """Cancels a queued task; with `running`, a dispatched one too: its open assignments are cancelled on
        their nodes and it is settled as cancelled (no fee)."""
        task, _ = self.get(task_id)
        flight = self.inflight.get(task_id)
        if running and task.state == TaskState.DISPATCHED and flight is not None:
            task = flight.task = evolve(task, state=TaskState.CANCELLED, reason=reason, updated_ms=self.now_ms())
            self.store.save_task(task)
            self.events.publish_task(task)
            self._cancel_open(flight, reason)
            self._maybe_finish(flight)
            log.info("task_cancelled", task_id=task_id, running=True)
            return task
        if task.state != TaskState.QUEUED:
            what = "a queued or (stop_running) dispatched" if running else "a queued"
            raise FailedPrecondition(f"task {task_id} is {task.state.value}; only {what} task can be cancelled")
        task = evolve(task, state=TaskState.CANCELLED, reason=reason, updated_ms=self.now_ms())
        self.store.save_task(task)
        self.queue.remove(task_id)
        self._unqueued.pop(task_id, None)
        self.events.publish_task(task)
        log.info("task_cancelled", task_id=task_id)
        return task

    # --- dispatch -------------------------------------------------------------------------------

    def _dispatch_round(self) -> None:
        if not self._needs_node and not len(self.queue):
            return
        if self.clock() - self._store_failed_at < STORE_FAILURE_PAUSE_S:
            return
        cache: dict = {}
        taken: set[str] = set()  # nodes this round has filled (a node may hold several assignments)

        def free_for(task: Task) -> list[hooks.NodeView]:
            views = self._free_views(task.type, cache)
            if taken:
                views = cache[task.type] = [v for v in views if v.address not in taken]
            return views

        def took(group: Sequence[hooks.NodeView]) -> None:
            for n in group:
                session = self.nodes.get(n.address)
                if session is None or not session.free:
                    taken.add(n.address)

        for task_id, missing in list(self._needs_node.items()):
            flight = self.inflight.get(task_id)
            if flight is None or missing <= 0:
                self._needs_node.pop(task_id, None)
                continue
            busy = flight.busy_nodes()
            group = None
            for count in range(missing, 0, -1):  # as many as are free now (after a crash, nodes return one by one)
                group = self.selector.pick(flight.task, free_for(flight.task), count, busy)
                if group:
                    break
            if group:
                self._assign(flight, group)
                took(group)
        size = self.settings.group_size
        # A bounded scan: with many queued tasks that no free group can run, a round stays cheap;
        # deeper tasks are also the lower-value ones, and aging brings them forward.
        for task in self.queue.head(self.settings.max_scan):
            free = free_for(task)
            if len(free) < size:
                if all(len(v) < size for v in cache.values()) and len(cache) == len(self._maybe_free):
                    return
                continue
            group = self.selector.pick(task, free, size, frozenset())
            if group:
                self._dispatch(task, group)
                took(group)

    def _new_assignment(self, task: Task, node: str, now: int) -> Assignment:
        return Assignment(
            # Time first, so new ids append to the store's index instead of landing at random pages.
            assignment_id=f"a-{now:011x}{secrets.token_hex(8)}", task_id=task.task_id, node=node,
            state=AssignmentState.LEASED, leased_ms=now, lease_expires_ms=now + self.settings.lease_ms,
        )  # fmt: skip

    def _dispatch(self, task: Task, group: Sequence[hooks.NodeView]) -> None:
        now = self.now_ms()
        card = group[0].record.caps.card if task.type == TaskType.GPT else None
        task = evolve(task, state=TaskState.DISPATCHED, card=card, updated_ms=now)
        assigns = [self._new_assignment(task, n.address, now) for n in group]
        self.store.dispatch_task(task, assigns)
        self.queue.remove(task.task_id)
        flight = InFlight(task, {a.assignment_id: a for a in assigns})
        self.inflight[task.task_id] = flight
        self._by_assignment.update((a.assignment_id, task.task_id) for a in assigns)
        for a in assigns:
            self._send_assignment(flight, a)
        self.events.publish_task(task)
        log.info("task_dispatched", task_id=task.task_id, nodes=[n.address for n in group])

    def _assign(self, flight: InFlight, group: Sequence[hooks.NodeView]) -> None:
        now = self.now_ms()
        task = flight.task
        if task.type == TaskType.GPT and task.card is None:
            task = flight.task = evolve(task, card=group[0].record.caps.card)
        new = [self._new_assignment(task, n.address, now) for n in group]
        self.store.save_assignments(new, task)
        for a in new:
            flight.assignments[a.assignment_id] = a
            self._by_assignment[a.assignment_id] = task.task_id
            self._send_assignment(flight, a)
        self._refresh_need(flight)
        log.info("task_reassigned", task_id=task.task_id, nodes=[n.address for n in group])

    def _send_assignment(self, flight: InFlight, a: Assignment) -> None:
        session = self.nodes.get(a.node)
        if session is None:
            return
        session.assigned[a.assignment_id] = None
        task = flight.task
        inline = len(task.args) <= self.settings.inline_args_limit
        grant = None
        if task.type == TaskType.SD or not inline:
            grant = self.grant(task.task_id, a.node, ("input",), (f"result/{a.node}", f"result/{a.node}/*"))
        session.send(AssignMsg(a, task, grant, inline, task.expires_ms))

    def grant(self, task_id: str, grantee: str, read: Sequence[str], write: Sequence[str]) -> Grant:
        expires = int(self.clock()) + self.settings.grant_ttl_s
        sig = signing.sign_relay_grant(self.key, self.domain, bytes.fromhex(task_id[2:]), grantee, read, write, expires)
        return Grant(task_id, grantee, tuple(read), tuple(write), expires, sig)

    # --- node reports ---------------------------------------------------------------------------

    def _find(self, assignment_id: str) -> tuple[InFlight | None, Assignment | None]:
        task_id = self._by_assignment.get(assignment_id)
        flight = self.inflight.get(task_id) if task_id else None
        if flight is None:
            return None, None
        return flight, flight.assignments.get(assignment_id)

    def started(self, session: NodeSession, assignment_id: str) -> None:
        flight, a = self._find(assignment_id)
        if a is None or flight is None or a.node != session.address or a.state != AssignmentState.LEASED:
            return
        # RUNNING is kept in memory only: after a restart LEASED and RUNNING are both "open", so
        # persisting it would cost a transaction per node per task and change nothing on recovery.
        a = evolve(a, state=AssignmentState.RUNNING, lease_expires_ms=self.now_ms() + self.settings.lease_ms)
        flight.assignments[a.assignment_id] = a

    def delta(self, session: NodeSession, task_id: str, seq: int, chunk_json: str) -> None:
        flight = self.inflight.get(task_id)
        if flight is None or not any(a.node == session.address for a in flight.assignments.values()):
            return
        if flight.streamer is None:
            flight.streamer = session.address
        if flight.streamer == session.address:
            if len(flight.deltas) < self.settings.max_buffered_deltas:
                flight.deltas.append(DeltaEvent(task_id, session.address, seq, chunk_json))
            self.events.publish_delta(task_id, session.address, seq, chunk_json)

    def buffered_deltas(self, task_id: str) -> list:
        flight = self.inflight.get(task_id)
        return list(flight.deltas) if flight is not None else []

    def submit(
        self,
        session: NodeSession,
        assignment_id: str,
        result_hash: bytes,
        signature: bytes,
        *,
        output: bytes = b"",
        output_slots: Sequence[str] = (),
        phashes: Sequence[int] = (),
        stats: dict | None = None,
        error_kind: ErrorKind | None = None,
        error: str = "",
    ) -> None:
        """Stores a node's result (or error report) durably, then acknowledges it.

        A duplicate (a result re-sent after a reconnect) is acknowledged again and changes nothing.
        """
        flight, a = self._find(assignment_id)
        if a is None or flight is None:
            stored = self.store.get_assignment(assignment_id)
            if stored is None or stored.node != session.address:
                log.warning("result_for_unknown_assignment", node=session.address, assignment=assignment_id)
            self._ack(session, assignment_id)
            return
        if a.node != session.address:
            log.warning("result_from_wrong_node", node=session.address, assignment=assignment_id)
            return
        task = flight.task
        if not a.state.open:
            self._ack(session, assignment_id)  # duplicate, or late after the lease lapsed
            self._free(session, assignment_id)
            return
        now = self.now_ms()
        if error_kind in (ErrorKind.OUT_OF_MEMORY, ErrorKind.CRASH):
            a = evolve(a, state=AssignmentState.ERRORED, error_kind=error_kind, error=error[:2000], submitted_ms=now)
            self._close_assignment(flight, a, timeout=True)
            self._ack(session, assignment_id)
            self._free(session, assignment_id)
            return
        if error_kind == ErrorKind.INVALID_ARGS:
            result_hash = validation.INVALID_ARGS_HASH
        problem = self._result_problem(task, session.address, result_hash, signature, phashes, error_kind, output)
        if problem:
            # Outvoted, never counted; its signed result is kept as evidence.
            a = evolve(a, state=AssignmentState.ERRORED, error=problem, submitted_ms=now, result_hash=result_hash,
                       signature=signature, output=output, phashes=tuple(phashes))  # fmt: skip
            self._close_assignment(flight, a, timeout=True)
            self._ack(session, assignment_id)
            self._free(session, assignment_id)
            return
        order = 1 + sum(1 for x in flight.assignments.values() if x.state == AssignmentState.SUBMITTED)
        a = evolve(
            a, state=AssignmentState.SUBMITTED, result_hash=result_hash, signature=signature, output=output,
            output_slots=tuple(output_slots), phashes=tuple(phashes), submission_order=order, submitted_ms=now,
            stats=stats or {}, error_kind=error_kind, error=error[:2000],
        )  # fmt: skip
        flight.assignments[a.assignment_id] = a
        self._judge(flight, changed=[a])
        self._ack(session, assignment_id)
        self._free(session, assignment_id)
        if error_kind is None:
            self.pricer.observe(flight.task, a, session.record.caps.card.name)

    def _ack(self, session: NodeSession, assignment_id: str) -> None:
        """Acknowledges a result or error report once what it changed is durable: the node drops its
        copy on the ack, so an ack sent before the commit could lose a finished result in a crash."""
        delay = self.settings.ack_delay_s
        self.store.after_commit(lambda: session.ack(assignment_id, delay))

    def _free(self, session: NodeSession, assignment_id: str) -> None:
        if session.release(assignment_id):
            self._candidate(session)
            state = session.record.state
            if session.busy:
                pass  # a pending pause or quit waits for the node's last assignment
            elif state == NodeState.PENDING_PAUSE:
                self.set_node_state(session.address, NodeState.PAUSED, "paused after its task")
            elif state == NodeState.PENDING_QUIT:
                self.set_node_state(session.address, NodeState.QUIT, "quit after its task")
                session.send(DrainMsg("quit"))
        self.wake()

    def _cancel_open(self, flight: InFlight, reason: str) -> None:
        changed = []
        for a in flight.assignments.values():
            if a.state.open:
                session = self.nodes.get(a.node)
                if session is not None:
                    session.send(CancelMsg(a.assignment_id, a.task_id, reason))
                    if session.release(a.assignment_id):
                        self._candidate(session)
                changed.append(evolve(a, state=AssignmentState.EXPIRED, error=reason))
        for a in changed:
            flight.assignments[a.assignment_id] = a
        if changed:
            self.store.save_assignments(changed)
        self._needs_node.pop(flight.task.task_id, None)

    def _close_assignment(self, flight: InFlight, a: Assignment, *, timeout: bool) -> None:
        flight.assignments[a.assignment_id] = a
        self.store.save_assignments([a])
        if timeout and self.qos is not None:
            session = self.nodes.get(a.node)
            record = session.record if session else self.store.get_node(a.node)
            if record is not None:
                self._save_qos(record, self.qos.on_timeout(record, self.now_ms()))
        log.info("assignment_closed", task_id=a.task_id, node=a.node, state=a.state.value, error=a.error)
        self._refresh_need(flight)
        self._maybe_finish(flight)
        self.wake()

    def _refresh_need(self, flight: InFlight) -> None:
        task_id = flight.task.task_id
        if flight.task.state != TaskState.DISPATCHED:
            if self._confirm_pending(flight):  # a minority result waits for one confirming re-run (judging)
                self._needs_node[task_id] = 1
            else:
                self._needs_node.pop(task_id, None)
            return
        missing = self.settings.group_size - len(flight.live())
        if missing > 0:
            self._needs_node[task_id] = missing
        else:
            self._needs_node.pop(task_id, None)

    def _maybe_finish(self, flight: InFlight) -> None:
        """Once the outcome is final and no assignment is open, hand the task to settlement."""
        task = flight.task
        if task.state == TaskState.DISPATCHED or any(a.state.open for a in flight.assignments.values()):
            return
        if self._confirm_pending(flight):
            return
        self.inflight.pop(task.task_id, None)
        self._needs_node.pop(task.task_id, None)
        for assignment_id in flight.assignments:
            self._by_assignment.pop(assignment_id, None)
        self._recovered.difference_update(flight.assignments)
        assigns = sorted(flight.assignments.values(), key=lambda a: a.leased_ms)
        if self.qos is not None and task.state == TaskState.VALIDATED:
            self._score(task, assigns)
        self.store.after_commit(lambda: self._finished(task, assigns))

    def _finished(self, task: Task, assigns: list[Assignment]) -> None:
        """Settlement and the outcome hooks hear of a final outcome only once it is durable."""
        self.settlement.task_finished(task, assigns)
        for cb in self.on_outcome:
            cb("finished", task, assigns)
