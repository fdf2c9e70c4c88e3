"""One contract, two stores: the same suite runs against SQLite and memory."""

from __future__ import annotations

import pytest

from coordinator.domain.models import (
    Assignment,
    AssignmentState,
    Card,
    NodeCaps,
    NodeRecord,
    NodeState,
    Task,
    TaskState,
    TaskType,
)
from coordinator.errors import AlreadyExists, FailedPrecondition, NotFound
from coordinator.store import MemoryStore, SqliteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    s = SqliteStore(tmp_path / "db.sqlite") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def task(i: int, creator: str = "0xC", fee: int = 10, priority: float = 0.0, **kw) -> Task:
    return Task(task_id=f"0x{i:064x}", type=TaskType.GPT, state=TaskState.QUEUED, creator=creator, nonce=i, fee=fee,
                deadline=10**10, args=b"{}", args_hash=b"\x00" * 32, signature=b"\x01" * 65, model="m",
                priority=priority, created_ms=i, updated_ms=i, expires_ms=10**12, **kw)  # fmt: skip


def assignment(i: int, task_id: str, node: str = "0xN", state=AssignmentState.LEASED) -> Assignment:
    return Assignment(f"a-{i}", task_id, node, state, leased_ms=i, lease_expires_ms=i + 1000)


def test_create_is_unique_by_id_and_by_creator_nonce(store):
    store.create_task(task(1))
    with pytest.raises(AlreadyExists):
        store.create_task(task(1))
    dup_nonce = task(2)
    dup_nonce = Task(**{**dup_nonce.__dict__, "nonce": 1})
    with pytest.raises(AlreadyExists):
        store.create_task(dup_nonce)
    assert store.count_tasks_by_state() == {TaskState.QUEUED: 1}


def test_queue_order_and_pending_fees(store):
    store.create_task(task(1, priority=1.0))
    store.create_task(task(2, priority=5.0))
    store.create_task(task(3, priority=5.0, creator="0xD"))
    assert [t.nonce for t in store.queued_tasks()] == [2, 3, 1]
    assert store.pending_fees("0xC") == 20 and store.pending_fees("0xD") == 10


def _as(t: Task, state: TaskState, **kw) -> Task:
    return Task(**{**t.__dict__, "state": state, **kw})


def test_pending_fees_follow_every_transition(store, tmp_path):
    """The fees of a creator's open tasks (queued, dispatched, validated) stay exact as tasks move: the
    SQLite store keeps the sum as it writes, and a fresh reader of the same file agrees."""
    ts = [task(i, fee=10 * i) for i in range(1, 7)]
    for t in ts[:3]:
        store.create_task(t)
    assert store.pending_fees("0xC") == 60  # read once here, kept from now on
    for t in ts[3:]:
        store.create_task(t)
    assert store.pending_fees("0xC") == 210
    g = Card("gpu", 8)
    store.save_task(_as(ts[0], TaskState.DISPATCHED, card=g))  # open -> open
    store.save_task(_as(ts[0], TaskState.VALIDATED, card=g))
    store.save_task(_as(ts[0], TaskState.SETTLED, card=g))  # -10
    store.save_task(_as(ts[1], TaskState.CANCELLED))  # -20
    store.save_task(_as(ts[2], TaskState.DISPATCHED, card=g))
    store.save_task(_as(ts[2], TaskState.ABORTED, card=g))  # -30
    store.save_task(_as(ts[2], TaskState.SETTLED, card=g))  # closed -> closed: no change
    store.save_task(_as(ts[3], TaskState.DISPATCHED, card=g))
    store.save_task(_as(ts[3], TaskState.QUEUED, card=g))  # back to the queue: still open
    assert store.pending_fees("0xC") == 210 - 10 - 20 - 30
    with pytest.raises(FailedPrecondition):
        store.save_task(_as(ts[4], TaskState.SETTLED))  # refused: changes nothing
    assert store.pending_fees("0xC") == 210 - 10 - 20 - 30
    if isinstance(store, SqliteStore):
        fresh = SqliteStore(tmp_path / "db.sqlite")
        assert fresh.pending_fees("0xC") == store.pending_fees("0xC")
        fresh.close()


def test_transitions_are_checked_and_refusals_change_nothing(store):
    t = task(1)
    store.create_task(t)
    settled = Task(**{**t.__dict__, "state": TaskState.SETTLED})
    with pytest.raises(FailedPrecondition):
        store.save_task(settled)
    assert store.get_task(t.task_id).state == TaskState.QUEUED
    with pytest.raises(NotFound):
        store.save_task(task(9))
    dispatched = Task(**{**t.__dict__, "state": TaskState.DISPATCHED, "card": Card("gpu", 8)})
    store.dispatch_task(dispatched, [assignment(1, t.task_id), assignment(2, t.task_id, "0xM")])
    assert store.get_task(t.task_id).card == Card("gpu", 8)
    assert [a.assignment_id for a in store.open_assignments()] == ["a-1", "a-2"] or len(store.open_assignments()) == 2
    assert [t2.task_id for t2 in store.active_tasks()] == [t.task_id]
    # A failing transition inside save_assignments rolls the assignment write back too.
    bad = Task(**{**dispatched.__dict__, "state": TaskState.SETTLED})
    with pytest.raises(FailedPrecondition):
        store.save_assignments([assignment(3, t.task_id, "0xO")], bad)
    assert store.get_assignment("a-3") is None
    done = Task(**{**dispatched.__dict__, "state": TaskState.VALIDATED, "result_nodes": ("0xN", "0xM")})
    sub = Assignment(**{**assignment(1, t.task_id).__dict__, "state": AssignmentState.SUBMITTED,
                        "result_hash": b"\x02" * 32, "phashes": (2**63 + 5,), "submission_order": 1})  # fmt: skip
    store.save_assignments([sub], done)
    got = store.get_assignment("a-1")
    assert got.state == AssignmentState.SUBMITTED and got.phashes == (2**63 + 5,)
    assert store.get_task(t.task_id).result_nodes == ("0xN", "0xM")
    assert [a.assignment_id for a in store.assignments_for(t.task_id)] == ["a-1", "a-2"]
    # An update sets what may change; an assignment's identity (task, node, lease start) stays.
    moved = Assignment(**{**sub.__dict__, "node": "0xZ", "leased_ms": 99, "state": AssignmentState.EXPIRED})
    store.save_assignments([moved])
    got = store.get_assignment("a-1")
    assert (got.node, got.leased_ms, got.state) == ("0xN", 1, AssignmentState.EXPIRED)


def test_nodes_and_values(store):
    caps = NodeCaps(Card("gpu", 8 << 30), frozenset({TaskType.GPT, TaskType.SD}), frozenset({"float16"}),
                    frozenset({4}), ("transformers",), ("m1",), ("m2",), 5, "0.1.0", "cuda:0")  # fmt: skip
    store.save_node(NodeRecord("0xN", caps, NodeState.AVAILABLE, {"scores": [10]}, 7))
    got = store.get_node("0xN")
    assert got.caps == caps and got.qos == {"scores": [10]} and got.last_seen_ms == 7
    assert [n.address for n in store.list_nodes()] == ["0xN"]
    assert store.get_value("k") is None
    store.put_value("k", "v")
    assert store.get_value("k") == "v"


def test_sqlite_survives_reopen(tmp_path):
    s = SqliteStore(tmp_path / "db.sqlite")
    s.create_task(task(1))
    s.close()
    s2 = SqliteStore(tmp_path / "db.sqlite")
    assert s2.get_task(f"0x{1:064x}").state == TaskState.QUEUED
    s2.close()
