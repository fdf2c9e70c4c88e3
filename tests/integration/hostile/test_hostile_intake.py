"""Hostile or oversized task input at the coordinator's gRPC door, and tasks with nowhere to go
(issue #14 items 7 and 9). A real coordinator on port 0, real nodes on real streams."""

from __future__ import annotations

import time

import grpc
import pytest

from helium.client import load_task_file
from helium.v1 import task_pb2
from tests.support.network import TestNetwork, gpt_args
from worker.testing import InstantExecutor

pytestmark = pytest.mark.timeout(120)


async def _refusal(coro) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value


def _raw_request(client, args: task_pb2.TaskArgs, fee: str) -> task_pb2.CreateTaskRequest:
    """A request no honest client can build (its signature is junk): the checks before the signature's must
    refuse it."""
    return task_pb2.CreateTaskRequest(args=args, creator=client.key.address, nonce=1, fee=fee,
                                      deadline=int(time.time()) + 3600, signature=b"\x01" * 65)  # fmt: skip


@pytest.mark.parametrize("model", ["/etc", "../../etc/passwd", "./models/x", "a/b/c", "~/m", "a/../b", "C:\\m",
                                   "org/name/", "-x", "a--b/c", " a/b"])
async def test_a_model_path_is_refused_at_intake_naming_model(tmp_path, model):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        err = await _refusal(net.client().submit(gpt_args(model=model), fee=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "args.gpt.model" in err.details() and "never a local path" in err.details()
        assert net.app.store.count_tasks_by_state() == {}


async def test_an_oversized_task_is_refused_before_it_is_stored(tmp_path):
    async with TestNetwork(tmp_path, max_task_bytes=64 << 10) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        client = net.client()
        err = await _refusal(client.submit(gpt_args("x" * (10 << 20)), fee=10))  # the 10 MB message
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.details().startswith("args:") and "coordinator.max_task_bytes" in err.details()
        err = await _refusal(client.submit(gpt_args("x" * (70 << 10)), fee=10))  # just over, by its JSON size
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_task_bytes" in err.details()
        assert net.app.store.count_tasks_by_state() == {}  # nothing stored, so no fee either
        # Just under the limit: accepted, and `task get` can read it back (the answer fits a client's 4 MiB).
        task_id = await client.submit(gpt_args("y" * (60 << 10)), fee=10)
        task = await client.wait(task_id, timeout=30)
        assert task.state == task_pb2.TASK_STATE_VALIDATED and len(task.args.gpt.messages[0].content) == 60 << 10


async def test_the_default_bound_keeps_get_task_under_the_client_message_limit(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        client = net.client()
        err = await _refusal(client.submit(gpt_args("x" * (2 << 20)), fee=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "1048576" in err.details()
        task = await client.wait(await client.submit(gpt_args("y" * 1_000_000), fee=10), timeout=30)
        assert task.state == task_pb2.TASK_STATE_VALIDATED


@pytest.mark.parametrize("fee", [str(2**256), str(2**256 + 12345), "9" * 78])
async def test_a_fee_of_2_256_or_more_is_invalid_argument_naming_fee(tmp_path, fee):
    async with TestNetwork(tmp_path) as net:
        client = net.client()
        err = await _refusal(client.stub.CreateTask(_raw_request(client, gpt_args(), fee), timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # was UNAUTHENTICATED "int too big to convert"
        assert err.details().startswith("fee must be below 2^256")
        resp = await client.stub.CreateTasks(task_pb2.CreateTasksRequest(tasks=[_raw_request(client, gpt_args(), fee)]),
                                             timeout=10)  # fmt: skip
        assert resp.outcomes[0].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert resp.outcomes[0].message.startswith("fee")


async def test_an_undecodable_request_is_invalid_argument_not_unknown(tmp_path):
    async with TestNetwork(tmp_path) as net:
        channel = grpc.aio.insecure_channel(net.address)
        try:
            call = channel.unary_unary("/helium.v1.TaskService/CreateTask")
            deep = b""
            for _ in range(200):  # a tools Struct nested past protobuf's depth limit: Struct -> Value -> Struct ...
                deep = _field(1, _field(1, b"a") + _field(2, _field(5, deep)))
            deep = _field(1, _field(1, b"a/b") + _field(3, deep))  # TaskArgs.gpt{model, tools}
            deep = _field(1, deep)  # CreateTaskRequest.args
            for raw in (b"\xff\xff\xff", b"\x12\x02\xff\xfe", deep):
                err = await _refusal(call(raw, timeout=10))
                assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
                assert err.details().startswith("request: not a valid protobuf message")
        finally:
            await channel.close()


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


async def test_types_are_checked_in_task_json():
    for doc, field in [({"model": "a/b", "messages": [{"role": "user", "content": "hi"}], "seed": True}, "seed"),
                       ({"model": "a/b", "messages": [{"role": "user", "content": "hi"}],
                         "generation_config": {"max_new_tokens": "5"}}, "generation_config.max_new_tokens"),
                       ({"model": "a/b", "messages": [{"role": "user", "content": "hi"}],
                         "generation_config": {"temperature": "0.5"}}, "generation_config.temperature"),
                       ({"model": "a/b", "messages": [{"role": "user", "content": True}]}, "messages[0].content"),
                       ({"model": "a/b", "messages": {"role": "user"}}, "messages"),
                       ({"base_model": "a/b", "prompt": "p", "task_config": {"steps": True}}, "task_config.steps")]:
        with pytest.raises(ValueError) as err:
            load_task_file(doc)
        assert err.value.field == field, (doc, str(err.value))


# --- item 9: a task with nowhere to go -------------------------------------------------------------


async def test_a_young_network_queues_a_task_with_a_visible_reason_then_runs_it(tmp_path):
    """Workers still starting: the first task is not refused; `task get` says what it waits for."""
    async with TestNetwork(tmp_path) as net:
        client = net.client()
        task_id = await client.submit(gpt_args("early"), fee=10)
        task = await client.get(task_id)
        assert task.state == task_pb2.TASK_STATE_QUEUED
        assert task.reason.startswith("waiting for nodes:") and "3 registered nodes" in task.reason
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        task = await client.wait(task_id, timeout=30)
        assert task.state == task_pb2.TASK_STATE_VALIDATED and task.reason == ""


async def test_a_formed_network_refuses_what_its_nodes_can_never_run(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        err = await _refusal(net.client().submit(load_task_file({"prompt": "a cat", "base_model": "a/sd"}), fee=10))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SD" in err.details() or "sd" in err.details()
        assert dict(err.trailing_metadata()).get("helium-reason") == "no_capable_nodes"


async def test_a_task_whose_nodes_left_waits_with_a_reason(tmp_path):
    async with TestNetwork(tmp_path) as net:
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        client = net.client()
        await client.wait(await client.submit(gpt_args("first"), fee=10), timeout=30)
        for node in nodes[:2]:
            await node.close()
        task_id = await client.submit(gpt_args("stranded"), fee=10)  # the three are still registered
        task = await client.get(task_id)
        assert task.state == task_pb2.TASK_STATE_QUEUED
        assert task.reason.startswith("waiting for registered nodes to connect"), task.reason
