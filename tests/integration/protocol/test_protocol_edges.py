"""Bad input on the full protocol (each: the right status, no state change) and the priced queue's order."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import grpc
import pytest
from eth_account import Account

from chain import signing
from coordinator.domain.models import TaskState
from coordinator.service.settings import ProtocolSettings
from helium.tasks import args_hash
from helium.v1 import task_pb2, worker_pb2, worker_pb2_grpc
from tests.integration.protocol.chainnet import ChainNet
from tests.integration.protocol.simnet import new_creator
from tests.support.network import gpt_args
from worker.errors import ConnectError
from worker.testing import InstantExecutor, SlowExecutor


async def _code(coro) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value.code()


async def test_bad_input_gets_the_right_status_and_changes_nothing(tmp_path):
    async with ChainNet(tmp_path) as net:
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        store = net.app.store
        before_nodes = {n.address: n.state for n in store.list_nodes()}

        # Join without stake: refused, and the node is not recorded.
        loner = net.make_node(Account.create(), InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        with pytest.raises(ConnectError) as err:
            await loner.__aenter__()
        assert "PERMISSION_DENIED" in str(err.value) and "without stake" in str(err.value)
        assert store.get_node(loner.address) is None

        creator = await new_creator(net, 10_000)
        client = net.client(creator)
        domain = await client.domain()

        # A signature from another key.
        req = await client.build(gpt_args("forged"), fee=100)
        other = Account.create()
        ahash = args_hash(req.args)
        tid = signing.compute_task_id(creator.address, req.nonce, ahash)
        req.signature = signing.sign_task(other, domain, tid, ahash, 100, req.nonce, req.deadline)
        assert await _code(client.stub.CreateTask(req, timeout=10)) == grpc.StatusCode.UNAUTHENTICATED

        # A fee of 0.
        assert await _code(client.submit(gpt_args("free"), fee=0)) == grpc.StatusCode.INVALID_ARGUMENT

        # A fee above the deposit; then one that fits alone but not with the pending one.
        assert await _code(client.submit(gpt_args("rich"), fee=10_001)) == grpc.StatusCode.FAILED_PRECONDITION
        assert store.count_tasks_by_state() == {}
        ok = await client.submit(gpt_args("fits"), fee=6_000)
        assert await _code(client.submit(gpt_args("too"), fee=6_000)) == grpc.StatusCode.FAILED_PRECONDITION
        assert sum(store.count_tasks_by_state().values()) == 1 and store.get_task(ok) is not None

        # Pause someone else's node: signed by another node's key.
        victim, intruder = nodes[0], nodes[1]
        ts = int(time.time())
        sig = signing.sign_node_control(intruder.key, domain, worker_pb2.NODE_ACTION_PAUSE, ts)
        async with grpc.aio.insecure_channel(net.address) as ch:
            stub = worker_pb2_grpc.WorkerServiceStub(ch)
            code = await _code(stub.ControlNode(worker_pb2.ControlNodeRequest(
                address=victim.address, action=worker_pb2.NODE_ACTION_PAUSE, timestamp=ts, signature=sig), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        await net.wait_settled([ok], timeout=30)
        assert {n.address: n.state for n in store.list_nodes()} == before_nodes


async def test_high_value_overtakes_and_aging_serves_the_low_one(tmp_path):
    # tau = 0.2 s: a 100x lower fee is made up after 0.2 * ln(100) = 0.92 s of waiting.
    protocol = ProtocolSettings(aging_tau=timedelta(seconds=0.2))
    async with ChainNet(tmp_path, protocol=protocol) as net:
        await net.add_nodes(3, lambda: SlowExecutor(1.2), card="gpu", vram=8 << 30)
        client = net.client()
        store = net.app.store

        def first_lease(task_id: str) -> int:
            return min(a.leased_ms for a in store.assignments_for(task_id))

        async def busy() -> str:
            blocker = await client.submit(gpt_args("block"), fee=10**6)
            while store.get_task(blocker).state == TaskState.QUEUED:
                await asyncio.sleep(0.02)
            return blocker

        # Queued 50 ms apart: the 100x value goes first.
        b1 = await busy()
        low = await client.submit(gpt_args("low1"), fee=10**3)
        await asyncio.sleep(0.05)
        high = await client.submit(gpt_args("hig1"), fee=10**5)
        await net.wait_settled([b1, low, high], timeout=30)
        assert first_lease(high) < first_lease(low)

        # The low one waited 1.1 s > 0.92 s before the high one came: aging serves it first.
        b2 = await busy()
        low = await client.submit(gpt_args("low2"), fee=10**3)
        await asyncio.sleep(0.6)
        waited = await client.submit(gpt_args("mid2"), fee=10**3)  # a same-value task, queued later
        await asyncio.sleep(0.5)
        high = await client.submit(gpt_args("hig2"), fee=10**5)
        await net.wait_settled([b2, low, waited, high], timeout=30)
        assert first_lease(low) < first_lease(high) < first_lease(waited)
        got = await client.get(high)
        assert got.state == task_pb2.TASK_STATE_SETTLED
