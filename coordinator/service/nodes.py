"""The dispatcher's node side: live sessions (one per node stream), their states, the
views the selector draws from, and which nodes may have become free.

`NodeRegistry` is a mixin of `Dispatcher`: it shares the dispatcher's state (nodes,
store, QoS hook) and is split out only to keep each module readable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from coordinator.domain.models import (
    NodeCaps,
    NodeRecord,
    NodeState,
    Task,
    TaskType,
    evolve,
)
from coordinator.errors import NotFound
from coordinator.service import hooks
from coordinator.service.messages import AckMsg, DisconnectMsg, DrainMsg, Outgoing

__all__ = ["NodeRegistry", "NodeSession"]

log = structlog.get_logger("coordinator.nodes")

_VIEW_TTL_MS = 1000


@dataclass(eq=False)
class NodeSession:
    """One live stream of a node."""

    record: NodeRecord
    outbox: asyncio.Queue[Outgoing] = field(default_factory=asyncio.Queue)
    # The open assignment ids it holds, oldest first (at most record.caps.max_assignments).
    assigned: dict[str, None] = field(default_factory=dict)
    connected: bool = True
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # The worker reads ConnectResponse batches: what is ready at once goes in one message.
    batches: bool = False
    # The dispatcher's last NodeView of it: (the record it was made from, when, the view or None).
    view: tuple | None = None
    # Acks held back (at most `ack_delay` s) to ride with the next message to the node.
    acks: list[str] = field(default_factory=list)
    _ack_timer: asyncio.TimerHandle | None = None

    @property
    def address(self) -> str:
        return self.record.address

    def send(self, msg: Outgoing) -> None:
        if self.connected:
            if self.acks:
                self.flush_acks()
            self.outbox.put_nowait(msg)

    def ack(self, assignment_id: str, delay_s: float) -> None:
        """Acknowledges a durable result. A node that reads batches gets it with its next message (the
        next assignment, usually) or after `delay_s`, whichever comes first: one stream message less per
        result, and a node keeps an unacknowledged result anyway."""
        if not self.connected:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a commit flushed while the coordinator stops: nothing to wait for
            loop = None
        if not self.batches or delay_s <= 0 or loop is None:
            self.outbox.put_nowait(AckMsg(assignment_id))
            return
        self.acks.append(assignment_id)
        if self._ack_timer is None:
            self._ack_timer = loop.call_later(delay_s, self.flush_acks)

    def flush_acks(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        acks, self.acks = self.acks, []
        if self.connected:
            for assignment_id in acks:
                self.outbox.put_nowait(AckMsg(assignment_id))

    @property
    def free(self) -> bool:
        return (self.connected and len(self.assigned) < self.record.caps.max_assignments
                and self.record.state == NodeState.AVAILABLE)  # fmt: skip

    @property
    def busy(self) -> bool:
        return bool(self.assigned)

    def release(self, assignment_id: str) -> bool:
        """Forgets an assignment the node no longer holds; whether it held it."""
        if assignment_id not in self.assigned:
            return False
        del self.assigned[assignment_id]
        return True


class NodeRegistry:
    def attach(self, address: str, caps: NodeCaps) -> NodeSession:
        """A node passed registration: (re)attach its stream. A newer stream replaces an older one."""
        now = self.now_ms()
        old = self.nodes.get(address)
        if old is not None:
            self._detach(old, "replaced by a new stream")
        stored = self.store.get_node(address)
        state = stored.state if stored else NodeState.AVAILABLE
        if state in (NodeState.DISCONNECTED, NodeState.BUSY, NodeState.QUIT):
            state = NodeState.AVAILABLE
        record = NodeRecord(address, caps, state, stored.qos if stored else {}, now, stored.reason if stored else "")
        self.store.save_node(record)
        session = NodeSession(record)
        self.nodes[address] = session
        self._resume_assignments(session)
        self._candidate(session)
        log.info("node_attached", node=address, card=str(caps.card), state=state.value)
        self.wake()
        return session

    def _resume_assignments(self, session: NodeSession) -> None:
        """Sends a (re)attached node every open assignment it holds, with a fresh lease: a node that kept
        one ignores the copy, one that restarted runs it again, so a coordinator or worker crash strands
        no task until its deadline."""
        now = self.now_ms()
        for flight in self.inflight.values():
            for a in list(flight.assignments.values()):
                if a.node == session.address and a.state.open:
                    # leased_ms too: the heartbeats' grace for a node to report what it was just sent
                    a = flight.assignments[a.assignment_id] = evolve(a, leased_ms=now,
                                                                     lease_expires_ms=now + self.settings.lease_ms)
                    self._recovered.discard(a.assignment_id)  # from here on, a lapse is the node's own
                    self._send_assignment(flight, a)
                    log.info("assignment_resent", task_id=a.task_id, node=session.address)

    def detach(self, session: NodeSession, reason: str) -> None:
        if self.nodes.get(session.address) is session:
            self._detach(session, reason)

    def _detach(self, session: NodeSession, reason: str) -> None:
        session.connected = False
        session.flush_acks()  # a closed stream sends nothing more: this drops held acks and stops the timer
        session.closed.set()
        if self.nodes.get(session.address) is session:
            del self.nodes[session.address]
        log.info("node_detached", node=session.address, reason=reason)

    def heartbeat(self, session: NodeSession, caps: NodeCaps, running: Sequence[str]) -> None:
        """Renews the leases of the node's running assignments; an assignment the node no longer runs
        (it restarted) lapses at once."""
        now = self.now_ms()
        session.record = evolve(session.record, caps=caps, last_seen_ms=now)
        for assignment_id in list(session.assigned):
            flight, a = self._find(assignment_id)
            if a is None or flight is None:
                session.release(assignment_id)
                self._candidate(session)
            elif a.assignment_id in running:
                flight.assignments[a.assignment_id] = evolve(a, lease_expires_ms=now + self.settings.lease_ms)
            elif now - a.leased_ms > self.settings.heartbeat_interval_s * 2000:
                # The node is alive but does not hold it: it lost the assignment (restart).
                self._lapse(flight, a, "node no longer runs the assignment")

    def set_node_state(self, address: str, state: NodeState, reason: str = "") -> NodeRecord:
        session = self.nodes.get(address)
        record = session.record if session else self.store.get_node(address)
        if record is None:
            raise NotFound(f"node {address} not found")
        record = record.with_state(state, reason)
        self.store.save_node(record)
        if session is not None:
            session.record = record
            self._candidate(session)
            if state.banned:
                session.send(DisconnectMsg(state, reason))
        log.info("node_state", node=address, state=state.value, reason=reason)
        self.wake()
        return record

    def node_view_state(self, record: NodeRecord) -> NodeState:
        session = self.nodes.get(record.address)
        if record.state == NodeState.AVAILABLE:
            if session is None:
                return NodeState.DISCONNECTED
            if session.busy:
                return NodeState.BUSY
        return record.state

    def drain_all(self, reason: str) -> None:
        for session in list(self.nodes.values()):
            session.send(DrainMsg(reason))

    def _views(self, sessions) -> list[hooks.NodeView]:
        """The draw's view of each free node: with QoS, its weight, or none while it is excluded. A view
        is kept for `_VIEW_TTL_MS` while the record stays the same (H recovers over minutes), so a busy
        dispatcher does not recompute every free node's QoS on every round."""
        now = self.now_ms()
        out = []
        for s in sessions:
            cached = s.view
            if cached is not None and cached[0] is s.record and now - cached[1] < _VIEW_TTL_MS:
                view = cached[2]
            elif self.qos is None:
                view = hooks.NodeView(s.record)
                s.view = (s.record, now, view)
            else:
                ok = self.qos.verdict(s.record, now) == "ok"
                view = hooks.NodeView(s.record, self.qos.qos(s.record, now)) if ok else None
                s.view = (s.record, now, view)
            if view is not None:
                out.append(view)
        return out

    def registered_views(self) -> list[hooks.NodeView]:
        """Every node that may still run tasks (connected or not), cached until a node's state or caps change."""
        version = getattr(self.store, "nodes_shape_version", None)
        if version is None or self._registered[0] != version:
            records = [n for n in self.store.list_nodes() if n.state != NodeState.QUIT and not n.state.banned]
            self._registered = (version, [hooks.NodeView(r) for r in records], {})
        return self._registered[1]

    def can_ever_run(self, task: Task) -> tuple[bool, str]:
        """Whether some group of registered nodes could run `task`; memoized per requirement shape."""
        views = self.registered_views()
        key = (task.type, task.dtype, task.quantize_bits, task.min_vram_bytes, task.card)
        memo = self._registered[2]
        if key not in memo:
            memo[key] = self.selector.can_ever_run(task, views)
        return memo[key]

    def _candidate(self, session: NodeSession) -> None:
        """`session` may have become free: the next round looks at it (rounds never scan every node)."""
        for t in session.record.caps.task_types:
            self._maybe_free.setdefault(t, set()).add(session.address)

    def _free_views(self, task_type: TaskType, cache: dict) -> list[hooks.NodeView]:
        if task_type not in cache:
            sessions = []
            candidates = self._maybe_free.get(task_type, set())
            for address in list(candidates):
                s = self.nodes.get(address)
                if s is None or not s.free:
                    candidates.discard(address)
                else:
                    sessions.append(s)
            cache[task_type] = self._views(sessions)
        return cache[task_type]

    def _save_qos(self, record: NodeRecord, qos_state: dict) -> None:
        record = evolve(record, qos=qos_state)
        session = self.nodes.get(record.address)
        if session is not None:
            session.record = evolve(session.record, qos=qos_state)
        self.store.save_node(record, soon=True)  # scores come per task: merged writes, state changes are not

    def available_models(self) -> list[dict]:
        """Models that connected, available nodes can serve now (loaded or cached on disk)."""
        models: dict[tuple[str, TaskType], dict] = {}
        for s in self.nodes.values():
            if s.record.state not in (NodeState.AVAILABLE, NodeState.BUSY):
                continue
            caps = s.record.caps
            for t in caps.task_types:
                for m in set(caps.loaded_models) | set(caps.cached_models):
                    info = models.setdefault((m, t), {"model": m, "type": t, "cards": set(), "nodes": 0,
                                                      "loaded_nodes": 0})  # fmt: skip
                    info["cards"].add(caps.card)
                    info["nodes"] += 1
                    info["loaded_nodes"] += m in caps.loaded_models
        out = []
        for info in sorted(models.values(), key=lambda i: (i["model"], i["type"].value)):
            info["cards"] = sorted(info["cards"])
            out.append(info)
        return out
