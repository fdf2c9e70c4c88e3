"""A real network for the access-control attacks: a coordinator (no chain) with its embedded gateway on
port 0 and three in-process nodes on real gRPC streams, whose executors are test doubles (GPT and SD)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from coordinator.gateway.keys import KeyStore

__all__ = ["GPT_MODEL", "SD_MODEL", "AccessNet", "access_net"]

GPT_MODEL = "helium/access-gpt"
SD_MODEL = "helium/access-sd"


@dataclass
class AccessNet:
    app: object  # coordinator.server.CoordinatorApp
    fleet: object  # worker.testing.NodeFleet
    root: Path

    @property
    def url(self) -> str:
        return f"http://{self.app.http_address}"

    @property
    def grpc(self) -> str:
        return self.app.address

    @property
    def keys_db(self) -> Path:
        return self.root / "coordinator" / "gateway" / "keys.sqlite"

    def create_key(self, name: str, rate_per_min: int = 1000) -> str:
        store = KeyStore(self.keys_db)
        try:
            return store.create(name, rate_per_min=rate_per_min)[0]
        finally:
            store.close()


@contextlib.asynccontextmanager
async def access_net(root: Path, executors=None, nodes: int = 3, **config) -> AsyncIterator[AccessNet]:
    """`executors(i)`: node i's executors (default: an instant GPT and an instant SD double)."""
    from coordinator.config import CoordinatorConfig
    from coordinator.server import CoordinatorApp, backbone_parts
    from worker.testing import InstantExecutor, NodeFleet

    def default(i: int):
        return [InstantExecutor("gpt", loaded_models=(GPT_MODEL,)), InstantExecutor("sd", loaded_models=(SD_MODEL,))]

    cfg = CoordinatorConfig(data_dir=root / "coordinator", port=0, http_port=0, chain="none",
                            heartbeat_interval_s=1.0, shutdown_grace_s=1.0, **config)
    app = CoordinatorApp(cfg, backbone_parts)
    await app.start()
    try:
        async with NodeFleet(app.address, nodes, executors=executors or default) as fleet:
            yield AccessNet(app, fleet, root)
    finally:
        await app.stop(1.0)
