"""Fewer messages per task, same guarantees: CreateTasks (many tasks in one call), batched stream
frames both ways, acks that ride with the node's next message, and nodes that hold several
assignments at once. A real coordinator on a real port, real worker nodes on real streams."""

from __future__ import annotations

import asyncio
import types

import grpc
import pytest

from helium.v1 import gpt_pb2, task_pb2, worker_pb2
from tests.support.network import TestNetwork, gpt_args
from worker import _conn
from worker.testing import InstantExecutor, SlowExecutor

OK = grpc.StatusCode.OK.value[0]


async def test_create_tasks_answers_each_task_on_its_own(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        client = net.client()
        good = [await client.build(gpt_args(f"batch {i}"), fee=10 + i) for i in range(4)]
        bad_top_p = await client.build(gpt_args("bad", generation_config={"top_p": 1.5}), fee=10)
        forged = task_pb2.CreateTaskRequest()
        forged.CopyFrom(good[0])
        forged.nonce += 1  # the signature no longer covers it
        reqs = [good[0], bad_top_p, good[1], forged, good[2], good[3], good[0]]

        outcomes = await client.create_many(reqs)

        codes = [o.code for o in outcomes]
        assert codes == [OK, grpc.StatusCode.INVALID_ARGUMENT.value[0], OK, grpc.StatusCode.UNAUTHENTICATED.value[0],
                         OK, OK, OK]  # fmt: skip
        assert "top_p" in outcomes[1].message and "signature" in outcomes[3].message
        assert not outcomes[1].HasField("created") and not outcomes[3].HasField("created")
        ids = [o.created.task_id for o in outcomes if o.code == OK]
        assert ids[0] == ids[-1], "re-sending a task in the same batch is idempotent"
        assert len(set(ids)) == 4
        stored = net.app.store.count_tasks_by_state()
        assert sum(stored.values()) == 4, "a refused task left state behind"
        for task_id in set(ids):
            task = await client.wait(task_id, timeout=10)
            assert task.state == task_pb2.TASK_STATE_VALIDATED


async def test_create_tasks_over_the_limit_is_refused_whole(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        client = net.client()
        req = await client.build(gpt_args(), fee=10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.CreateTasks(task_pb2.CreateTasksRequest(tasks=[req] * 1001), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tasks" in err.value.details() and "1000" in err.value.details()
        assert sum(net.app.store.count_tasks_by_state().values()) == 0


async def test_nodes_hold_several_assignments_and_keep_their_leases(tmp_path):
    # Each task takes 0.4 s and a node runs one at a time, so the third assignment a node holds waits
    # about 0.8 s: longer than a lease (3 x 0.2 s). Only heartbeats naming the queued ones keep them.
    async with TestNetwork(tmp_path, heartbeat_s=0.2) as net:
        nodes = await net.add_nodes(3, lambda: SlowExecutor(0.4), max_assignments=3)
        client = net.client()
        reqs = [await client.build(gpt_args(f"held {i}"), fee=10) for i in range(3)]
        ids = [o.created.task_id for o in await client.create_many(reqs)]
        d = net.app.dispatcher
        held = 0
        for _ in range(100):
            held = max(held, *(len(d.nodes[n.address].assigned) for n in nodes))
            if held == 3:
                break
            await asyncio.sleep(0.01)
        assert held == 3, "a node asking for 3 assignments held 3 at once"
        for task_id in ids:
            task = await client.wait(task_id, timeout=15)
            assert task.state == task_pb2.TASK_STATE_VALIDATED
            states = {a.state for a in task.assignments}
            assert task_pb2.ASSIGNMENT_STATE_EXPIRED not in states, "a queued assignment lost its lease"


async def test_coordinator_caps_what_a_node_may_hold(tmp_path):
    async with TestNetwork(tmp_path, max_assignments_per_node=2) as net:
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"), max_assignments=16)
        for n in nodes:
            assert net.app.dispatcher.nodes[n.address].record.caps.max_assignments == 2


async def test_results_travel_in_batches_and_count_once(tmp_path, monkeypatch):
    """Instant nodes holding several assignments finish them in one turn: their results go up in one
    batch frame, and every task still validates exactly once."""
    frames: list[int] = []

    def counting_batch(messages):
        frames.append(len(messages))
        return worker_pb2.ConnectRequestBatch(messages=messages)

    monkeypatch.setattr(_conn, "worker_pb2", types.SimpleNamespace(
        ConnectRequest=worker_pb2.ConnectRequest, ConnectRequestBatch=counting_batch))  # fmt: skip
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"), max_assignments=8)
        validated: list[str] = []
        net.app.dispatcher.on_validated.append(lambda t: validated.append(t.task_id))
        client = net.client()
        reqs = [await client.build(gpt_args(f"frame {i}"), fee=10) for i in range(40)]
        ids = [o.created.task_id for o in await client.create_many(reqs)]
        for task_id in ids:
            assert (await client.wait(task_id, timeout=15)).state == task_pb2.TASK_STATE_VALIDATED
    assert frames and max(frames) > 1, "no result ever shared a frame"
    assert sorted(validated) == sorted(ids), "each task validated exactly once"


async def test_a_worker_without_batches_gets_single_messages(tmp_path, monkeypatch):
    """An older worker that does not say accepts_batches is sent one message per frame, acks included."""
    seen: list[str] = []
    real_hello = worker_pb2.Hello

    def old_hello(**kw):
        kw.pop("accepts_batches", None)
        return real_hello(**kw)

    import worker.session as session_mod

    names = {k: getattr(worker_pb2, k) for k in dir(worker_pb2) if not k.startswith("_")}
    monkeypatch.setattr(session_mod, "worker_pb2", types.SimpleNamespace(**{**names, "Hello": old_hello}))
    real_read = session_mod.WorkerNode._read_loop

    async def spying_read(self, conn):
        call = conn.call
        original = call.read

        async def read():
            msg = await original()
            if msg is not grpc.aio.EOF:
                seen.append("frame:" + msg.WhichOneof("msg"))
            return msg

        call.read = read
        return await real_read(self, conn)

    monkeypatch.setattr(session_mod.WorkerNode, "_read_loop", spying_read)
    async with TestNetwork(tmp_path) as net:
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        assert not any(net.app.dispatcher.nodes[n.address].batches for n in nodes)
        client = net.client()
        task_id = await client.submit(gpt_args(), fee=10)
        assert (await client.wait(task_id, timeout=10)).state == task_pb2.TASK_STATE_VALIDATED
        for n in nodes:
            await asyncio.wait_for(n.jobs.delivered(), 5)  # every result acknowledged
    assert "frame:ack" in seen and "frame:assignment" in seen
    assert "frame:batch" not in seen


def test_batch_frames_are_in_the_contract():
    """A batch carries messages of the stream's own type, and a GPT task's args round-trip inside one."""
    inner = worker_pb2.ConnectResponse(assignment=worker_pb2.WorkAssignment(
        assignment_id="a-1", args=task_pb2.TaskArgs(gpt=gpt_pb2.GptTask(model="m"))))  # fmt: skip
    frame = worker_pb2.ConnectResponse(batch=worker_pb2.ConnectResponseBatch(
        messages=[inner, worker_pb2.ConnectResponse(ack=worker_pb2.Ack(assignment_id="a-0"))]))  # fmt: skip
    back = worker_pb2.ConnectResponse.FromString(frame.SerializeToString())
    assert [m.WhichOneof("msg") for m in back.batch.messages] == ["assignment", "ack"]
    assert back.batch.messages[0].assignment.args.gpt.model == "m"
