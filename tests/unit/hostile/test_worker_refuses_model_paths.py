"""The node refuses a task whose model is a path (issue #14 item 7, defence in depth): a real node on a real
stream, fed by the worker suite's scripted coordinator (a coordinator that would let a path through). The
executor is never called and nothing on the node's disk is looked at: an invalid-args error comes back."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

from helium.v1 import worker_pb2, worker_pb2_grpc
from worker.session import NodeProfile, WorkerNode
from worker.testing import InstantExecutor

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker" / "session"))
from _session_fakes import FakeCoordinator, assignment, fast_config, gpt_args, new_key  # noqa: E402

PROFILE = NodeProfile(card_name="Fake GPU 24GB", vram_bytes=24 << 30, device="cuda:0", free_vram=lambda: 20 << 30)


@pytest.fixture
async def fake():
    server = grpc.aio.server()
    coordinator = FakeCoordinator()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(coordinator, server)
    coordinator.address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        yield coordinator
    finally:
        await server.stop(grace=None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", ["/etc", "../../etc/passwd", "./models/x"])
async def test_a_model_path_from_the_network_is_invalid_args(fake, tmp_path, model):
    executor = InstantExecutor("gpt")
    async with WorkerNode(fast_config(fake.address, tmp_path), new_key(), [executor], profile=PROFILE):
        stream = await fake.next_stream()
        a = assignment(gpt_args(model=model))
        stream.send(assignment=a)
        err = await stream.recv("error")
        assert (err.assignment_id, err.kind) == (a.assignment_id, worker_pb2.ERROR_KIND_INVALID_ARGS)
        assert "never a local path" in err.message
        assert executor.jobs == []  # refused before any executor ran
        stream.send(assignment=assignment(gpt_args(model="org/name"), aid="a-2"))
        assert (await stream.recv("result")).assignment_id == "a-2"  # a hub id still runs
