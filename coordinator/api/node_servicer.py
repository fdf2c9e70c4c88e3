"""NodeService: a GPU operator's own view of one node, signed by the node's key (no admin credential).

The node's state and QoS live in the dispatcher's registry; WatchNodeEvents samples the node there once
per `poll_s` and sends a message for each change (pause, resume, kick-out, slash, disconnection, QoS), so
no service code needs a hook for it. Slashes and kick-outs are on chain too: `helium node events` adds
the chain's evidence (task, kind, amount, transaction) to what this stream says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from eth_utils import is_address, to_checksum_address

from chain import signing
from coordinator.domain.models import NodeRecord, NodeState
from coordinator.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from coordinator.service.dispatcher import Dispatcher
from helium.v1 import admin_pb2, node_pb2, node_pb2_grpc

__all__ = ["NodeServicer", "READ_ACTION"]

READ_ACTION = 0  # NODE_ACTION_UNSPECIFIED: a signed read; ControlNode refuses it, so it cannot be replayed


def _reason(record: NodeRecord) -> str:
    """Why the node is in its state; an available or busy node has no reason to give (an old one lingers)."""
    return "" if record.state in (NodeState.AVAILABLE, NodeState.BUSY) else record.reason


class NodeServicer(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, dispatcher: Dispatcher, node_view: Callable[[NodeRecord], admin_pb2.Node], *,
                 window_s: int = 60, poll_s: float = 1.0, max_watch_s: float = 3600.0) -> None:  # fmt: skip
        self.dispatcher = dispatcher
        self.node_view = node_view  # AdminServicer's NodeRecord -> Node, one conversion for both services
        self.window_s = window_s
        self.poll_s = poll_s
        self.max_watch_s = max_watch_s  # a watch ends after this; the client reconnects

    def _authenticate(self, auth: node_pb2.NodeAuth) -> str:
        if not is_address(auth.address):
            raise InvalidArgument(f"auth.address must be a 0x address, got {auth.address!r}", "auth.address")
        address = to_checksum_address(auth.address)
        if abs(time.time() - auth.timestamp) > self.window_s:
            raise Unauthenticated(f"auth.timestamp {auth.timestamp} is outside the {self.window_s} s window")
        try:
            signer = signing.node_control_signer(self.dispatcher.domain, address, READ_ACTION, auth.timestamp,
                                                 auth.signature)  # fmt: skip
        except (signing.SignatureError, ValueError) as exc:
            raise Unauthenticated(f"auth.signature: {exc}") from exc
        if signer != address:
            raise PermissionDenied(f"auth.signature: signed by {signer}, not by node {address}")
        return address

    def _record(self, address: str) -> NodeRecord:
        session = self.dispatcher.nodes.get(address)
        record = session.record if session is not None else self.dispatcher.store.get_node(address)
        if record is None:
            raise NotFound(f"node {address} is not registered with this coordinator (it has never connected)")
        return record

    async def GetNodeStatus(self, request, context):
        address = self._authenticate(request.auth)
        record = self._record(address)
        return node_pb2.GetNodeStatusResponse(node=self.node_view(record), reason=_reason(record))

    async def WatchNodeEvents(self, request, context):
        address = self._authenticate(request.auth)
        step = request.qos_step or 0.01
        record = self._record(address)
        node = self.node_view(record)
        yield node_pb2.WatchNodeEventsResponse(kind=node_pb2.NODE_EVENT_KIND_SNAPSHOT, node=node,
                                               reason=_reason(record), at_ms=self.dispatcher.now_ms())  # fmt: skip
        ends = time.monotonic() + self.max_watch_s
        while time.monotonic() < ends:
            await asyncio.sleep(self.poll_s)
            record = self._record(address)
            now = self.node_view(record)
            if now.state != node.state:
                yield node_pb2.WatchNodeEventsResponse(
                    kind=node_pb2.NODE_EVENT_KIND_STATE, node=now, previous_state=node.state, previous_qos=node.qos,
                    reason=_reason(record), at_ms=self.dispatcher.now_ms(),
                )  # fmt: skip
                node = now
            elif abs(now.qos - node.qos) >= step:
                yield node_pb2.WatchNodeEventsResponse(
                    kind=node_pb2.NODE_EVENT_KIND_QOS, node=now, previous_state=node.state, previous_qos=node.qos,
                    at_ms=self.dispatcher.now_ms(),
                )  # fmt: skip
                node = now
