"""kill -9 at the worst moments: no accepted task is lost, nothing completes twice."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from eth_account import Account

from helium.client import TaskClient
from helium.v1 import task_pb2
from tests.support.network import TestNetwork, gpt_args
from tests.support.procs import spawn

pytestmark = pytest.mark.slow


def _coordinator(tmp_path, port: int):
    return spawn(["-m", "coordinator", "--data-dir", str(tmp_path / "coord"), "--port", str(port), "--chain", "none",
                  "--heartbeat-interval-s", "0.3", "--log-level", "warning"], "coordinator")  # fmt: skip


def _worker(tmp_path, name: str, coordinator: str, *extra: str):
    return spawn(["-m", "tests.support.worker_proc", "--coordinator", coordinator, "--data-dir",
                  str(tmp_path / name), *extra], name)  # fmt: skip


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
async def test_coordinator_kill9_with_20_tasks_in_flight(tmp_path, batched):
    """batched: the tasks arrive in one CreateTasks call and every node holds up to 4 assignments, so the
    kill also finds queued assignments on the nodes and results waiting for acks that ride in frames."""
    coord = _coordinator(tmp_path, 0)
    workers = []
    try:
        address = coord.wait_for("ready", 60).split("grpc=")[1].split()[0]
        port = int(address.rsplit(":", 1)[1])
        extra = ("--max-assignments", "4") if batched else ()
        workers = [_worker(tmp_path, f"w{i}", address, "--delay", "0.15", *extra) for i in range(3)]
        for w in workers:
            w.wait_for("ready", 60)
        creator = Account.create()  # only the creator may read its tasks, after the restart too
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, creator)
            if batched:
                reqs = [await client.build(gpt_args(f"task {i}"), fee=10) for i in range(20)]
                outcomes = await client.create_many(reqs)
                assert [o.code for o in outcomes] == [0] * 20
                ids = [o.created.task_id for o in outcomes]
            else:
                ids = [await client.submit(gpt_args(f"task {i}"), fee=10) for i in range(20)]
            while (await client.get(ids[2])).state == task_pb2.TASK_STATE_QUEUED:
                await asyncio.sleep(0.05)
        coord.kill9()  # mid-flight: some validated, some dispatched, most queued
        coord = _coordinator(tmp_path, port)
        coord.wait_for("ready", 60)
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, creator)
            tasks = [await client.wait(i, timeout=90) for i in ids]
        for t in tasks:
            assert t.state == task_pb2.TASK_STATE_VALIDATED, (t.task_id, t.state, t.reason)
            submitted = [a for a in t.assignments if a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED]
            assert len({a.node for a in submitted}) == len(submitted), "a node's result counted twice"
            orders = sorted(a.submission_order for a in submitted)
            assert orders == list(range(1, len(submitted) + 1)), orders
            assert len(t.result.nodes) >= 2
    finally:
        for w in workers:
            w.kill9()
        coord.kill9()


async def test_worker_kill9_mid_task_lease_lapses_and_another_node_finishes(tmp_path):
    async with TestNetwork(tmp_path, heartbeat_s=0.3) as net:
        victim = _worker(tmp_path, "victim", net.address, "--delay", "30")
        liar = _worker(tmp_path, "liar", net.address, "--lie")
        honest = _worker(tmp_path, "honest", net.address, "--delay", "0.2")
        procs = [victim, liar, honest]
        try:
            addrs = {p.name: (await asyncio.to_thread(p.wait_for, "ready", 60)).split("node=")[1].strip() for p in procs}
            client = net.client()
            task_id = await client.submit(gpt_args("survive"), fee=10)
            for _ in range(100):
                t = await client.get(task_id)
                if any(a.node == addrs["victim"] and a.state == task_pb2.ASSIGNMENT_STATE_RUNNING
                       for a in t.assignments):  # fmt: skip
                    break
                await asyncio.sleep(0.05)
            victim.kill9()
            spare = _worker(tmp_path, "spare", net.address, "--delay", "0.1")
            procs.append(spare)
            addrs["spare"] = (await asyncio.to_thread(spare.wait_for, "ready", 60)).split("node=")[1].strip()
            task = await client.wait(task_id, timeout=30)
            assert task.state == task_pb2.TASK_STATE_VALIDATED
            assert set(task.result.nodes) == {addrs["honest"], addrs["spare"]}
            by_node = {a.node: a for a in task.assignments}
            assert by_node[addrs["victim"]].state == task_pb2.ASSIGNMENT_STATE_EXPIRED
            assert not by_node[addrs["liar"]].matched
        finally:
            for p in procs:
                p.kill9()




async def test_sigterm_shuts_down_cleanly(tmp_path):
    """SIGTERM: health goes NOT_SERVING, streams close, and the process exits 0 within its grace."""
    coord = _coordinator(tmp_path, 0)
    try:
        address = (await asyncio.to_thread(coord.wait_for, "ready", 60)).split("grpc=")[1].split()[0]
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, Account.create())
            # A young network (fewer nodes than a group ever registered) queues a task, with a reason.
            assert await client.submit(gpt_args(), fee=10)
        code = await asyncio.to_thread(coord.terminate, 30)
        assert code == 0, coord.tail()
    finally:
        coord.kill9()
