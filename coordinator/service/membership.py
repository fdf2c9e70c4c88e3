"""Node membership: joining by signed challenge with a stake check, and the node
lifecycle (pause, resume, quit, kick-out) from signed node requests or the admin."""

from __future__ import annotations

import time

import structlog

from chain import signing
from coordinator.domain.models import NodeCaps, NodeRecord, NodeState
from coordinator.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from coordinator.service import hooks
from coordinator.service.dispatcher import Dispatcher, NodeSession
from coordinator.service.messages import DrainMsg

__all__ = ["Membership", "NodeAction"]

log = structlog.get_logger("coordinator.membership")


class NodeAction:
    PAUSE = 1
    RESUME = 2
    QUIT = 3


class Membership:
    def __init__(self, dispatcher: Dispatcher, stakes: hooks.StakeCheck, *, window_s: int = 60,
                 on_kick=None) -> None:  # fmt: skip
        self.dispatcher = dispatcher
        self.stakes = stakes
        self.window_s = window_s
        # Called with the node address when the coordinator kicks a node out (returns its stake on chain).
        self.on_kick = on_kick

    async def register(
        self, address: str, challenge: bytes, info_hash: bytes, signature: bytes, caps: NodeCaps
    ) -> NodeSession:
        try:
            signer = signing.register_signer(self.dispatcher.domain, challenge, address, info_hash, signature)
        except (signing.SignatureError, ValueError) as exc:
            raise Unauthenticated(f"register.signature: {exc}") from exc
        if signer != address:
            raise Unauthenticated(f"register.signature: recovered {signer}, but the node says it is {address}")
        stored = self.dispatcher.store.get_node(address)
        if stored is not None and stored.state.banned:
            raise PermissionDenied(f"node {address} is {stored.state.value}: {stored.reason}")
        await self.stakes.check(address)
        return self.dispatcher.attach(address, caps)

    def control(self, address: str, action: int, timestamp: int, signature: bytes) -> NodeRecord:
        """A node's own signed pause / resume / quit."""
        now = time.time()
        if abs(now - timestamp) > self.window_s:
            skew = timestamp - now
            raise Unauthenticated(f"timestamp {timestamp} is outside the {self.window_s} s window: the node's clock is "
                                  f"{abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the coordinator's clock; "
                                  "sync it (NTP)")  # fmt: skip
        try:
            signer = signing.node_control_signer(self.dispatcher.domain, address, action, timestamp, signature)
        except (signing.SignatureError, ValueError) as exc:
            raise Unauthenticated(f"signature: {exc}") from exc
        if signer != address:
            raise PermissionDenied(f"signature: signed by {signer}, who may not control node {address}")
        return self.apply(address, action, "by the node")

    def apply(self, address: str, action: int, who: str) -> NodeRecord:
        d = self.dispatcher
        record = d.nodes[address].record if address in d.nodes else d.store.get_node(address)
        if record is None:
            raise NotFound(f"node {address} not found")
        if record.state.banned:
            raise FailedPrecondition(f"node {address} is {record.state.value}")
        session = d.nodes.get(address)
        busy = session is not None and session.busy
        if action == NodeAction.PAUSE:
            state = NodeState.PENDING_PAUSE if busy else NodeState.PAUSED
        elif action == NodeAction.RESUME:
            if record.state not in (NodeState.PAUSED, NodeState.PENDING_PAUSE):
                raise FailedPrecondition(f"node {address} is {record.state.value}, not paused")
            state = NodeState.AVAILABLE
        elif action == NodeAction.QUIT:
            state = NodeState.PENDING_QUIT if busy else NodeState.QUIT
        else:
            raise InvalidArgument(f"action must be pause, resume or quit, got {action}", "action")
        record = d.set_node_state(address, state, f"{state.value} {who}")
        if state == NodeState.QUIT and session is not None:
            session.send(DrainMsg("quit"))
        return record

    async def kick(self, address: str, reason: str) -> NodeRecord:
        record = self.dispatcher.set_node_state(address, NodeState.KICKED_OUT, reason or "kicked out by the operator")
        if self.on_kick is not None:
            await self.on_kick(address)
        return record
