"""Test helpers (a module of its own so that its name is unique in the suite).

A scripted fake coordinator: a real grpc.aio server on port 0 implementing WorkerService.

It runs the handshake the way the coordinator must (challenge, Register signature
checked with chain.signing, Registered), then hands each stream to the test as a
`FakeStream` the test drives message by message.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import pytest
from eth_account import Account
from eth_utils import keccak

from chain import signing
from helium.v1 import gpt_pb2, task_pb2, worker_pb2, worker_pb2_grpc
from worker.config import WorkerConfig

DOMAIN = signing.Domain(chain_id=31337, verifying_contract="0x" + "ab" * 20)


@dataclass
class _End:
    code: grpc.StatusCode | None = None
    details: str = ""


@dataclass
class FakeStream:
    hello: worker_pb2.Hello
    info: worker_pb2.NodeInfo
    nonce: bytes
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    outq: asyncio.Queue = field(default_factory=asyncio.Queue)
    seen: list = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, **msg) -> None:
        self.outq.put_nowait(worker_pb2.ConnectResponse(**msg))

    def end(self, code: grpc.StatusCode | None = None, details: str = "") -> None:
        self.outq.put_nowait(_End(code, details))

    async def recv(self, kind: str, within: float = 5.0):
        """The next message of `kind` (other kinds are kept in `seen`)."""
        async with asyncio.timeout(within):
            while True:
                msg = await self.inbox.get()
                if msg is None:
                    raise EOFError(f"stream ended while waiting for {kind}")
                self.seen.append(msg)
                if msg.WhichOneof("msg") == kind:
                    return getattr(msg, kind)

    async def nothing(self, kind: str, within: float) -> None:
        """Asserts that no message of `kind` arrives within `within` seconds."""
        with pytest.raises((TimeoutError, EOFError)):
            got = await self.recv(kind, within=within)
            pytest.fail(f"unexpected {kind}: {got}")


class FakeCoordinator(worker_pb2_grpc.WorkerServiceServicer):
    def __init__(self, *, heartbeat_ms: int = 150) -> None:
        self.heartbeat_ms = heartbeat_ms
        self.idle_heartbeat_ms = 0  # Registered.idle_heartbeat_interval_ms; 0: none named
        self.streams: asyncio.Queue[FakeStream] = asyncio.Queue()
        self.attempts = 0
        # Status codes to answer the next Register with, one per connection attempt.
        self.refusals: list[tuple[grpc.StatusCode, str]] = []
        self.controls: list[worker_pb2.ControlNodeRequest] = []
        self.control_seen = asyncio.Event()
        self.bad_signatures = 0

    async def Connect(self, request_iterator, context):  # noqa: N802 - gRPC method name
        self.attempts += 1
        first = await context.read()
        hello = first.hello
        nonce = os.urandom(32)
        await context.write(worker_pb2.ConnectResponse(challenge=worker_pb2.Challenge(
            nonce=nonce, coordinator="fake", chain_id=DOMAIN.chain_id,
            verifying_contract=DOMAIN.verifying_contract)))
        reg = (await context.read()).register
        info_hash = keccak(reg.info.SerializeToString(deterministic=True))
        try:
            signer = signing.register_signer(DOMAIN, nonce, reg.info.address, info_hash, reg.signature)
        except signing.SignatureError:
            signer = ""
        if signer != hello.address or reg.info.address != hello.address:
            self.bad_signatures += 1
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "register signature does not match the address")
        if self.refusals:
            code, details = self.refusals.pop(0)
            await context.abort(code, details)
        await context.write(worker_pb2.ConnectResponse(registered=worker_pb2.Registered(
            address=hello.address, heartbeat_interval_ms=self.heartbeat_ms, state=worker_pb2.NODE_STATE_AVAILABLE,
            idle_heartbeat_interval_ms=self.idle_heartbeat_ms,
            chain_id=DOMAIN.chain_id, verifying_contract=DOMAIN.verifying_contract)))
        stream = FakeStream(hello=hello, info=reg.info, nonce=nonce)
        self.streams.put_nowait(stream)

        async def pump() -> None:
            try:
                while (msg := await context.read()) is not grpc.aio.EOF:
                    stream.inbox.put_nowait(msg)
            except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.aio.UsageError):
                pass
            finally:
                stream.inbox.put_nowait(None)
                stream.closed.set()

        reader = asyncio.create_task(pump())
        try:
            while True:
                out_get = asyncio.create_task(stream.outq.get())
                done, _ = await asyncio.wait({out_get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if out_get not in done:  # the worker ended its side
                    out_get.cancel()
                    return
                item = out_get.result()
                if isinstance(item, _End):
                    if item.code is not None:
                        await context.abort(item.code, item.details)
                    return
                await context.write(item)
        finally:
            reader.cancel()

    async def ControlNode(self, request, context):  # noqa: N802 - gRPC method name
        signer = signing.node_control_signer(DOMAIN, request.address, request.action, request.timestamp,
                                             request.signature)
        if signer != request.address:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad control signature")
        self.controls.append(request)
        self.control_seen.set()
        state = {worker_pb2.NODE_ACTION_PAUSE: worker_pb2.NODE_STATE_PAUSED,
                 worker_pb2.NODE_ACTION_RESUME: worker_pb2.NODE_STATE_AVAILABLE}.get(
                     request.action, worker_pb2.NODE_STATE_PENDING_QUIT)
        return worker_pb2.ControlNodeResponse(state=state)

    async def next_stream(self, within: float = 5.0) -> FakeStream:
        return await asyncio.wait_for(self.streams.get(), within)


def fast_config(coordinator: str, tmp_path, **overrides) -> WorkerConfig:
    values = dict(
        coordinator=coordinator,
        data_dir=tmp_path,
        executor="instant",
        connect_timeout=timedelta(seconds=3),
        reconnect_initial=timedelta(milliseconds=50),
        reconnect_max=timedelta(milliseconds=200),
        reconnect_max_attempts=5,
        reconnect_max_time=timedelta(seconds=10),
        drain_timeout=timedelta(seconds=10),
        ack_timeout=timedelta(seconds=3),
        rpc_timeout=timedelta(seconds=5),
    )
    values.update(overrides)
    return WorkerConfig(**values)


def new_key():
    return Account.create()


def gpt_args(seed: int = 1, model: str = "tiny/gpt") -> task_pb2.TaskArgs:
    return task_pb2.TaskArgs(gpt=gpt_pb2.GptTask(
        model=model, messages=[gpt_pb2.ChatMessage(role="user", content="hi")], seed=seed))


def assignment(args: task_pb2.TaskArgs | None = None, *, aid: str = "a-1", **kw) -> worker_pb2.WorkAssignment:
    args = args if args is not None else gpt_args()
    task_type = task_pb2.TASK_TYPE_SD if args.WhichOneof("kind") == "sd" else task_pb2.TASK_TYPE_GPT
    return worker_pb2.WorkAssignment(assignment_id=aid, task_id="0x" + os.urandom(32).hex(), type=task_type,
                                     args=args, **kw)
