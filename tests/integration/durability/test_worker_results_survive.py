"""A worker's unacknowledged results survive a `kill -9` of the worker (issue #14, item 4).

Real processes: the coordinator (`python -m coordinator`) and three worker nodes
(`tests.support.worker_proc`: the real WorkerNode with a slow test-double executor). The coordinator is
killed while the nodes compute, so their results can reach nobody: each lives only in its node's journal
when the nodes are killed in turn. Both sides restart; the results are delivered and counted once. A
result sent again after it was counted (a journal from before the ack) is acknowledged and changes nothing.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from eth_account import Account

from helium.client import TaskClient
from helium.v1 import task_pb2
from tests.support.network import gpt_args
from tests.support.procs import spawn
from worker._outbox import _parse, outbox_path

pytestmark = pytest.mark.slow


def _coordinator(tmp_path, port: int):
    return spawn(["-m", "coordinator", "--data-dir", str(tmp_path / "coord"), "--port", str(port), "--chain", "none",
                  "--log-level", "warning"], "coordinator")  # fmt: skip


def _worker(tmp_path, name: str, coordinator: str, delay: float):
    return spawn(["-m", "tests.support.worker_proc", "--coordinator", coordinator, "--data-dir",
                  str(tmp_path / name), "--delay", str(delay)], name)  # fmt: skip


async def _until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)


async def test_results_only_on_the_workers_disks_are_delivered_after_both_sides_restart(tmp_path):
    coord = _coordinator(tmp_path, 0)
    procs = [coord]
    try:
        address = (await asyncio.to_thread(coord.wait_for, "ready", 60)).split("grpc=")[1].split()[0]
        port = int(address.rsplit(":", 1)[1])
        names = ["w0", "w1", "w2"]
        workers = {n: _worker(tmp_path, n, address, 4.0) for n in names}
        procs += workers.values()
        nodes = {n: (await asyncio.to_thread(w.wait_for, "ready", 60)).split("node=")[1].strip()
                 for n, w in workers.items()}  # fmt: skip
        journals = {n: outbox_path(tmp_path / n, nodes[n]) for n in names}
        creator = Account.create()
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, creator)
            task_id = await client.submit(gpt_args("survive the worker's crash"), fee=10)

            # RUNNING, not LEASED: a lease is stored before the assignment is sent, and one still in the
            # coordinator's buffers dies with it (a loaded CI host once lost one that way).
            async def all_running():
                t = await client.get(task_id)
                return len([a for a in t.assignments if a.state == task_pb2.ASSIGNMENT_STATE_RUNNING]) == 3

            await _until(all_running, 30, "three nodes running the task")
        coord.kill9()  # the nodes compute on; their results can reach nobody

        async def all_journaled():
            return all(j.exists() and j.stat().st_size > 0 for j in journals.values())

        await _until(all_journaled, 30, "every node journaled its result")
        for w in workers.values():
            w.kill9()  # the results exist only in the journals now
        saved = journals["w0"].read_bytes()

        coord = _coordinator(tmp_path, port)
        procs.append(coord)
        await asyncio.to_thread(coord.wait_for, "ready", 60)
        workers = {n: _worker(tmp_path, n, address, 4.0) for n in names}
        procs += workers.values()
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, creator)
            task = await client.wait(task_id, timeout=60)
            assert task.state == task_pb2.TASK_STATE_VALIDATED, (task.state, task.reason)

            async def all_three_in():
                t = await client.get(task_id)
                subs = [a for a in t.assignments if a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED]
                return t if len(subs) == 3 else None

            task = await _until(all_three_in, 30, "the third result")
            # Each node's result counted once: no node had to run the task again, none was replaced.
            assert len(task.assignments) == 3
            assert {a.node for a in task.assignments} == set(nodes.values())
            assert sorted(a.submission_order for a in task.assignments) == [1, 2, 3]
            await _until(lambda: _acked(journals.values()), 30, "every journal emptied by the acks")

            # A journal from before the ack: the node sends its result again; it is acknowledged and
            # changes nothing.
            workers["w0"].kill9()
            journals["w0"].write_bytes(saved)
            again = _worker(tmp_path, "w0", address, 4.0)
            procs.append(again)
            await asyncio.to_thread(again.wait_for, "ready", 60)
            await _until(lambda: _acked([journals["w0"]]), 30, "the re-sent result acknowledged")
            after = await client.get(task_id)
            assert [(a.assignment_id, a.state, a.submission_order) for a in after.assignments] == \
                   [(a.assignment_id, a.state, a.submission_order) for a in task.assignments]  # fmt: skip
            assert after.result == task.result
    finally:
        for p in procs:
            p.kill9()


async def _acked(journals) -> bool:
    """Nothing waits in any journal: every result in it has its ack record."""
    return all(not j.exists() or not _parse(j.read_bytes())[0] for j in journals)
