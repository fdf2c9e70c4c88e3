"""A node's live session and the queue walk: acks that wait for a message to ride with, several
assignments per node, and a queue head the dispatcher may change while it walks it."""

from __future__ import annotations

import asyncio

from coordinator.domain.models import Card, NodeCaps, NodeRecord, NodeState, Task, TaskState, TaskType
from coordinator.service.hooks import TaskQueue
from coordinator.service.messages import AckMsg, DrainMsg
from coordinator.service.nodes import NodeSession
from coordinator.store.sqlite import caps_from_json, caps_to_json


def _session(batches: bool, max_assignments: int = 1) -> NodeSession:
    caps = NodeCaps(Card("c", 1), frozenset({TaskType.GPT}), max_assignments=max_assignments)
    s = NodeSession(NodeRecord("0xN", caps, NodeState.AVAILABLE))
    s.batches = batches
    return s


def _drain(s: NodeSession) -> list:
    out = []
    while not s.outbox.empty():
        out.append(s.outbox.get_nowait())
    return out


async def test_ack_rides_with_the_next_message():
    s = _session(batches=True)
    s.ack("a-1", delay_s=5.0)
    s.ack("a-2", delay_s=5.0)
    assert s.outbox.empty(), "held back for a message to ride with"
    s.send(DrainMsg("bye"))
    assert _drain(s) == [AckMsg("a-1"), AckMsg("a-2"), DrainMsg("bye")], "acks first, in order"
    assert s._ack_timer is None


async def test_ack_goes_alone_after_the_delay():
    s = _session(batches=True)
    s.ack("a-1", delay_s=0.02)
    await asyncio.sleep(0.1)
    assert _drain(s) == [AckMsg("a-1")]


async def test_ack_is_immediate_for_a_worker_without_batches():
    s = _session(batches=False)
    s.ack("a-1", delay_s=5.0)
    assert _drain(s) == [AckMsg("a-1")]


async def test_a_closed_session_sends_no_ack():
    s = _session(batches=True)
    s.ack("a-1", delay_s=5.0)
    s.connected = False
    s.flush_acks()
    assert s.outbox.empty() and s._ack_timer is None


def test_free_counts_the_assignments_a_node_may_hold():
    s = _session(batches=True, max_assignments=2)
    assert s.free and not s.busy
    s.assigned["a-1"] = None
    assert s.free and s.busy
    s.assigned["a-2"] = None
    assert not s.free
    assert s.release("a-1") and not s.release("a-1")
    assert s.free


def test_caps_keep_max_assignments_and_read_old_rows():
    caps = NodeCaps(Card("c", 1), frozenset({TaskType.GPT}), max_assignments=4)
    assert caps_from_json(caps_to_json(caps)) == caps
    old = caps_to_json(NodeCaps(Card("c", 1), frozenset({TaskType.GPT}))).replace(', "max_assignments": 1', "")
    assert "max_assignments" not in old and caps_from_json(old).max_assignments == 1


def _task(i: int, priority: float) -> Task:
    return Task(task_id=f"0x{i:064x}", type=TaskType.GPT, state=TaskState.QUEUED, creator="0xC", nonce=i, fee=1,
                deadline=0, args=b"{}", args_hash=b"", signature=b"", model="m", priority=priority,
                created_ms=i, updated_ms=i, expires_ms=10**15)  # fmt: skip


def test_queue_head_walks_in_order_while_tasks_are_removed():
    q = TaskQueue(1000)
    for i in range(300):
        q.push(_task(i, priority=float(i % 7)))
    expected = [t.task_id for t in q]
    seen = []
    for t in q.head(250, chunk=16):
        seen.append(t.task_id)
        q.remove(t.task_id)  # the dispatcher removes what it dispatches
    assert seen == expected[:250]
    assert [t.task_id for t in q] == expected[250:]
    assert list(q.head(5)) == list(q)[:5]
