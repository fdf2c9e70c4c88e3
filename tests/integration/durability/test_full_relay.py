"""A full relay, end to end (issue #14, item 5): the coordinator's bundled relay writes to a 3 MiB tmpfs.

- CreateTask whose input must go to the full relay answers RESOURCE_EXHAUSTED (reason relay_full), never
  INTERNAL, and is accepted once there is room.
- SD nodes whose image upload finds the relay full wait and try again, keeping their assignments: no
  crash report, no lapse, no penalty; once there is room the task completes with the original three.

Real coordinator and real nodes on real streams; only the executors are test doubles. Root only (the
tmpfs mount), skipped with the reason elsewhere.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest
from eth_account import Account

from helium.v1 import task_pb2
from tests.integration.protocol.simnet import sd_args
from tests.support.network import TestNetwork, gpt_args
from tests.support.tmpfs import fill, tmpfs
from worker.config import WorkerConfig
from worker.session import NodeProfile, WorkerNode
from worker.testing import InstantExecutor

pytestmark = pytest.mark.slow


def _node(net: TestNetwork, executor, name: str) -> WorkerNode:
    cfg = WorkerConfig(coordinator=net.address, data_dir=net.root / name, heartbeat_interval=timedelta(seconds=0.3),
                       connect_timeout=timedelta(seconds=5), relay_full_retry_initial=timedelta(milliseconds=100),
                       relay_full_retry_max=timedelta(milliseconds=400))  # fmt: skip
    return WorkerNode(cfg, Account.create(), [executor], profile=NodeProfile(card_name="gpu-sd", vram_bytes=24 << 30,
                                                                             device="cpu"))  # fmt: skip


async def test_create_task_on_a_full_relay_is_resource_exhausted_then_accepted_with_room(tmp_path):
    with tmpfs(tmp_path / "coordinator" / "relay") as relay_dir:
        async with TestNetwork(tmp_path) as net:
            await net.add_nodes(3, lambda: InstantExecutor("gpt"))
            filler = fill(relay_dir, 16 << 10)
            client = net.client()
            big = gpt_args("x" * (300 << 10))  # past the inline limit: its canonical JSON goes to the relay
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.submit(big, fee=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
            assert "storage is full" in refused.value.details()
            assert ("helium-reason", "relay_full") in tuple(refused.value.trailing_metadata())
            # In a CreateTasks batch only the task whose input does not fit is refused, with the same status.
            outcomes = await client.create_many([await client.build(gpt_args("small"), fee=10),
                                                 await client.build(big, fee=10)])  # fmt: skip
            assert outcomes[0].created.task_id
            assert outcomes[1].code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], outcomes[1]
            assert "storage is full" in outcomes[1].message
            filler.unlink()
            task_id = await client.submit(big, fee=10)
            assert (await client.wait(task_id, timeout=30)).state == task_pb2.TASK_STATE_VALIDATED


async def test_nodes_wait_for_room_on_a_full_relay_without_penalty(tmp_path):
    with tmpfs(tmp_path / "coordinator" / "relay") as relay_dir:
        async with TestNetwork(tmp_path) as net:
            nodes = [_node(net, InstantExecutor("sd"), f"n{i}") for i in range(3)]
            for n in nodes:
                await n.__aenter__()
            net.nodes += nodes
            filler = fill(relay_dir, 0)
            client = net.client()
            task_id = await client.submit(sd_args(1), fee=10)
            await asyncio.sleep(3.0)  # ten heartbeats: a lapse or a crash report would show by now
            waiting = await client.get(task_id)
            assert waiting.state == task_pb2.TASK_STATE_DISPATCHED, waiting.state
            assert len(waiting.assignments) == 3
            assert all(a.state in (task_pb2.ASSIGNMENT_STATE_LEASED, task_pb2.ASSIGNMENT_STATE_RUNNING)
                       for a in waiting.assignments), [(a.state, a.error) for a in waiting.assignments]  # fmt: skip
            filler.unlink()  # room again (as after a sweep)
            task = await client.wait(task_id, timeout=30)
            assert task.state == task_pb2.TASK_STATE_VALIDATED, (task.state, task.reason)
            for _ in range(100):
                task = await client.get(task_id)
                if all(a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED for a in task.assignments):
                    break
                await asyncio.sleep(0.1)
            # The original three, all delivered: nobody crashed, lapsed or was replaced.
            assert len(task.assignments) == 3
            assert all(a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED for a in task.assignments)
            assert {a.node for a in task.assignments} == {n.address for n in nodes}
            assert all(net.app.relay_store.exists(task_id, f"result/{n.address}/0") for n in nodes)
            # The coordinator pins the blobs of tasks with slash evidence (test_evidence_pins.py).
            assert any("evidence_pinner" in cb.__qualname__ for cb in net.app.dispatcher.on_outcome)
