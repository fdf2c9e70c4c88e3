"""The coordinator's disk fills up under it (issue #14 item 2): CreateTask is refused RESOURCE_EXHAUSTED,
every task it said OK to stays readable and runs to its end, the dispatcher holds no task the store does
not, and once space returns new tasks are taken without a restart."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from coordinator.domain.models import TaskState
from helium.v1 import task_pb2
from tests.support.diskfull import fill, small_disk
from tests.support.network import TestNetwork, gpt_args
from worker.testing import InstantExecutor

pytestmark = pytest.mark.slow


def _no_ghost(app) -> None:
    """What the dispatcher holds in memory, the store holds too (a ghost made 178 NotFound per round)."""
    d, store = app.dispatcher, app.store
    for task in d.queue:
        stored = store.get_task(task.task_id)
        assert stored is not None and stored.state == TaskState.QUEUED, (task.task_id, stored)
    for task_id, flight in d.inflight.items():
        stored = store.get_task(task_id)
        assert stored is not None and stored.state == flight.task.state, (task_id, stored, flight.task.state)
        for a in flight.assignments.values():
            assert store.get_assignment(a.assignment_id) is not None, a


async def test_full_disk_refuses_new_tasks_loses_none_and_recovers_when_space_returns(tmp_path):
    with small_disk(tmp_path / "net" / "coordinator", "3m") as disk:  # the coordinator's data dir only
        async with TestNetwork(tmp_path / "net", heartbeat_s=0.3) as net:
            await net.add_nodes(3, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
            client = net.client()
            accepted = [await client.submit(gpt_args(f"before {i}"), fee=10) for i in range(3)]
            for task_id in accepted:
                assert (await client.wait(task_id, timeout=30)).state == task_pb2.TASK_STATE_VALIDATED

            filler = fill(disk)
            refused = 0
            for i in range(300):  # the log reuses its file for a while: send until the disk shows
                try:
                    # bounded: a commit that failed used to leave its CreateTask waiting forever
                    accepted.append(await asyncio.wait_for(client.submit(gpt_args(f"full {i} " + "x" * 2000),
                                                                         fee=10), 15))  # fmt: skip
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                    assert "disk is full" in exc.details()
                    refused += 1
                    if refused >= 5:
                        break
            assert refused >= 5, "the full disk never refused a task"
            for task_id in accepted:  # every task it said OK to exists
                assert (await client.get(task_id)).task_id == task_id
            await asyncio.sleep(1.0)  # a few dispatch rounds and resyncs on the full disk
            _no_ghost(net.app)

            filler.unlink()  # space returns: no restart
            t0 = time.monotonic()
            while True:  # the first writes after space returns may still meet a failing group
                try:
                    accepted.append(await client.submit(gpt_args("after"), fee=10))
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() - t0 < 10, exc
                    await asyncio.sleep(0.2)
            accepted += [await client.submit(gpt_args(f"after {i}"), fee=10) for i in range(3)]
            for task_id in accepted:
                task = await client.wait(task_id, timeout=60)
                assert task.state == task_pb2.TASK_STATE_VALIDATED, (task_id, task.state, task.reason)
            _no_ghost(net.app)
