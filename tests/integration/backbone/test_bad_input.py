"""Bad input at the TaskService edge: the right status, a message naming the problem,
and nothing stored."""

from __future__ import annotations

import json
import subprocess
import sys

import grpc
import pytest
from eth_account import Account

from chain import signing
from helium.v1 import gpt_pb2, task_pb2
from tests.support.network import TestNetwork, gpt_args
from worker.testing import InstantExecutor


async def _refused(net: TestNetwork, req: task_pb2.CreateTaskRequest) -> grpc.aio.AioRpcError:
    client = net.client()
    before = net.app.store.count_tasks_by_state()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.stub.CreateTask(req, timeout=5)
    assert net.app.store.count_tasks_by_state() == before, "a refused task left state behind"
    assert len(net.app.dispatcher.queue) == 0
    return err.value


async def test_create_task_refusals(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        client = net.client()
        good = await client.build(gpt_args(), fee=10)

        no_kind = task_pb2.CreateTaskRequest()
        no_kind.CopyFrom(good)
        no_kind.ClearField("args")
        err = await _refused(net, no_kind)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "args.gpt or args.sd" in err.details()
        assert dict(err.trailing_metadata()).get("helium-reason") == "invalid_args"

        no_messages = task_pb2.TaskArgs(gpt=gpt_pb2.GptTask(model="tiny-gpt"))
        err = await _refused(net, await client.build(no_messages, fee=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "messages" in err.details()

        bad_top_p = gpt_args(generation_config={"top_p": 1.5})
        err = await _refused(net, await client.build(bad_top_p, fee=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_p" in err.details()

        forged = task_pb2.CreateTaskRequest()
        forged.CopyFrom(good)
        forged.signature = bytes(65)
        err = await _refused(net, forged)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "signature" in err.details()

        other = Account.create()
        wrong_key = task_pb2.CreateTaskRequest()
        wrong_key.CopyFrom(good)
        ahash = __import__("helium.tasks", fromlist=["args_hash"]).args_hash(good.args)
        tid = signing.compute_task_id(good.creator, good.nonce, ahash)
        wrong_key.signature = signing.sign_task(other, await client.domain(), tid, ahash, 10, good.nonce, good.deadline)
        err = await _refused(net, wrong_key)
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and other.address in err.details()

        zero_fee = await client.build(gpt_args(), fee=0)
        err = await _refused(net, zero_fee)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "fee" in err.details()

        past = await client.build(gpt_args(), fee=10, deadline=1)
        err = await _refused(net, past)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "deadline" in err.details()

        # The good one still goes through, and re-sending it is idempotent.
        resp = await client.stub.CreateTask(good, timeout=5)
        again = await client.stub.CreateTask(good, timeout=5)
        assert resp.task_id == again.task_id
        assert sum(net.app.store.count_tasks_by_state().values()) == 1


async def test_get_task_refusals(tmp_path):
    async with TestNetwork(tmp_path) as net:
        client = net.client()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get("0x1234")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "task_id" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.get("0x" + "ab" * 32)
        # Read as a creator: a task that does not exist answers as another creator's does (ids cannot be probed).
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_queue_full_is_resource_exhausted(tmp_path):
    async with TestNetwork(tmp_path, queue_capacity=1) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        from coordinator.service.membership import NodeAction

        for n in net.nodes:  # paused nodes stay registered, but take no task: tasks stay queued
            net.app.membership.apply(n.address, NodeAction.PAUSE, "by the test")
        client = net.client()
        await client.submit(gpt_args("one"), fee=10)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.submit(gpt_args("two"), fee=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "queue is full" in err.value.details()
        assert sum(net.app.store.count_tasks_by_state().values()) == 1


def test_cli_refuses_malformed_json_and_unknown_type(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x", "messages": [')
    run = subprocess.run([sys.executable, "-m", "helium.cli", "task", "submit", str(bad), "--key",
                          str(tmp_path / "k.key"), "--coordinator", "127.0.0.1:1"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode != 0 and "Expecting" in run.stderr
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"type": "video", "args": {}}))
    run = subprocess.run([sys.executable, "-m", "helium.cli", "task", "submit", str(odd), "--key",
                          str(tmp_path / "k.key"), "--coordinator", "127.0.0.1:1"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode != 0 and "task type" in run.stderr
