"""The backbone end to end, in one process: a real coordinator on a real port, real worker
nodes on real streams, test-double executors (no model)."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from helium.v1 import task_pb2
from tests.support.network import TestNetwork, gpt_args
from worker.testing import InstantExecutor, LyingExecutor, SlowExecutor


async def test_task_validated_by_early_quorum_and_third_still_checked(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(2, lambda: InstantExecutor("gpt"))
        slow = await net.add_nodes(1, lambda: SlowExecutor(1.5))
        client = net.client()
        task_id = await client.submit(gpt_args(), fee=10)
        task = await client.wait(task_id, timeout=10)
        assert task.state == task_pb2.TASK_STATE_VALIDATED
        assert task.result.validation == "quorum 2/3"
        assert slow[0].address not in task.result.nodes
        doc = json.loads(task.result.output_json)
        assert doc["object"] == "chat.completion"
        assert doc["choices"][0]["message"]["role"] == "assistant"
        # Early quorum: the slow node is still running when the creator has the answer.
        states = {a.node: a.state for a in task.assignments}
        assert states[slow[0].address] in (task_pb2.ASSIGNMENT_STATE_LEASED, task_pb2.ASSIGNMENT_STATE_RUNNING)
        # ...and its result is still compared once it arrives.
        for _ in range(100):
            task = await client.get(task_id)
            a = {a.node: a for a in task.assignments}[slow[0].address]
            if a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED:
                break
            await asyncio.sleep(0.05)
        assert a.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED and a.matched and a.submission_order == 3


async def test_liar_is_outvoted_and_recorded(tmp_path):
    async with TestNetwork(tmp_path) as net:
        liar = (await net.add_nodes(1, lambda: LyingExecutor("gpt")))[0]
        await net.add_nodes(2, lambda: SlowExecutor(0.2))
        client = net.client()
        task_id = await client.submit(gpt_args("who wins?"), fee=10)
        task = await client.wait(task_id, timeout=10)
        assert task.state == task_pb2.TASK_STATE_VALIDATED
        assert liar.address not in task.result.nodes and len(task.result.nodes) == 2
        from worker.testing import instant_result_hash

        assert task.result.result_hash == instant_result_hash("gpt", gpt_args("who wins?").gpt)
        outlier = {a.node: a for a in task.assignments}[liar.address]
        assert outlier.state == task_pb2.ASSIGNMENT_STATE_SUBMITTED and not outlier.matched
        assert outlier.result_hash != task.result.result_hash


async def test_all_results_differ_aborts_without_fee(tmp_path):
    async with TestNetwork(tmp_path) as net:
        for salt in (b"a", b"b", b"c"):
            await net.add_nodes(1, lambda s=salt: LyingExecutor("gpt", salt=s))
        client = net.client()
        task = await client.wait(await client.submit(gpt_args(), fee=10), timeout=10)
        assert task.state == task_pb2.TASK_STATE_ABORTED
        assert "differ" in task.reason


async def test_gpt_needs_three_nodes_with_one_card(tmp_path):
    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(2, lambda: InstantExecutor("gpt"), card="NVIDIA A", vram=24 << 30)
        await net.add_nodes(2, lambda: InstantExecutor("gpt"), card="NVIDIA B", vram=24 << 30)
        client = net.client()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.submit(gpt_args(), fee=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "same card" in err.value.details()
        assert net.app.store.count_tasks_by_state() == {}
        await net.add_nodes(1, lambda: InstantExecutor("gpt"), card="NVIDIA B", vram=24 << 30)
        task = await client.wait(await client.submit(gpt_args(), fee=10), timeout=10)
        assert task.state == task_pb2.TASK_STATE_VALIDATED
        cards = {n.address: "B" for n in net.nodes[2:]}
        assert set(task.result.nodes) <= set(cards)


async def test_lapsed_lease_goes_to_another_node_with_the_same_card(tmp_path):
    async with TestNetwork(tmp_path, heartbeat_s=0.2) as net:
        victim = (await net.add_nodes(1, lambda: SlowExecutor(5.0), card="gpu-x", vram=8 << 30))[0]
        await net.add_nodes(1, lambda: LyingExecutor("gpt"), card="gpu-x", vram=8 << 30)
        honest = (await net.add_nodes(1, lambda: SlowExecutor(0.3), card="gpu-x", vram=8 << 30))[0]
        other_card = (await net.add_nodes(1, lambda: InstantExecutor("gpt"), card="gpu-y", vram=8 << 30))[0]
        client = net.client()
        task_id = await client.submit(gpt_args(), fee=10)
        await asyncio.sleep(0.3)
        await victim.close()  # gone without a result: the liar and the honest node disagree, so a third is needed
        spare = (await net.add_nodes(1, lambda: InstantExecutor("gpt"), card="gpu-x", vram=8 << 30))[0]
        task = await client.wait(task_id, timeout=15)
        assert task.state == task_pb2.TASK_STATE_VALIDATED
        by_node = {a.node: a for a in task.assignments}
        assert by_node[victim.address].state == task_pb2.ASSIGNMENT_STATE_EXPIRED
        assert other_card.address not in by_node
        assert set(task.result.nodes) == {honest.address, spare.address}


async def test_cancel_before_dispatch_only_by_creator(tmp_path):
    from chain import signing

    async with TestNetwork(tmp_path) as net:
        await net.add_nodes(3, lambda: SlowExecutor(2.0))
        client = net.client()
        first = await client.submit(gpt_args("busy"), fee=10)
        queued = await client.submit(gpt_args("waiting"), fee=10)
        domain = await client.domain()
        other = net.client()
        bad = signing.sign_cancel(other.key, domain, bytes.fromhex(queued[2:]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.stub.CancelTask(task_pb2.CancelTaskRequest(task_id=queued, signature=bad), timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        good = signing.sign_cancel(client.key, domain, bytes.fromhex(queued[2:]))
        resp = await client.stub.CancelTask(task_pb2.CancelTaskRequest(task_id=queued, signature=good), timeout=5)
        assert resp.task.state == task_pb2.TASK_STATE_CANCELLED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            sig = signing.sign_cancel(client.key, domain, bytes.fromhex(first[2:]))
            await client.stub.CancelTask(task_pb2.CancelTaskRequest(task_id=first, signature=sig), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


class _UnboundHashExecutor(InstantExecutor):
    """Honest pHashes under a signed hash that is not theirs: they would count, but could never be paid."""

    def _sd(self, job, digest):
        import dataclasses

        return dataclasses.replace(super()._sd(job, digest), result_hash=b"\x07" * 32)


async def test_an_sd_result_whose_hash_is_not_that_of_its_phashes_does_not_count(tmp_path):
    from tests.integration.protocol.simnet import sd_args

    async with TestNetwork(tmp_path) as net:
        gpu = {"card": "gpu-sd", "vram": 24 << 30}
        bad = (await net.add_nodes(1, lambda: _UnboundHashExecutor("sd", blobs=False), **gpu))[0]
        good = await net.add_nodes(2, lambda: SlowExecutor(0.2, task_type="sd", blobs=False), **gpu)
        client = net.client()
        task = await client.wait(await client.submit(sd_args(1), fee=10), timeout=10)
        assert task.state == task_pb2.TASK_STATE_VALIDATED
        assert set(task.result.nodes) == {n.address for n in good}
        a = {a.node: a for a in task.assignments}[bad.address]
        assert a.state == task_pb2.ASSIGNMENT_STATE_ERRORED and "hash of its pHashes" in a.error
