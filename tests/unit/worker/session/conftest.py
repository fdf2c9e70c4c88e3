"""Fixtures of the worker session tests; the fakes live in _session_fakes."""

from __future__ import annotations

import grpc
import pytest
from _session_fakes import FakeCoordinator

from helium.v1 import worker_pb2_grpc


@pytest.fixture
async def fake():
    server = grpc.aio.server()
    coordinator = FakeCoordinator()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(coordinator, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    coordinator.address = f"127.0.0.1:{port}"
    try:
        yield coordinator
    finally:
        await server.stop(grace=None)
