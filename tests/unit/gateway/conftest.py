from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from gateway_fakes import FakeCoordinator

from coordinator.gateway import GatewaySettings, serve_gateway
from coordinator.gateway.keys import KeyStore


@pytest.fixture
async def fake_coordinator():
    fake = FakeCoordinator()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
def settings(tmp_path) -> GatewaySettings:
    return GatewaySettings(data_dir=tmp_path, http_port=0, admin_token="admin-secret",
                           request_timeout=timedelta(seconds=10), rpc_timeout=timedelta(seconds=5))


@pytest.fixture
async def gateway(settings, fake_coordinator):
    server = await serve_gateway(settings, fake_coordinator.target)
    yield server
    await server.stop()


@pytest.fixture
def api_key(settings) -> str:
    store = KeyStore(settings.keys_db_path)
    secret, _ = store.create("test", rate_per_min=1000)
    store.close()
    return secret


def replace(settings: GatewaySettings, **kw) -> GatewaySettings:
    return dataclasses.replace(settings, **kw)
