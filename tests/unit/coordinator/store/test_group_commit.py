"""Group commit: one SQLite transaction per event-loop turn, with every write still whole or absent,
and nothing reported (callbacks, `durable`) before it is committed."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace

import pytest

from coordinator.domain.models import TaskState
from coordinator.errors import AlreadyExists, FailedPrecondition
from coordinator.store import SqliteStore
from tests.unit.coordinator.store.test_store import assignment, task


def _committed_ids(path) -> set[str]:
    """What another connection (a restarted coordinator) would find."""
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT task_id FROM tasks")}


@pytest.fixture
async def grouped(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    store.enable_group_commit()
    yield store, tmp_path / "c.db"
    store.close()


async def test_a_turns_writes_are_readable_at_once_and_committed_together_before_callbacks_run(grouped):
    store, path = grouped
    seen_at_callback: list[set[str]] = []
    store.create_task(task(1))
    store.create_task(task(2))
    store.after_commit(lambda: seen_at_callback.append(_committed_ids(path)))
    assert store.get_task(task(1).task_id) is not None  # read-your-writes inside the turn
    assert _committed_ids(path) == set()  # not durable yet, and nobody was told
    assert seen_at_callback == []
    await store.durable()
    assert seen_at_callback == [{task(1).task_id, task(2).task_id}]
    assert _committed_ids(path) == {task(1).task_id, task(2).task_id}


async def test_a_refused_write_rolls_back_alone_and_the_turns_other_writes_stand(grouped):
    store, path = grouped
    store.create_task(task(1))
    with pytest.raises(AlreadyExists):
        store.create_task(task(1))
    store.create_task(task(2))
    done = task(2)
    with pytest.raises(FailedPrecondition):  # QUEUED -> SETTLED is not a transition
        store.save_task(replace(done, state=TaskState.SETTLED))
    await store.durable()
    assert _committed_ids(path) == {task(1).task_id, task(2).task_id}
    assert store.get_task(task(2).task_id).state == TaskState.QUEUED


async def test_put_value_is_durable_on_return(grouped):
    store, path = grouped
    store.create_task(task(3))
    store.put_value("journal", "batch 1")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM kv WHERE key = 'journal'").fetchone() == ("batch 1",)
    assert _committed_ids(path) == {task(3).task_id}  # it committed the turn's earlier writes with it


async def test_without_group_commit_every_write_commits_on_return(tmp_path):
    store = SqliteStore(tmp_path / "c.db")
    store.create_task(task(4))
    assert _committed_ids(tmp_path / "c.db") == {task(4).task_id}
    calls = []
    store.after_commit(lambda: calls.append(1))
    assert calls == [1]
    store.close()


async def test_commit_happens_on_the_next_loop_turn_without_anyone_waiting(grouped):
    store, path = grouped
    store.create_task(task(5))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert _committed_ids(path) == {task(5).task_id}


async def test_a_several_statement_write_that_fails_half_way_leaves_none_of_itself(grouped):
    store, path = grouped
    store.create_task(task(6))
    store.create_task(task(7))
    store.dispatch_task(replace(task(6), state=TaskState.DISPATCHED), [assignment(1, task(6).task_id)])
    with pytest.raises(sqlite3.IntegrityError):  # the task row is written, then the assignment id collides
        store.dispatch_task(replace(task(7), state=TaskState.DISPATCHED), [assignment(1, task(7).task_id)])
    await store.durable()
    assert store.get_task(task(7).task_id).state == TaskState.QUEUED
    assert [a.task_id for a in store.assignments_for(task(6).task_id)] == [task(6).task_id]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT state FROM tasks WHERE task_id = ?", (task(7).task_id,)).fetchone() == ("queued",)


async def test_durable_waits_for_the_callers_own_writes_not_for_a_group_opened_since(grouped):
    store, path = grouped
    store.create_task(task(8))
    await store.durable()
    asyncio.get_running_loop().call_soon(store.create_task, task(9))  # other code, its own context
    await asyncio.sleep(0)
    assert store._group_open  # task 9's group is open...
    await store.durable()  # ...but this task wrote nothing since its commit: no wait
    assert _committed_ids(path) == {task(8).task_id}
    store.create_task(task(10))
    await store.durable()
    assert _committed_ids(path) == {task(8).task_id, task(9).task_id, task(10).task_id}


def _stored_qos(path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        return {r[0]: r[1] for r in db.execute("SELECT address, qos FROM nodes")}


async def test_soon_node_writes_are_read_at_once_merged_and_written_within_the_delay(grouped, monkeypatch):
    from coordinator.domain.models import Card, NodeCaps, NodeRecord, NodeState, TaskType
    from coordinator.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "_SOON_NODE_DELAY_S", 0.05)
    store, path = grouped
    caps = NodeCaps(Card("c", 1), frozenset({TaskType.GPT}))
    store.save_node(NodeRecord("0xA", caps, NodeState.AVAILABLE))
    await asyncio.sleep(0.01)  # committed
    for i in range(5):  # a node scored five times in a row
        store.save_node(NodeRecord("0xA", caps, NodeState.AVAILABLE, {"scores": [i]}), soon=True)
    assert store.get_node("0xA").qos == {"scores": [4]}, "read at once"
    assert _stored_qos(path)["0xA"] == "{}", "the write waits"
    await asyncio.sleep(0.2)
    assert _stored_qos(path)["0xA"] == '{"scores": [4]}', "the last one is written within the delay"
    # A state change is never deferred, and it carries (supersedes) a pending score.
    store.save_node(NodeRecord("0xA", caps, NodeState.AVAILABLE, {"scores": [5]}), soon=True)
    store.save_node(NodeRecord("0xA", caps, NodeState.PAUSED, {"scores": [5]}))
    await asyncio.sleep(0.01)
    assert _stored_qos(path)["0xA"] == '{"scores": [5]}'
    store.save_node(NodeRecord("0xA", caps, NodeState.PAUSED, {"scores": [6]}), soon=True)
    store.close()  # a clean stop writes what is pending
    assert _stored_qos(path)["0xA"] == '{"scores": [6]}'


async def test_the_wal_is_checkpointed_by_its_own_thread_not_inside_the_loops_commits(grouped):
    store, path = grouped
    from coordinator.store._checkpoint import WAL_RESET_PAGES

    reset_at = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert reset_at == WAL_RESET_PAGES > 1000, "the loop's commits checkpoint seldom"
    checkpointer = store._checkpointer
    assert checkpointer is not None and checkpointer._thread.is_alive()
    for i in range(1, 201):
        store.create_task(task(i))
        if i % 20 == 0:
            await asyncio.sleep(0)  # a turn: its writes are committed to the log
    await asyncio.sleep(0)
    frames = checkpointer.checkpoint()
    assert frames is not None and frames[1] > 0 and frames[2] == frames[1], "every committed frame copied"
    runs = checkpointer.runs
    await asyncio.sleep(checkpointer.interval_s * 3)
    assert checkpointer.runs > runs, "the thread checkpoints on its own"
    store.close()
    assert not checkpointer._thread.is_alive()
    assert len(_committed_ids(path)) == 200


async def _log_size_after_sustained_writes(path, reset_pages: int, monkeypatch) -> tuple[int, int]:
    from coordinator.store import sqlite as sqlite_store

    monkeypatch.setattr(sqlite_store, "WAL_RESET_PAGES", reset_pages)
    store = SqliteStore(path)
    store.enable_group_commit()
    store._checkpointer.interval_s = 0.001  # always running beside the writer
    try:
        for i in range(1, 3001):
            store.create_task(task(i))
            if i % 10 == 0:
                await asyncio.sleep(0)  # a turn: its writes are committed
        await asyncio.sleep(0)
        page = store._db.execute("PRAGMA page_size").fetchone()[0]
        return path.with_name(path.name + "-wal").stat().st_size, page
    finally:
        store.close()


@pytest.mark.parametrize("reset_pages", [50, 0])
async def test_the_log_starts_over_under_sustained_writes(tmp_path, monkeypatch, reset_pages):
    """The thread's checkpoints run beside the writer, which always has appended more by the time one
    ends, so the log never starts over by itself (0: no writer checkpoint); the writer's own rare
    checkpoint lets it (without it, a sustained bench grew the log past 1 GB)."""
    path = tmp_path / "c.db"
    size, page = await _log_size_after_sustained_writes(path, reset_pages, monkeypatch)
    assert len(_committed_ids(path)) == 3000
    if reset_pages:
        assert size < 4 * reset_pages * page, f"the log grew to {size // page} pages"
    else:  # the failure the writer's checkpoint prevents: 3,000 tasks wrote well over 500 pages of log
        assert size > 500 * page
