"""Protocol attacks (issue #13, the attack suite, attacks 4-6 and 10-15): a scripted node (`RawNode`) on the
real WorkerService stream of a real coordinator (port 0) sends what an honest worker never would, and each
test asserts the specific refusal and that nothing was counted, stored or paid for it."""

from __future__ import annotations

import asyncio

import pytest
from _protocol_harness import RawNode, eventually
from eth_account import Account

from chain import signing
from coordinator.domain.models import AssignmentState
from helium.v1 import task_pb2, worker_pb2
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
