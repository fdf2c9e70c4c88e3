"""Relay fixtures: keys for every role, a filesystem store, a real grpc.aio relay on port 0."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from relay_helpers import MAX_BLOB, TASK, Keys

from chain.signing import DEV_DOMAIN
from helium.v1 import relay_pb2_grpc
from relay.client import RelayClient
from relay.config import RelayConfig, grpc_options
from relay.server import add_relay_to_server
from relay.store import FilesystemBlobStore


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(*(Account.create() for _ in range(5)))


@dataclass
class Relay:
    config: RelayConfig
    store: FilesystemBlobStore
    channel: grpc.aio.Channel
    stub: relay_pb2_grpc.RelayServiceStub
    root: Path

    def client(self, key: LocalAccount, chunk_bytes: int = 64 << 10) -> RelayClient:
        return RelayClient(self.channel, key, DEV_DOMAIN, chunk_bytes=chunk_bytes)

    def temp_files(self) -> list[Path]:
        return list((self.root / ".tmp").iterdir())

    def nothing_stored(self, task: str = TASK) -> bool:
        return self.store.list_slots(task) == [] and self.temp_files() == []


@pytest.fixture
async def relay(tmp_path: Path, keys: Keys):
    root = tmp_path / "relay"
    config = RelayConfig(data_dir=root, coordinator_address=keys.coordinator.address, max_blob_bytes=MAX_BLOB)
    store = FilesystemBlobStore(root, config.max_blob_bytes)
    server = grpc.aio.server(options=grpc_options(config.chunk_bytes))
    add_relay_to_server(server, config, store)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_options(config.chunk_bytes))
    try:
        yield Relay(config, store, channel, relay_pb2_grpc.RelayServiceStub(channel), root)
    finally:
        await channel.close()
        await server.stop(0)
