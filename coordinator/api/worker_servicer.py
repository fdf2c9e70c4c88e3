"""WorkerService: one bidirectional stream per node. Thin: the protocol steps are
converted here and handled by the dispatcher and membership services."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import structlog
from eth_utils import is_address, keccak, to_checksum_address

from coordinator.domain import serde
from coordinator.domain.models import evolve
from coordinator.errors import CoordinatorError, InvalidArgument, ResourceExhausted, Unauthenticated
from coordinator.service.dispatcher import Dispatcher, NodeSession
from coordinator.service.membership import Membership
from helium.v1 import worker_pb2, worker_pb2_grpc

__all__ = ["WorkerServicer"]

log = structlog.get_logger("coordinator.worker_stream")
_CLOSE = object()


class WorkerServicer(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, dispatcher: Dispatcher, membership: Membership, coordinator_address: str,
                 relay_address: str = "", handshake_timeout_s: float = 30.0, *,
                 max_inline_output_bytes: int = 8 << 20, max_heartbeats_per_s: int = 50) -> None:  # fmt: skip
        self.dispatcher = dispatcher
        self.membership = membership
        self.coordinator_address = coordinator_address
        self.relay_address = relay_address
        self.handshake_timeout_s = handshake_timeout_s
        # Stream limits: a node past them is disconnected with RESOURCE_EXHAUSTED (an honest worker sends
        # outputs over 1 MiB through the relay, and heartbeats every few seconds or on a change).
        self.max_inline_output_bytes = max_inline_output_bytes
        self.max_heartbeats_per_s = max_heartbeats_per_s

    async def _next(self, it, expect: str):
        try:
            msg = await asyncio.wait_for(it.__anext__(), timeout=self.handshake_timeout_s)
        except StopAsyncIteration:
            raise InvalidArgument(f"stream ended before {expect}", expect) from None
        except TimeoutError:
            raise Unauthenticated(f"no {expect} within {self.handshake_timeout_s:.0f} s") from None
        if msg.WhichOneof("msg") != expect:
            raise InvalidArgument(f"expected {expect}, got {msg.WhichOneof('msg')}", expect)
        return getattr(msg, expect)

    async def Connect(self, request_iterator, context):
        it = request_iterator.__aiter__()
        hello = await self._next(it, "hello")
        if not is_address(hello.address):
            raise InvalidArgument(f"hello.address must be an address, got {hello.address!r}", "hello.address")
        address = to_checksum_address(hello.address)
        structlog.contextvars.bind_contextvars(node=address)
        nonce = secrets.token_bytes(32)
        d = self.dispatcher.domain
        yield worker_pb2.ConnectResponse(challenge=worker_pb2.Challenge(
            nonce=nonce, coordinator=self.coordinator_address, chain_id=d.chain_id,
            verifying_contract=d.verifying_contract))  # fmt: skip
        reg = await self._next(it, "register")
        if reg.info.address and to_checksum_address(reg.info.address) != address:
            raise Unauthenticated(f"register.info.address {reg.info.address} differs from hello.address {address}")
        info_hash = keccak(reg.info.SerializeToString(deterministic=True))
        caps = serde.caps_from_info(reg.info, self.dispatcher.settings.max_assignments_per_node)
        session = await self.membership.register(address, nonce, info_hash, reg.signature, caps)
        session.batches = hello.accepts_batches
        yield worker_pb2.ConnectResponse(registered=worker_pb2.Registered(accepts_batches=True,
            address=address, heartbeat_interval_ms=int(self.dispatcher.settings.heartbeat_interval_s * 1000),
            idle_heartbeat_interval_ms=int(self.dispatcher.settings.idle_heartbeat_interval_s * 1000),
            relay_address=self.relay_address, state=serde.NODE_STATE_TO_PB[session.record.state],
            chain_id=d.chain_id, verifying_contract=d.verifying_contract))  # fmt: skip
        reader = asyncio.create_task(self._read(it, session))
        reader.add_done_callback(lambda _: session.outbox.put_nowait(_CLOSE))
        # A newer stream of the same key replaces this session (NodeRegistry.attach): this stream ends then,
        # so one key never keeps two live streams.
        replaced = asyncio.create_task(session.closed.wait())
        replaced.add_done_callback(lambda _: session.outbox.put_nowait(_CLOSE))
        try:
            while True:
                msg = await session.outbox.get()
                if msg is _CLOSE or not session.connected:
                    break
                if not session.batches or session.outbox.empty():
                    yield serde.outgoing_to_pb(msg)
                    continue
                # What became ready together (an ack and the next assignment, say) goes in one message.
                batch, closing = [msg], False
                while not session.outbox.empty():
                    more = session.outbox.get_nowait()
                    if more is _CLOSE:
                        closing = True
                        break
                    batch.append(more)
                yield serde.outgoing_batch_to_pb(batch) if len(batch) > 1 else serde.outgoing_to_pb(msg)
                if closing:
                    break
            if reader.done() and not reader.cancelled() and isinstance(reader.exception(), CoordinatorError):
                raise reader.exception()  # a stream limit: the node hears why (RESOURCE_EXHAUSTED)
        finally:
            reader.cancel()
            replaced.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.dispatcher.detach(session, "stream closed")

    async def _read(self, it, session: NodeSession) -> None:
        window, beats = 0.0, 0
        # A worker heartbeats at most once an interval: a coordinator set to very short intervals allows more.
        limit = max(self.max_heartbeats_per_s, int(10 / max(self.dispatcher.settings.heartbeat_interval_s, 1e-3)))
        async for req in it:
            for inner in req.batch.messages if req.WhichOneof("msg") == "batch" else (req,):
                kind = inner.WhichOneof("msg")
                if kind == "heartbeat":
                    now = time.monotonic()
                    window, beats = (window, beats + 1) if now - window < 1.0 else (now, 1)
                    if beats > limit:
                        raise self._limit(session, f"heartbeat flood: more than {limit} heartbeats in one second")
                elif kind == "result" and len(inner.result.inline_output) > self.max_inline_output_bytes:
                    raise self._limit(session, f"result.inline_output is {len(inner.result.inline_output)} bytes, "
                                      f"over the limit of {self.max_inline_output_bytes} (send it through the relay)")
                self._handle(inner, session)

    @staticmethod
    def _limit(session: NodeSession, message: str) -> ResourceExhausted:
        log.warning("node_stream_limit", node=session.address, error=message)
        exc = ResourceExhausted(message)
        exc.reason = "stream_limit"
        return exc

    def _handle(self, req: worker_pb2.ConnectRequest, session: NodeSession) -> None:
        d = self.dispatcher
        kind = req.WhichOneof("msg")
        if kind == "heartbeat":
            hb = req.heartbeat
            caps = session.record.caps
            caps = evolve(caps, free_vram_bytes=hb.free_vram_bytes,
                          loaded_models=tuple(hb.loaded_models) or caps.loaded_models)  # fmt: skip
            d.heartbeat(session, caps, list(hb.running_assignments))
        elif kind == "started":
            d.started(session, req.started.assignment_id)
        elif kind == "result":
            r = req.result
            stats = {"prompt_tokens": r.stats.prompt_tokens, "completion_tokens": r.stats.completion_tokens,
                     "images": r.stats.images, "steps": r.stats.steps, "exec_ms": r.stats.exec_ms,
                     "exec_us": r.stats.exec_us}  # fmt: skip
            d.submit(session, r.assignment_id, r.result_hash, r.signature, output=r.inline_output,
                     output_slots=list(r.output_slots), phashes=list(r.phashes), stats=stats)  # fmt: skip
        elif kind == "error":
            e = req.error
            d.submit(session, e.assignment_id, b"", e.signature, error_kind=serde.ERROR_KIND_FROM_PB[e.kind],
                     error=e.message)  # fmt: skip
        elif kind == "delta":
            d.delta(session, req.delta.task_id, req.delta.seq, req.delta.chunk_json)
        else:  # a batch inside a batch included
            log.warning("unexpected_stream_message", kind=kind)

    async def ControlNode(self, request, context):
        if not is_address(request.address):
            raise InvalidArgument(f"address must be an address, got {request.address!r}", "address")
        address = to_checksum_address(request.address)
        structlog.contextvars.bind_contextvars(node=address)
        record = self.membership.control(address, int(request.action), int(request.timestamp), request.signature)
        state = self.dispatcher.node_view_state(record)
        return worker_pb2.ControlNodeResponse(state=serde.NODE_STATE_TO_PB[state])
