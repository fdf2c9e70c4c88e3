"""An in-process network on the embedded chain, for the protocol tests and benchmarks: a DevChain (in this
process, or with `process=True` a chain server child process reached over JSON-RPC), a coordinator with
`chain_parts` on a real port, and staked worker nodes on real gRPC streams."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import timedelta
from pathlib import Path

import grpc
from eth_account import Account

from chain.deploy import ETHER
from chain.devchain import DEFAULT_EVM, DevChain
from chain.models import ClientSettings
from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorApp
from coordinator.service.chain_parts import chain_parts
from coordinator.service.settings import ProtocolSettings
from coordinator.service.settlement import SettlementSettings
from helium.client import TaskClient
from worker.config import WorkerConfig
from worker.session import NodeProfile, WorkerNode

__all__ = ["ChainNet"]


class ChainNet:
    """`async with ChainNet(tmp_path, ...) as net:`; `await net.add_nodes(n, factory, card=, vram=)`."""

    __test__ = False

    def __init__(self, root: Path, *, heartbeat_s: float = 0.5, protocol: ProtocolSettings | None = None,
                 settlement: SettlementSettings | None = None, client_wrapper=None, rng=None, process: bool = False,
                 evm: str = DEFAULT_EVM, **config) -> None:  # fmt: skip
        self.root = Path(root)
        self.process = process
        self.evm = evm
        self.heartbeat_s = heartbeat_s
        self.protocol = protocol or ProtocolSettings()
        self.settlement = settlement or SettlementSettings(batch_max_tasks=50, batch_interval=timedelta(seconds=1))
        self.client_wrapper = client_wrapper
        self.rng = rng
        self.config = CoordinatorConfig(data_dir=self.root / "coordinator", port=0, chain="embedded",
                                        heartbeat_interval_s=heartbeat_s, shutdown_grace_s=0.5, **config)  # fmt: skip
        self.nodes: list[WorkerNode] = []
        self._channels: list[grpc.aio.Channel] = []

    async def __aenter__(self) -> ChainNet:
        chain_dir = self.root / "chain"
        self.chain = await (DevChain.spawn(chain_dir, evm=self.evm) if self.process
                            else DevChain.open(chain_dir, evm=self.evm))  # fmt: skip
        self.admin = self.chain.client(self.chain.keys.creator)  # reads and creator/node helper sends
        client = self.chain.client(settings=ClientSettings(preflight=False))
        if self.client_wrapper is not None:
            client = self.client_wrapper(self.chain, client)
        self.coordinator_client = client
        factory = functools.partial(chain_parts, devchain=self.chain, client=client, protocol=self.protocol,
                                    settlement=self.settlement, rng=self.rng)  # fmt: skip
        self.app = CoordinatorApp(self.config, factory)
        await self.app.start()
        self.address = self.app.address
        return self

    async def __aexit__(self, *exc) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes), return_exceptions=True)
        for ch in self._channels:
            await ch.close()
        await self.app.stop(0.2)
        await self.chain.close()

    async def stake(self, *keys) -> None:
        """Funds and stakes the minimum for each key, concurrently (fast receipt polling)."""
        fast = ClientSettings(poll_interval=timedelta(milliseconds=10), preflight=False)
        faucet = self.chain.client(self.chain.keys.faucet, settings=fast)
        amount = await faucet.min_stake()
        await asyncio.gather(*(faucet.send_value(k.address, amount + ETHER) for k in keys))
        await asyncio.gather(*(self.chain.client(k, settings=fast).stake(k, amount) for k in keys))

    async def add_nodes(self, n: int, executor_factory, *, card: str = "cpu", vram: int = 0, stake: bool = True,
                        keys=None) -> list[WorkerNode]:  # fmt: skip
        keys = list(keys) if keys is not None else [Account.create() for _ in range(n)]
        if stake:
            await self.stake(*keys)
        out = [self.make_node(key, executor_factory(), card=card, vram=vram) for key in keys]
        await asyncio.gather(*(node.__aenter__() for node in out))
        self.nodes += out
        return out

    def make_node(self, key, executor, *, card: str = "cpu", vram: int = 0) -> WorkerNode:
        cfg = WorkerConfig(
            coordinator=self.address, data_dir=self.root / f"worker-{key.address[2:10]}",
            heartbeat_interval=timedelta(seconds=self.heartbeat_s), connect_timeout=timedelta(seconds=5),
            reconnect_initial=timedelta(milliseconds=100), reconnect_max=timedelta(seconds=1),
        )  # fmt: skip
        executors = executor if isinstance(executor, list) else [executor]
        return WorkerNode(cfg, key, executors, profile=NodeProfile(card_name=card, vram_bytes=vram, device="cpu"))

    def client(self, key=None) -> TaskClient:
        ch = grpc.aio.insecure_channel(self.address)
        self._channels.append(ch)
        return TaskClient(ch, key or self.chain.keys.creator)

    async def wait_settled(self, task_ids, timeout: float = 60.0) -> None:
        from coordinator.domain.models import TaskState

        store = self.app.store
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            states = [store.get_task(t).state for t in task_ids]
            if all(s in (TaskState.SETTLED, TaskState.ABORTED, TaskState.CANCELLED) for s in states):
                return
            if asyncio.get_running_loop().time() > deadline:
                counts = {s.value: states.count(s) for s in set(states)}
                raise TimeoutError(f"tasks not settled within {timeout:.0f}s: {counts}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def channel(address: str):
    ch = grpc.aio.insecure_channel(address)
    try:
        yield ch
    finally:
        await ch.close()


async def wait_states(store, ids, want, timeout: float) -> None:
    """Waits until every task in `ids` is in state `want`; fails with the state counts after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        states = [store.get_task(i).state for i in ids]
        if all(s == want for s in states):
            return
        assert time.monotonic() < deadline, {s.value: states.count(s) for s in set(states)}
        await asyncio.sleep(0.1)
