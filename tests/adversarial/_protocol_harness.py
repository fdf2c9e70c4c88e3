"""A scripted node for the protocol attacks: it speaks WorkerService.Connect on a real gRPC stream message
by message (hello, challenge, signed register, then whatever the attack sends), so a test can send what an
honest `WorkerNode` never would: a result signed for another task or by another key, one for another
node's assignment, a late one, an oversize one, a heartbeat flood, a second stream for the same key.

    x = RawNode(net.address)
    await x.join()
    a = await x.next("assignment")
    await x.send(result=x.honest_result(a))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace

import grpc
from eth_account import Account
from eth_utils import keccak

from chain import signing
from helium.v1 import card_pb2, task_pb2, worker_pb2, worker_pb2_grpc
from worker.testing import InstantExecutor

__all__ = ["CARD", "VRAM", "RawNode", "eventually"]

CARD = "Test Card 24GB"  # the card of tests.adversarial.conftest's honest nodes: any three form a group
VRAM = 24 << 30
_EOF = object()


class RawNode:
    """One node key on one raw Connect stream. Incoming messages (batches flattened) wait in a queue."""

    def __init__(self, address: str, key=None, *, card: str = CARD, vram: int = VRAM) -> None:
        self.target = address
        self.key = key or Account.create()
        self.address = self.key.address
        self.card, self.vram = card, vram
        self.channel = grpc.aio.insecure_channel(address)
        self.call = None
        self.domain: signing.Domain | None = None
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.acks: list[str] = []
        self.ended: grpc.StatusCode | None = None  # the stream's status once the coordinator ended it
        self._reader: asyncio.Task | None = None

    def info(self) -> worker_pb2.NodeInfo:
        return worker_pb2.NodeInfo(
            address=self.address, card=card_pb2.Card(name=self.card, vram_bytes=self.vram),
            free_vram_bytes=self.vram, backends=["instant"], worker_version="attack",
            task_types=[task_pb2.TASK_TYPE_GPT, task_pb2.TASK_TYPE_SD],
            dtypes=["auto", "bfloat16", "float16", "float32"], quantize_bits=[4, 8], device="cpu", max_assignments=1,
        )  # fmt: skip

    async def join(self, timeout: float = 10) -> worker_pb2.Registered:
        """hello -> challenge -> signed register -> registered; a refusal raises grpc.aio.AioRpcError."""
        self.call = worker_pb2_grpc.WorkerServiceStub(self.channel).Connect()
        await self.call.write(worker_pb2.ConnectRequest(hello=worker_pb2.Hello(address=self.address,
                                                                               accepts_batches=True)))  # fmt: skip
        ch = (await self._read_now(timeout)).challenge
        self.domain = signing.Domain(ch.chain_id, ch.verifying_contract or signing.ZERO_ADDRESS)
        info = self.info()
        sig = signing.sign_register(self.key, self.domain, ch.nonce, keccak(info.SerializeToString(deterministic=True)))
        await self.call.write(worker_pb2.ConnectRequest(register=worker_pb2.Register(info=info, signature=sig)))
        reg = (await self._read_now(timeout)).registered
        if reg.chain_id:  # every later signature uses the domain Registered names, as a worker's do
            self.domain = signing.Domain(reg.chain_id, reg.verifying_contract or signing.ZERO_ADDRESS)
        self._reader = asyncio.create_task(self._read_all())
        return reg

    async def _read_now(self, timeout: float) -> worker_pb2.ConnectResponse:
        msg = await asyncio.wait_for(self.call.read(), timeout)
        if msg is grpc.aio.EOF:
            raise ConnectionError(f"stream of {self.address} ended during the handshake")
        return msg

    async def _read_all(self) -> None:
        try:
            while (msg := await self.call.read()) is not grpc.aio.EOF:
                for m in msg.batch.messages if msg.WhichOneof("msg") == "batch" else (msg,):
                    if m.WhichOneof("msg") == "ack":
                        self.acks.append(m.ack.assignment_id)
                    self.inbox.put_nowait(m)
            self.ended = await self.call.code()
        except grpc.aio.AioRpcError as exc:
            self.ended = exc.code()
        self.inbox.put_nowait(_EOF)

    async def next(self, kind: str, timeout: float = 15):
        """The next incoming message of `kind` ("assignment", "ack", "disconnect"...), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), max(0.01, deadline - time.monotonic()))
            if msg is _EOF:
                self.inbox.put_nowait(_EOF)
                raise ConnectionError(f"stream of {self.address} ended ({self.ended}) before a {kind}")
            if msg.WhichOneof("msg") == kind:
                return getattr(msg, kind)

    async def send(self, **msg) -> None:
        await self.call.write(worker_pb2.ConnectRequest(**msg))

    async def closed(self, timeout: float = 10) -> grpc.StatusCode | None:
        """Waits until the coordinator ends the stream; its status code."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.ended

    def honest_result(self, a: worker_pb2.WorkAssignment, *, task_id: str | None = None, key=None,
                      assignment_id: str | None = None) -> worker_pb2.Result:  # fmt: skip
        """The result an honest GPT node returns for `a`, signed by `key` (default this node's) over `task_id`
        (default a's task); sent under `assignment_id` (default a's)."""
        job = SimpleNamespace(spec=a.args.gpt, task_id=a.task_id, on_delta=None, is_cancelled=lambda: False)
        out = InstantExecutor("gpt").run(job)
        tid = task_id or a.task_id
        sig = signing.sign_result(key or self.key, self.domain, bytes.fromhex(tid[2:]), out.result_hash)
        return worker_pb2.Result(assignment_id=assignment_id or a.assignment_id, task_id=a.task_id,
                                 result_hash=out.result_hash, signature=sig, inline_output=out.output)  # fmt: skip

    async def close(self) -> None:
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 2)
        await self.channel.close()


async def eventually(check, timeout: float = 10, every: float = 0.05):
    """Polls `check()` until it is truthy; its last value (a failing assert shows what it was)."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        await asyncio.sleep(every)
    return value
