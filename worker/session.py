"""One node's stream to the coordinator: register, heartbeat, execute, deliver, reconnect.

A `WorkerNode` is one GPU (or the CPU / Apple MPS device) with its own
Ethereum key and its own `WorkerService.Connect` stream:

    hello -> challenge -> Register (signed over the challenge and NodeInfo) -> Registered
    then: heartbeats every interval; assignments -> Started -> Result | ErrorReport -> Ack;
    CancelAssignment, Drain and Disconnect from the coordinator.

Delivery is at-least-once: every Result and ErrorReport waits in an outbox
until the coordinator acknowledges it, and the outbox is sent again after every
reconnect, so a dropped stream never loses a finished result. The outbox is a
journal on disk (worker._outbox), written before each send, so a killed worker
sends it again after its restart. A task keeps running while the stream is down.

Reconnects use jittered exponential backoff (tenacity), bounded in attempts
and total time; each attempt is bounded by `connect_timeout`. A refusal the
coordinator means (bad signature, no stake, a Disconnect) is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import structlog
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

import helium
from chain import signing
from helium.v1 import worker_pb2, worker_pb2_grpc
from worker import metrics
from worker._conn import Conn, status_error, status_error_from
from worker._jobs import JobRunner
from worker._relay import RelayFactory, RelayLike, default_relay_factory
from worker.config import WorkerConfig
from worker.device import NodeProfile
from worker.errors import ConnectError
from worker.executors.base import Executor
from worker.transport import diagnose_unreachable, make_channel

__all__ = ["NodeProfile", "RelayLike", "WorkerNode", "default_relay_factory"]

log = structlog.get_logger("worker")

_CLOSE_GRACE_S = 2.0


class WorkerNode:
    """One node: `await node.run()` serves until drained, closed or refused.

    `async with WorkerNode(...) as node:` starts `run()` in the background, returns once the node is
    registered, and closes it on exit. `await node.drain()` finishes the work in hand, delivers it and
    leaves. `run()` raises `ConnectError` when the node is refused or its reconnects are exhausted.
    """

    def __init__(
        self,
        config: WorkerConfig,
        key: LocalAccount,
        executors: Sequence[Executor],
        *,
        profile: NodeProfile | None = None,
        channel: grpc.aio.Channel | None = None,
        relay_factory: RelayFactory | None = None,
        on_ready: Callable[[WorkerNode], None] | None = None,
        worker_version: str = helium.__version__,
    ) -> None:
        self.config = config
        self.key = key
        self.address: str = key.address
        self.profile = profile or NodeProfile(card_name="cpu", vram_bytes=0, device="cpu")
        self.worker_version = worker_version
        self._shared_channel = channel
        self._relay_factory = relay_factory or default_relay_factory
        self._on_ready = on_ready
        self.domain: signing.Domain | None = None
        self.state: int = worker_pb2.NODE_STATE_UNSPECIFIED
        self.relay_address = ""
        self.registrations = 0
        self.log = log.bind(node=self.address)
        self.jobs = JobRunner(self, executors)
        self._conn: Conn | None = None
        self._closing: asyncio.Event | None = None
        self._registered: asyncio.Event | None = None
        self._connected: asyncio.Event | None = None
        self._fatal: ConnectError | None = None
        self._draining = False
        self._drain_task: asyncio.Task | None = None
        self._run_task: asyncio.Task | None = None
        self._finished: asyncio.Event | None = None

    # --- public lifecycle -----------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def connected(self) -> bool:
        """True while a registered stream is up."""
        return self._conn is not None

    @property
    def registered(self) -> asyncio.Event:
        self._events()
        assert self._registered is not None
        return self._registered

    async def __aenter__(self) -> WorkerNode:
        self._run_task = asyncio.create_task(self.run(), name=f"worker-node-{self.address}")
        waiter = asyncio.create_task(self.registered.wait())
        timeout = self.config.connect_timeout.total_seconds() * 3
        done, _ = await asyncio.wait({waiter, self._run_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            if self._run_task in done:
                self._run_task.result()
                raise ConnectError("node stopped before it registered")
            await self.close()
            raise ConnectError(f"node not registered within {timeout:.0f}s")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Connects and serves until the node is drained or closed; reconnects in between."""
        self._events()
        assert self._closing is not None and self._finished is not None
        self.jobs.start()
        try:
            while not self._closing.is_set():
                await self._connect_with_retries()
                if self._fatal is not None:
                    raise self._fatal
                if not self._closing.is_set():
                    await self._sleep_unless_closing(random.uniform(0, self.config.reconnect_initial.total_seconds()))
        finally:
            self._closing.set()
            await self.jobs.stop()
            self._finished.set()

    async def drain(self, reason: str = "drain", *, notify_coordinator: bool = True) -> None:
        """Takes no new task, finishes the one in hand, waits (bounded) for its ack, then closes.

        With `notify_coordinator`, first tells the coordinator (signed ControlNode QUIT) to stop
        assigning to this node.
        """
        self._events()
        if self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain(reason, notify_coordinator))
        await asyncio.shield(self._drain_task)

    async def close(self) -> None:
        """Stops now: ends the stream and abandons queued work (the current task's cancel flag is set)."""
        self._events()
        assert self._closing is not None
        self._closing.set()
        self.jobs.cancel_all()
        if self._run_task is not None and self._run_task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, ConnectError):
                try:
                    await asyncio.wait_for(asyncio.shield(self._run_task), _CLOSE_GRACE_S * 2)
                except TimeoutError:
                    self._run_task.cancel()
                    await self._run_task

    def send(self, msg: worker_pb2.ConnectRequest) -> bool:
        """Queues `msg` on the current stream; False when there is none (it is then dropped)."""
        if self._conn is None:
            return False
        self._conn.send(msg)
        return True

    async def relay(self) -> RelayLike:
        """The relay client of the current stream, waiting (bounded) for a stream if there is none."""
        self._events()
        assert self._connected is not None
        await asyncio.wait_for(self._connected.wait(), self.config.connect_timeout.total_seconds() * 3)
        conn = self._conn
        if conn is None or self.domain is None:
            raise ConnectError("no stream to the coordinator")
        if conn.relay is None:
            conn.relay = self._relay_factory(conn.relay_channel or conn.channel, self.key, self.domain)
        return conn.relay

    # --- connection -----------------------------------------------------------------------------

    def _events(self) -> None:
        if self._closing is None:
            self._closing = asyncio.Event()
            self._registered = asyncio.Event()
            self._connected = asyncio.Event()
            self._finished = asyncio.Event()

    async def _sleep_unless_closing(self, seconds: float) -> None:
        assert self._closing is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _connect_with_retries(self) -> None:
        cfg = self.config
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.reconnect_max_attempts) | stop_after_delay(cfg.reconnect_max_time),
            wait=wait_random_exponential(multiplier=cfg.reconnect_initial.total_seconds(),
                                         max=cfg.reconnect_max.total_seconds()),
            retry=retry_if_exception(lambda e: isinstance(e, ConnectError) and e.retryable),
            sleep=self._sleep_unless_closing,
            before_sleep=lambda rs: self.log.warning(
                "reconnect_backoff", attempt=rs.attempt_number, error=str(rs.outcome.exception()),
                sleep_s=round(rs.next_action.sleep, 3) if rs.next_action else None),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._attempt()

    async def _attempt(self) -> None:
        """One connection attempt and, once registered, the life of that stream."""
        assert self._closing is not None
        if self._closing.is_set():
            return
        session = asyncio.create_task(self._session())
        closer = asyncio.create_task(self._closing.wait())
        done, _ = await asyncio.wait({session, closer}, return_when=asyncio.FIRST_COMPLETED)
        if session in done:
            closer.cancel()
            return session.result()
        try:  # closing: a registered session ends its stream itself; a connecting one is abandoned
            await asyncio.wait_for(session, _CLOSE_GRACE_S * 1.5)
        except (TimeoutError, ConnectError, asyncio.CancelledError):
            pass

    def _new_channel(self, target: str) -> grpc.aio.Channel:
        cfg = self.config
        return make_channel(target, tls_ca=cfg.tls_ca, insecure=cfg.insecure, server_name=cfg.tls_server_name,
                            keepalive_time=cfg.keepalive_time, keepalive_timeout=cfg.keepalive_timeout)

    async def _session(self) -> None:
        cfg = self.config
        timeout = cfg.connect_timeout.total_seconds()
        channel = self._shared_channel or self._new_channel(cfg.coordinator)
        relay_channel: grpc.aio.Channel | None = None
        call = None
        try:
            try:
                await asyncio.wait_for(channel.channel_ready(), timeout)
            except TimeoutError:  # one probe says why: DNS, refused, no answer, TLS, not gRPC
                raise await diagnose_unreachable(cfg.coordinator, tls_ca=cfg.tls_ca, server_name=cfg.tls_server_name,
                                                 waited_s=timeout) from None  # fmt: skip
            # Fresh capabilities for every registration, read before the handshake clock starts (may scan caches).
            info = await asyncio.to_thread(self.jobs.node_info)
            call = worker_pb2_grpc.WorkerServiceStub(channel).Connect()
            try:
                registered = await asyncio.wait_for(self._handshake(call, info), timeout)
            except TimeoutError:
                raise ConnectError(f"registration with {cfg.coordinator} timed out after {timeout:g}s") from None
            except grpc.aio.AioRpcError as exc:
                raise status_error(exc, "register") from exc
            if registered.relay_address and registered.relay_address != cfg.coordinator:
                relay_channel = self._new_channel(registered.relay_address)
            conn = Conn(call, channel, relay_channel)
            await self._serve(conn, registered)
        finally:
            if self._conn is not None:
                metrics.set_connected(self.address, False)
            self._conn = None
            if self._connected is not None:
                self._connected.clear()
            if call is not None:
                call.cancel()
            for ch in (relay_channel, None if channel is self._shared_channel else channel):
                if ch is not None:
                    await ch.close(grace=None)

    async def _handshake(self, call: Any, info: worker_pb2.NodeInfo) -> worker_pb2.Registered:
        await call.write(worker_pb2.ConnectRequest(
            hello=worker_pb2.Hello(address=self.address, worker_version=self.worker_version, accepts_batches=True)))
        first = await self._read_handshake(call, "challenge")
        challenge = first.challenge
        if len(challenge.nonce) != 32:
            raise ConnectError(f"challenge.nonce must be 32 bytes, got {len(challenge.nonce)}", retryable=False)
        domain = signing.Domain(challenge.chain_id, challenge.verifying_contract or signing.ZERO_ADDRESS)
        info_hash = keccak(info.SerializeToString(deterministic=True))
        signature = signing.sign_register(self.key, domain, challenge.nonce, info_hash)
        await call.write(worker_pb2.ConnectRequest(register=worker_pb2.Register(info=info, signature=signature)))
        second = await self._read_handshake(call, "registered")
        registered = second.registered
        if registered.chain_id:
            domain = signing.Domain(registered.chain_id, registered.verifying_contract or signing.ZERO_ADDRESS)
        self.domain = domain
        return registered

    async def _read_handshake(self, call: Any, expected: str) -> worker_pb2.ConnectResponse:
        msg = await call.read()
        if msg is grpc.aio.EOF:
            raise status_error_from(await call.code(), await call.details(), expected)
        kind = msg.WhichOneof("msg")
        if kind == "disconnect":
            raise self._disconnected(msg.disconnect)
        if kind != expected:
            raise ConnectError(f"expected {expected} from the coordinator, got {kind}")
        return msg

    def _disconnected(self, d: worker_pb2.Disconnect) -> ConnectError:
        state = worker_pb2.NodeState.Name(d.state)
        self.log.error("node_disconnected", state=state, reason=d.reason)
        return ConnectError(f"coordinator disconnected the node ({state}): {d.reason or 'no reason given'}",
                            retryable=False)

    async def _serve(self, conn: Conn, registered: worker_pb2.Registered) -> None:
        assert self._closing is not None and self._registered is not None and self._connected is not None
        self.state = registered.state
        self.relay_address = registered.relay_address
        interval_ms = registered.heartbeat_interval_ms or int(self.config.heartbeat_interval.total_seconds() * 1000)
        conn.batches = registered.accepts_batches
        self._conn = conn
        metrics.set_connected(self.address, True)
        self.registrations += 1
        self.log.info("node_registered", state=worker_pb2.NodeState.Name(registered.state),
                      heartbeat_ms=interval_ms, registrations=self.registrations, outbox=len(self.jobs.outbox))
        first = not self._registered.is_set()
        self._registered.set()
        self._connected.set()
        if first and self._on_ready is not None:
            self._on_ready(self)
        for msg in self.jobs.outbox.values():
            conn.send(msg)
        idle_ms = registered.idle_heartbeat_interval_ms or interval_ms
        tasks = [asyncio.create_task(conn.write_loop()),
                 asyncio.create_task(self._heartbeats(conn, interval_ms, idle_ms))]  # fmt: skip
        reader = asyncio.create_task(self._read_loop(conn))
        closer = asyncio.create_task(self._closing.wait())
        try:
            done, _ = await asyncio.wait({reader, closer}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:  # closing: end our side, let the coordinator end its own
                conn.send(None)  # type: ignore[arg-type]
                with contextlib.suppress(TimeoutError, ConnectError, grpc.aio.AioRpcError):
                    await asyncio.wait_for(asyncio.shield(reader), _CLOSE_GRACE_S)
                return
            reader.result()
        finally:
            for t in (*tasks, reader, closer):
                t.cancel()

    async def _heartbeats(self, conn: Conn, interval_ms: int, idle_ms: int) -> None:
        """Every interval while the node holds an assignment (its lease depends on it); otherwise every
        `idle_ms`, or at the next interval once its free VRAM or loaded models change."""
        last, last_at = None, time.monotonic()
        while True:
            await asyncio.sleep(interval_ms / 1000)
            hb = self.jobs.heartbeat()
            now = time.monotonic()
            if hb.running_assignments or hb != last or (now - last_at) * 1000 >= idle_ms:
                conn.send(worker_pb2.ConnectRequest(heartbeat=hb))
                last, last_at = hb, now

    async def _read_loop(self, conn: Conn) -> None:
        assert self._closing is not None
        while True:
            try:
                msg = await conn.call.read()
            except grpc.aio.AioRpcError as exc:
                self.log.warning("stream_lost", code=exc.code().name, details=exc.details())
                return self._stream_ended(status_error(exc, "stream"))
            if msg is grpc.aio.EOF:
                code, details = await conn.call.code(), await conn.call.details()
                level = self.log.info if self._closing.is_set() or self._draining else self.log.warning
                level("stream_ended", code=code.name, details=details)
                return self._stream_ended(status_error_from(code, details, "stream"))
            if msg.WhichOneof("msg") == "batch":
                for inner in msg.batch.messages:
                    if self._handle(inner):
                        return
            elif self._handle(msg):
                return

    def _handle(self, msg: worker_pb2.ConnectResponse) -> bool:
        """Acts on one message from the coordinator; True when the stream is to end."""
        assert self._closing is not None
        kind = msg.WhichOneof("msg")
        if kind == "assignment":
            self.jobs.assign(msg.assignment)
        elif kind == "ack":
            self.jobs.acked(msg.ack.assignment_id)
        elif kind == "cancel":
            self.jobs.cancel(msg.cancel.assignment_id, msg.cancel.reason)
        elif kind == "drain":
            self.log.info("drain_requested", reason=msg.drain.reason)
            asyncio.get_running_loop().create_task(self.drain(msg.drain.reason, notify_coordinator=False))
        elif kind == "disconnect":
            d = msg.disconnect
            if self._draining and d.state == worker_pb2.NODE_STATE_QUIT:
                self.log.info("node_quit", reason=d.reason)
            else:
                self._fatal = self._disconnected(d)
                self.jobs.cancel_all()
            self._closing.set()
            return True
        else:  # a batch inside a batch included
            self.log.warning("unexpected_message", kind=kind)
        return False

    def _stream_ended(self, err: ConnectError) -> None:
        assert self._closing is not None
        if self._closing.is_set():
            return
        if not err.retryable:
            self._fatal = err
        elif self._draining and self.jobs.quiet():
            self._closing.set()  # drained and nothing left to deliver: the coordinator let us go

    # --- drain and control -----------------------------------------------------------------------

    async def _drain(self, reason: str, notify: bool) -> None:
        assert self._closing is not None and self._finished is not None
        cfg = self.config
        self._draining = True
        self.log.info("node_draining", reason=reason, running=self.jobs.running_ids())
        if notify:
            await self._control(worker_pb2.NODE_ACTION_QUIT)
        try:
            await asyncio.wait_for(self.jobs.idle(), cfg.drain_timeout.total_seconds())
        except TimeoutError:
            self.log.error("drain_timeout", running=self.jobs.running_ids())
            self.jobs.cancel_all()
        try:
            await asyncio.wait_for(self.jobs.delivered(), cfg.ack_timeout.total_seconds())
        except TimeoutError:
            self.log.error("drain_unacknowledged", outbox=list(self.jobs.outbox))
        self._closing.set()
        if self._run_task is not None or self.jobs.started:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), _CLOSE_GRACE_S * 3)
        self.log.info("node_drained", reason=reason)

    async def pause(self) -> int | None:
        """Asks the coordinator (signed) to stop assigning to this node; a busy node finishes first.
        Returns the node's NodeState as the coordinator answers, or None if it could not be told."""
        return await self._control(worker_pb2.NODE_ACTION_PAUSE)

    async def resume(self) -> int | None:
        """Asks the coordinator (signed) to assign to this node again."""
        return await self._control(worker_pb2.NODE_ACTION_RESUME)

    async def _control(self, action: int) -> int | None:
        """Signed ControlNode (pause / resume / quit) on the node's own key; failures are logged."""
        name = worker_pb2.NodeAction.Name(action)
        if self.domain is None:
            self.log.warning("node_control_skipped", action=name, why="never registered: no signing domain")
            return None
        ts = int(time.time())
        req = worker_pb2.ControlNodeRequest(address=self.address, action=action, timestamp=ts,
                                            signature=signing.sign_node_control(self.key, self.domain, action, ts))
        conn = self._conn
        channel = None
        try:
            channel = conn.channel if conn else (self._shared_channel or self._new_channel(self.config.coordinator))
            resp = await worker_pb2_grpc.WorkerServiceStub(channel).ControlNode(
                req, timeout=min(self.config.rpc_timeout.total_seconds(), 10.0))
            self.state = resp.state
            self.log.info("node_control", action=name, state=worker_pb2.NodeState.Name(resp.state))
            return resp.state
        except grpc.aio.AioRpcError as exc:
            self.log.warning("node_control_failed", action=name, code=exc.code().name, details=exc.details())
        except ConnectError as exc:
            self.log.warning("node_control_failed", action=name, error=str(exc))
        finally:
            if conn is None and channel is not None and channel is not self._shared_channel:
                await channel.close(grace=None)
        return None
