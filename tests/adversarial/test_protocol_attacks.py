"""Protocol attacks (issue #13, the attack suite, attacks 4-6 and 10-15): a scripted node (`RawNode`) on the
real WorkerService stream of a real coordinator (port 0) sends what an honest worker never would, and each
test asserts the specific refusal and that nothing was counted, stored or paid for it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest
from _protocol_harness import RawNode, eventually
from eth_account import Account

from chain import signing
from coordinator.domain.models import AssignmentState
from helium.v1 import admin_pb2, admin_pb2_grpc, task_pb2, worker_pb2, worker_pb2_grpc
from tests.adversarial.conftest import gpt_args, honest

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def raw(attack):
    """`await raw()`: a joined RawNode on the attack network (closed at the end)."""
    made: list[RawNode] = []

    async def make(key=None, join: bool = True) -> RawNode:
        node = RawNode(attack.net.address, key)
        made.append(node)
        if join:
            await node.join()
        return node

    yield make
    for node in made:
        await node.close()


def _mine(attack, task_id: str, node: str):
    return attack.assignments(task_id)[node]


async def test_4_another_tasks_signed_result_replayed_is_not_counted(attack, raw):
    await attack.nodes(2, honest())
    x = await raw()
    tid_a = await attack.submit(gpt_args("task A"))
    a = await x.next("assignment")
    result_a = x.honest_result(a)
    await x.send(result=result_a)
    assert x.address in (await attack.finished(tid_a)).result.nodes  # x's own result of A counted, once
    tid_b = await attack.submit(gpt_args("task B"))
    b = await x.next("assignment")
    assert b.task_id == tid_b
    replay = worker_pb2.Result()
    replay.CopyFrom(result_a)
    replay.assignment_id, replay.task_id = b.assignment_id, b.task_id  # A's hash, signature and output
    await x.send(result=replay)
    task = await attack.finished(tid_b)
    assert task.result.validation == "quorum 2/3" and x.address not in task.result.nodes
    mine = _mine(attack, tid_b, x.address)
    assert mine.state == AssignmentState.ERRORED and mine.error == "result signature does not verify"
    assert not mine.matched and mine.result_hash == result_a.result_hash  # kept as evidence, never counted
    assert task.result.result_hash != result_a.result_hash and "task A" not in task.result.output_json
    assert attack.evidence(tid_b) == []


async def test_5_a_result_signed_by_another_key_is_not_counted(attack, raw):
    await attack.nodes(2, honest())
    x = await raw()
    tid = await attack.submit(gpt_args("signed by whom"))
    a = await x.next("assignment")
    y = Account.create()  # another node's key: the hash and output are honest, the signer is not x
    await x.send(result=x.honest_result(a, key=y))
    task = await attack.finished(tid)
    assert task.result.validation == "quorum 2/3" and x.address not in task.result.nodes
    assert y.address not in task.result.nodes
    mine = _mine(attack, tid, x.address)
    assert mine.state == AssignmentState.ERRORED and mine.error == "result signature does not verify"
    assert a.assignment_id in x.acks  # answered (the node stops re-sending), not counted


async def test_12_a_result_for_another_nodes_assignment_is_ignored(attack, raw):
    (h,) = await attack.nodes(1, honest(seconds=1.0))
    x, y = await raw(), await raw()
    tid = await attack.submit(gpt_args("whose assignment"))
    ax, ay = await x.next("assignment"), await y.next("assignment")
    theirs = await eventually(lambda: attack.assignments(tid).get(h.address))
    # x answers h's assignment first, with a wrong hash signed by x and by h's own key: neither counts.
    forged = worker_pb2.Result(assignment_id=theirs.assignment_id, task_id=tid, result_hash=b"\x11" * 32,
                               signature=signing.sign_result(x.key, x.domain, bytes.fromhex(tid[2:]), b"\x11" * 32),
                               inline_output=b'{"choices": []}')  # fmt: skip
    await x.send(result=forged)
    await x.send(error=worker_pb2.ErrorReport(assignment_id=theirs.assignment_id, task_id=tid,
                                              kind=worker_pb2.ERROR_KIND_CRASH, message="forged crash"))  # fmt: skip
    await asyncio.sleep(0.3)
    still = attack.assignments(tid)[h.address]
    assert still.state.open and still.result_hash == b"" and still.error == ""
    await x.send(result=x.honest_result(ax))
    await y.send(result=y.honest_result(ay))
    task = await attack.finished(tid, timeout=30)
    assigns = attack.assignments(tid)
    assert assigns[h.address].state == AssignmentState.SUBMITTED and assigns[h.address].matched
    assert theirs.assignment_id not in x.acks and task.result.validation.startswith("quorum")


async def test_11_a_result_after_the_lease_lapsed_is_never_counted(attack, raw):
    await attack.nodes(2, honest(seconds=0.3))
    x = await raw()
    tid = await attack.submit(gpt_args("too late"))
    a = await x.next("assignment")
    await attack.nodes(1, honest(seconds=0.05))  # the spare that takes x's place
    # x heartbeats without the assignment: the coordinator takes it as lost and leases a replacement.
    lapsed = None
    for _ in range(100):
        await x.send(heartbeat=worker_pb2.Heartbeat(free_vram_bytes=1 << 30))
        lapsed = _mine(attack, tid, x.address)
        if not lapsed.state.open:
            break
        await asyncio.sleep(0.1)
    assert lapsed.state == AssignmentState.EXPIRED, lapsed
    late = x.honest_result(a)  # an honest, well-signed result, only late
    await x.send(result=late)
    await x.send(result=late)
    task = await attack.finished(tid)
    assert task.state == task_pb2.TASK_STATE_VALIDATED and task.result.validation == "quorum 2/3"
    assert x.address not in task.result.nodes
    assert sum(a.matched for a in attack.assignments(tid).values()) == 2  # the two counted: neither is x
    mine = _mine(attack, tid, x.address)
    assert mine.state == AssignmentState.EXPIRED and not mine.matched and mine.result_hash == b""
    assert await eventually(lambda: a.assignment_id in x.acks)  # answered, so the node stops re-sending


async def test_13_one_key_connected_twice_is_one_session(attack, raw):
    await attack.nodes(2, honest())
    key = Account.create()
    first = await raw(key)
    second = await raw(key)
    d = attack.net.app.dispatcher
    assert [n for n in d.nodes if n == key.address] == [key.address]
    assert d.nodes[key.address].record.address == key.address
    # The older stream is ended: it is no session of its own, it gets no assignment.
    assert await first.closed(timeout=5) is not None
    tid = await attack.submit(gpt_args("one key, one vote"))
    a = await second.next("assignment")
    await second.send(result=second.honest_result(a))
    task = await attack.finished(tid)
    assigns = attack.net.app.store.assignments_for(tid)
    assert [x.node for x in assigns].count(key.address) == 1 and len(assigns) == 3
    assert list(task.result.nodes).count(key.address) == 1


@pytest.mark.slow  # it sends a 65 MiB message
async def test_10_an_oversize_output_is_refused_cleanly_and_never_counted(attack, raw):
    await attack.nodes(1, honest(seconds=0.3))
    x, y = await raw(), await raw()
    tid = await attack.submit(gpt_args("a big answer"))
    ax, ay = await x.next("assignment"), await y.next("assignment")
    await attack.nodes(2, honest(seconds=0.05))  # spares for the two places the cheats lose
    big = x.honest_result(ax)
    big.inline_output = b"A" * (9 << 20)  # over the coordinator's 8 MiB: it belongs in the relay
    await x.send(result=big)
    huge = y.honest_result(ay)
    huge.inline_output = b"B" * (65 << 20)  # over gRPC's 64 MiB message limit itself
    with contextlib.suppress(Exception):  # the transport may refuse the write itself
        await y.send(result=huge)
    assert await x.closed() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await y.closed() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "result.inline_output is 9437184 bytes" in await x.call.details()
    task = await attack.finished(tid, timeout=30)  # the coordinator goes on: the task completes via others
    assert task.state == task_pb2.TASK_STATE_VALIDATED and not {x.address, y.address} & set(task.result.nodes)
    for node in (x, y):
        a = _mine(attack, tid, node.address)
        assert a.state == AssignmentState.EXPIRED and a.output == b"" and not a.matched
    assert attack.net.app.dispatcher.nodes.keys().isdisjoint({x.address, y.address})


async def test_14_a_heartbeat_flood_is_cut_off_and_everyone_else_stays_served(attack, raw):
    await attack.nodes(3, honest(seconds=0.05))
    one, batched = await raw(), await raw()
    hb = worker_pb2.ConnectRequest(heartbeat=worker_pb2.Heartbeat(free_vram_bytes=1 << 30))
    burst = worker_pb2.ConnectRequest(batch=worker_pb2.ConnectRequestBatch(messages=[hb] * 5000))

    async def flood(node: RawNode, msg, seconds: float = 10.0) -> int:
        sent, end = 0, time.monotonic() + seconds
        with contextlib.suppress(Exception):
            while node.ended is None and time.monotonic() < end:
                await node.call.write(msg)
                sent += 1
        return sent

    floods = [asyncio.create_task(flood(one, hb))]
    await batched.send(batch=burst.batch)  # one message carrying 5000 heartbeats
    client = attack.net.client()
    tid = await client.submit(gpt_args("still served"), fee=10)
    latencies = []
    for _ in range(10):  # GetTask while the flood runs
        t0 = time.perf_counter()
        await client.get(tid)
        latencies.append(time.perf_counter() - t0)
    assert (await client.wait(tid, timeout=20)).state == task_pb2.TASK_STATE_VALIDATED
    assert await batched.closed() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "heartbeat flood: more than 50 heartbeats in one second" in await batched.call.details()
    # The one-by-one flooder is cut the same way (its status races its own writes on the client side).
    assert await one.closed() is not None
    sent = await asyncio.gather(*floods)
    assert one.ended != grpc.StatusCode.OK
    assert sent[0] > 50  # it did flood: the cut came after the limit, not before
    assert max(latencies) < 2.0, latencies  # generous: a loaded 2-core host; unloaded it is milliseconds
    assert set(attack.net.app.dispatcher.nodes).isdisjoint({one.address, batched.address})
    assert len(attack.net.app.dispatcher.nodes) == 3


async def test_15_a_forged_pause_or_quit_is_refused(attack, raw):
    (h,) = await attack.nodes(1, honest(seconds=0.05))
    x = await raw()
    stub = worker_pb2_grpc.WorkerServiceStub(x.channel)
    now = int(time.time())
    for action in (worker_pb2.NODE_ACTION_PAUSE, worker_pb2.NODE_ACTION_QUIT):
        # x signs a control naming h: its own valid signature, for someone else's node.
        req = worker_pb2.ControlNodeRequest(address=h.address, action=action, timestamp=now,
                                            signature=signing.sign_node_control(x.key, x.domain, action, now))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ControlNode(req, timeout=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert f"may not control node {h.address}" in err.value.details()
    # h's own signature, captured an hour ago and replayed: outside the window.
    stale = signing.sign_node_control(h.key, x.domain, worker_pb2.NODE_ACTION_QUIT, now - 3600)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ControlNode(worker_pb2.ControlNodeRequest(address=h.address, action=worker_pb2.NODE_ACTION_QUIT,
                                                             timestamp=now - 3600, signature=stale), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    admin = admin_pb2_grpc.AdminServiceStub(x.channel)
    for metadata, code in (((), grpc.StatusCode.UNAUTHENTICATED),
                           ((("authorization", "Bearer guessed"),), grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await admin.PauseNode(admin_pb2.PauseNodeRequest(address=h.address), timeout=5, metadata=metadata)
        assert err.value.code() == code
    d = attack.net.app.dispatcher
    assert d.nodes[h.address].record.state.value == "available"
    assert attack.net.app.store.get_node(h.address).state.value == "available"
    await attack.nodes(1, honest(seconds=0.05))
    tid = await attack.submit(gpt_args("h still works"))
    ax = await x.next("assignment")
    await x.send(result=x.honest_result(ax))
    task = await attack.finished(tid)
    assert h.address in {a.node for a in attack.net.app.store.assignments_for(tid)} and task.result.nodes


@pytest.fixture
async def chain_net(tmp_path):
    """A coordinator on the embedded chain (staking, deposits, settlement), no nodes yet."""
    from tests.integration.protocol.chainnet import ChainNet

    async with ChainNet(tmp_path) as net:
        yield net


@pytest.mark.slow
async def test_6_an_unstaked_key_cannot_join_and_a_settlement_naming_one_pays_it_nothing(chain_net):
    from chain.deploy import ETHER
    from tests.unit.chain._builders import make_task

    net = chain_net
    x = RawNode(net.address)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await x.join()
    finally:
        await x.close()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "without stake" in err.value.details()
    assert x.address not in net.app.dispatcher.nodes and net.app.store.get_node(x.address) is None
    # On chain: a settlement whose results name a staked node and an unstaked key (a coordinator signing
    # results with keys of its own) pays the unstaked key nothing and charges the creator only the rest.
    (staked,) = [Account.create()]
    await net.stake(staked)
    sybil, creator = Account.create(), Account.create()
    client = net.chain.client(net.chain.keys.coordinator)
    faucet = net.chain.client(net.chain.keys.faucet)
    await faucet.send_value(creator.address, 2 * ETHER)
    await net.chain.client(creator).deposit(creator, ETHER)
    deadline, fee = await client.block_timestamp() + 3600, 10**16
    domain = signing.Domain(net.chain.chain_id, net.chain.addresses.ledger)
    receipt = await client.wait_receipt(await client.settle([make_task(domain, creator, 1, fee, deadline,
                                                                       [staked, sybil], orders=(1, 2))]))
    unpaid = [e for e in await client.events(receipt.block_number) if e.name == "Unpaid"]
    assert [e.args["node"] for e in unpaid] == [sybil.address] and unpaid[0].args["amount"] > 0
    assert await client.credit_of(sybil.address) == 0
    paid = await client.credit_of(staked.address)
    assert 0 < paid < fee and await client.deposit_balance(creator.address) == ETHER - paid


@pytest.mark.slow
async def test_18_a_creator_fee_above_its_deposit_is_refused_and_nothing_is_stored(chain_net):
    from chain.deploy import ETHER

    net = chain_net
    creator = Account.create()
    faucet = net.chain.client(net.chain.keys.faucet)
    await faucet.send_value(creator.address, ETHER)
    deposit = 10**15
    await net.chain.client(creator).deposit(creator, deposit)
    client = net.client(creator)
    with pytest.raises(Exception) as err:
        await client.submit(gpt_args("more than I have"), fee=deposit + 1)
    exc = err.value
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else getattr(exc, "code", None)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, exc
    assert f"fee {deposit + 1} wei exceeds the creator's free deposit: {deposit} deposited" in str(exc)
    assert net.app.store.list_tasks() == [] and net.app.store.pending_fees(creator.address) == 0
    tid = await client.submit(gpt_args("all I have"), fee=deposit)  # the whole deposit is accepted
    assert [t.task_id for t in net.app.store.list_tasks()] == [tid]
