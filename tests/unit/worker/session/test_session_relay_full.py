"""A full relay is never the node's fault (issue #14, item 5): against the real relay on a small tmpfs, a node
whose outputs do not fit keeps its assignment (heartbeats name it, no ErrorReport), stores them once there is
room, and when the assignment ends first (its deadline, a cancel) it drops it without a crash report."""

from __future__ import annotations

import time
from datetime import timedelta

import grpc
import pytest
from _session_fakes import DOMAIN, FakeCoordinator, assignment, fast_config, new_key

from helium.v1 import sd_pb2, task_pb2, worker_pb2, worker_pb2_grpc
from relay.auth import make_grant, worker_grant_slots
from relay.config import RelayConfig
from relay.server import add_relay_to_server
from tests.support.tmpfs import fill, tmpfs
from worker.session import NodeProfile, WorkerNode
from worker.testing import InstantExecutor

pytestmark = pytest.mark.timeout(60)

SD = task_pb2.TaskArgs(sd=sd_pb2.SdTask(base_model=sd_pb2.SdModel(name="tiny/sd"), prompt="a cat",
                                        task_config=sd_pb2.SdTaskConfig(num_images=1, seed=3)))  # fmt: skip


async def _served(tmp_path, relay_dir, coordinator_key):
    server = grpc.aio.server()
    fake = FakeCoordinator(heartbeat_ms=100)
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(fake, server)
    add_relay_to_server(server, RelayConfig(data_dir=relay_dir, coordinator_address=coordinator_key.address,
                                            chain_id=DOMAIN.chain_id, verifying_contract=DOMAIN.verifying_contract))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, fake, f"127.0.0.1:{port}"


def _sd_assignment(coordinator_key, node: WorkerNode, **kw) -> worker_pb2.WorkAssignment:
    a = assignment(SD, aid="a-full", **kw)
    read, write = worker_grant_slots(node.address)
    a.grant.CopyFrom(make_grant(coordinator_key, DOMAIN, a.task_id, node.address, read, write, int(time.time()) + 600))
    return a


async def test_outputs_wait_for_room_and_the_node_keeps_its_assignment(tmp_path):
    coordinator_key = new_key()
    with tmpfs(tmp_path / "relay", "1m") as relay_dir:
        server, fake, address = await _served(tmp_path, relay_dir, coordinator_key)
        try:
            cfg = fast_config(address, tmp_path, relay_full_retry_initial=timedelta(milliseconds=100),
                              relay_full_retry_max=timedelta(milliseconds=300))  # fmt: skip
            node = WorkerNode(cfg, new_key(), [InstantExecutor("sd")], profile=NodeProfile("Fake", 1 << 30, "cuda:0"))
            async with node:
                stream = await fake.next_stream()
                filler = fill(relay_dir, 0)
                a = _sd_assignment(coordinator_key, node)
                stream.send(assignment=a)
                for _ in range(8):  # ~0.8 s of waiting: the lease is held, nothing is reported
                    hb = await stream.recv("heartbeat")
                    assert list(hb.running_assignments) == [a.assignment_id]
                assert not any(m.WhichOneof("msg") in ("result", "error") for m in stream.seen)
                filler.unlink()
                result = await stream.recv("result", within=10)
                assert list(result.output_slots) == [f"result/{node.address}/0"]
        finally:
            await server.stop(grace=None)


async def test_an_assignment_that_ends_while_the_relay_is_full_is_dropped_not_reported(tmp_path):
    coordinator_key = new_key()
    with tmpfs(tmp_path / "relay", "1m") as relay_dir:
        server, fake, address = await _served(tmp_path, relay_dir, coordinator_key)
        try:
            cfg = fast_config(address, tmp_path, relay_full_retry_initial=timedelta(milliseconds=100),
                              relay_full_retry_max=timedelta(milliseconds=300))  # fmt: skip
            node = WorkerNode(cfg, new_key(), [InstantExecutor("sd")], profile=NodeProfile("Fake", 1 << 30, "cuda:0"))
            async with node:
                stream = await fake.next_stream()
                fill(relay_dir, 0)
                a = _sd_assignment(coordinator_key, node, deadline_ms=int(time.time() * 1000) + 1500)
                stream.send(assignment=a)
                await stream.recv("heartbeat")
                for _ in range(50):  # the deadline passes while the output waits for room
                    hb = await stream.recv("heartbeat")
                    if not hb.running_assignments:
                        break
                assert list(hb.running_assignments) == []
                await stream.nothing("error", within=0.5)  # no crash report: a full relay blames nobody
                assert not any(m.WhichOneof("msg") in ("result", "error") for m in stream.seen)
                assert node.jobs.quiet()
        finally:
            await server.stop(grace=None)
