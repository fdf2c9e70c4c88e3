"""Bench support: many idle nodes on real Connect streams, cheaply, in one process.

    python -m bench._idle --coordinator HOST:PORT --nodes 5000 [--per-channel 250] [--deadline 150]

Each node has its own key and its own `WorkerService.Connect` stream and does the
real handshake (Hello -> Challenge -> Register signed over the challenge and its
NodeInfo -> Registered), then sends a Heartbeat every idle interval the coordinator
names (30 s; 5 s while a node holds an assignment, which these never do), spread over the interval. Raw stubs instead of `WorkerNode`s:
no executors, no job loop, no reconnects, so 10,000 fit in a couple of processes.
The nodes advertise SD only on their own card, so GPT tasks never go to them.

Prints on stdout: `progress registered=N` every second while registering, then
`ready nodes=N failed=F seconds=S` (N may be below --nodes when --deadline
passed first), then `stats registered=N heartbeats=H lost=L` every 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

import coincurve
import grpc
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

import helium
from chain import signing
from helium.log import configure_logging
from helium.v1 import card_pb2, task_pb2, worker_pb2, worker_pb2_grpc

VRAM = 24 << 30
READ_TIMEOUT_S = 120.0  # per handshake reply; an overloaded coordinator answers late


def _error_kind(exc: BaseException) -> str:
    """A timed-out read surfaces as CANCELLED (wait_for cancels the call): call both a timeout."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, grpc.aio.AioRpcError):
        return "timeout" if exc.code() == grpc.StatusCode.CANCELLED else exc.code().name
    return type(exc).__name__


def fast_account(private_key: bytes) -> LocalAccount:
    """A LocalAccount whose address comes from coincurve (eth_keys' derivation costs ~0.75 ms a key)."""
    pub = coincurve.PrivateKey(private_key).public_key.format(compressed=False)[1:]
    acct = LocalAccount.__new__(LocalAccount)
    acct._address = to_checksum_address(keccak(pub)[-20:])
    acct._private_key = private_key
    return acct


class Fleet:
    def __init__(self, address: str, nodes: int, per_channel: int, card: str, concurrency: int) -> None:
        self.address = address
        self.count = nodes
        self.card = card
        self.per_channel = per_channel
        self.concurrency = concurrency
        self.channels: list[grpc.aio.Channel] = []
        self.registered = 0
        self.failed = 0
        self.heartbeats = 0
        self.lost = 0
        self.calls: list = []
        self.tasks: list[asyncio.Task] = []
        self.errors: dict[str, int] = {}

    def info(self, acct: LocalAccount) -> worker_pb2.NodeInfo:
        return worker_pb2.NodeInfo(
            address=acct.address, card=card_pb2.Card(name=self.card, vram_bytes=VRAM), free_vram_bytes=VRAM,
            backends=["instant"], worker_version=helium.__version__, task_types=[task_pb2.TASK_TYPE_SD],
            dtypes=["auto"], device="cpu",
        )  # fmt: skip

    async def join(self, i: int, deadline: float) -> None:
        acct = fast_account(os.urandom(32))
        channel = self.channels[i // self.per_channel]
        async with self.sem:
            if time.monotonic() > deadline:
                return
            call = worker_pb2_grpc.WorkerServiceStub(channel).Connect()
            try:
                await call.write(worker_pb2.ConnectRequest(
                    hello=worker_pb2.Hello(address=acct.address, worker_version=helium.__version__)))  # fmt: skip
                first = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
                ch = first.challenge
                domain = signing.Domain(ch.chain_id, ch.verifying_contract or signing.ZERO_ADDRESS)
                info = self.info(acct)
                sig = signing.sign_register(
                    acct, domain, ch.nonce, keccak(info.SerializeToString(deterministic=True))
                )
                await call.write(
                    worker_pb2.ConnectRequest(register=worker_pb2.Register(info=info, signature=sig))
                )
                second = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
                if second is grpc.aio.EOF or second.WhichOneof("msg") != "registered":
                    raise RuntimeError(f"expected registered, got {second}")
            except Exception as exc:  # counted and reported; the bench reports how many joined
                self.failed += 1
                self.errors[_error_kind(exc)] = self.errors.get(_error_kind(exc), 0) + 1
                call.cancel()
                return
        self.registered += 1
        self.calls.append(call)
        # Idle nodes heartbeat at the idle interval the coordinator names, as `WorkerNode`s do.
        reg = second.registered
        interval = (reg.idle_heartbeat_interval_ms or reg.heartbeat_interval_ms or 5000) / 1000
        self.tasks.append(asyncio.create_task(self.beat(call, interval)))

    async def beat(self, call, interval: float) -> None:
        hb = worker_pb2.ConnectRequest(heartbeat=worker_pb2.Heartbeat(free_vram_bytes=VRAM))
        await asyncio.sleep(random.uniform(0, interval))
        while True:
            try:
                await call.write(hb)
            except Exception:
                self.lost += 1
                return
            self.heartbeats += 1
            await asyncio.sleep(interval)

    async def run(self, deadline_s: float) -> None:
        # Channels and the semaphore belong to this loop; one TCP connection per channel (no shared subchannel).
        opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000), ("grpc.http2.max_pings_without_data", 0)]  # fmt: skip
        n_channels = max(1, -(-self.count // self.per_channel))
        self.channels = [grpc.aio.insecure_channel(self.address, options=opts) for _ in range(n_channels)]
        self.sem = asyncio.Semaphore(self.concurrency)
        start = time.monotonic()
        deadline = start + deadline_s
        joins = asyncio.gather(*(self.join(i, deadline) for i in range(self.count)))
        while not joins.done():
            await asyncio.wait({joins}, timeout=1.0)
            print(f"progress registered={self.registered} failed={self.failed}", flush=True)
        await joins
        print(f"ready nodes={self.registered} failed={self.failed} seconds={time.monotonic() - start:.1f}",
              flush=True)  # fmt: skip
        if self.errors:
            print(f"idle fleet: handshakes failed by kind: {self.errors}", file=sys.stderr, flush=True)
        while True:
            await asyncio.sleep(5)
            print(
                f"stats registered={self.registered} heartbeats={self.heartbeats} lost={self.lost}",
                flush=True,
            )


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench._idle")
    p.add_argument("--coordinator", required=True)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--per-channel", type=int, default=250, help="streams per HTTP/2 connection")
    p.add_argument("--card", default="idle-card")
    p.add_argument("--concurrency", type=int, default=500, help="handshakes in flight")
    p.add_argument("--deadline", type=float, default=150.0, help="seconds to stop starting handshakes")
    args = p.parse_args()
    configure_logging(False, "error")
    fleet = Fleet(args.coordinator, args.nodes, args.per_channel, args.card, args.concurrency)
    asyncio.run(fleet.run(args.deadline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
