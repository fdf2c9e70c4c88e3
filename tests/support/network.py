"""In-process network pieces for tests: a coordinator on port 0 and worker nodes with
chosen executors (real nodes on real gRPC streams)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import grpc
from eth_account import Account

from coordinator.config import CoordinatorConfig
from coordinator.server import CoordinatorApp
from helium.client import TaskClient, load_task_file
from worker.config import WorkerConfig
from worker.session import NodeProfile, WorkerNode

__all__ = ["TestNetwork", "gpt_args"]


def gpt_args(content: str = "hi", model: str = "tiny-gpt", **extra):
    return load_task_file({"model": model, "messages": [{"role": "user", "content": content}], **extra})


class TestNetwork:
    """`async with TestNetwork(tmp_path) as net:` a coordinator; `await net.add_nodes(...)`."""

    __test__ = False

    def __init__(self, root: Path, heartbeat_s: float = 0.3, parts_factory=None, **config) -> None:
        self.root = Path(root)
        self.config = CoordinatorConfig(data_dir=self.root / "coordinator", port=0, chain="none",
                                        heartbeat_interval_s=heartbeat_s, shutdown_grace_s=0.5, **config)
        self.parts_factory = parts_factory
        self.heartbeat_s = heartbeat_s
        self.nodes: list[WorkerNode] = []
        self._channels: list[grpc.aio.Channel] = []

    async def __aenter__(self) -> TestNetwork:
        kwargs = {"parts_factory": self.parts_factory} if self.parts_factory else {}
        self.app = CoordinatorApp(self.config, **kwargs)
        await self.app.start()
        self.address = self.app.address
        return self

    async def __aexit__(self, *exc) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                await n.close()
        for ch in self._channels:
            await ch.close()
        await self.app.stop(0.2)

    async def add_nodes(self, n: int, executor_factory, card: str = "cpu", vram: int = 0,
                        max_assignments: int = 1) -> list[WorkerNode]:  # fmt: skip
        out = []
        for _ in range(n):
            cfg = WorkerConfig(
                coordinator=self.address, data_dir=self.root / f"worker-{len(self.nodes)}",
                heartbeat_interval=timedelta(seconds=self.heartbeat_s), connect_timeout=timedelta(seconds=5),
                reconnect_initial=timedelta(milliseconds=100), reconnect_max=timedelta(seconds=1),
                max_assignments=max_assignments,
            )  # fmt: skip
            node = WorkerNode(cfg, Account.create(), [executor_factory()],
                              profile=NodeProfile(card_name=card, vram_bytes=vram, device="cpu"))  # fmt: skip
            await node.__aenter__()
            self.nodes.append(node)
            out.append(node)
        return out

    def client(self, key=None) -> TaskClient:
        ch = grpc.aio.insecure_channel(self.address)
        self._channels.append(ch)
        return TaskClient(ch, key or Account.create())

    def with_config(self, **changes) -> CoordinatorConfig:
        return replace(self.config, **changes)
