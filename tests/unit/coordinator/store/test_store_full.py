"""A store whose disk fills (issue #14 item 2): a commit that fails loses its whole group, and every
writer of that group hears so (RESOURCE_EXHAUSTED); nothing of it is reported durable later, and the
store takes writes again, without a restart, once space returns."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import pytest

from coordinator.errors import StorageFull
from coordinator.store import SqliteStore
from tests.support.diskfull import fill, small_disk
from tests.unit.coordinator.store.test_store import task


def _committed_ids(path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT task_id FROM tasks")}


def _big(i: int):
    return dataclasses.replace(task(i), args=b"x" * 4000)


async def _create(store: SqliteStore, ids) -> None:
    """What one CreateTasks call does: writes, then waits for the commit (in its own context, as an RPC)."""
    for i in ids:
        store.create_task(_big(i))
    await store.durable()


async def test_a_failed_commit_fails_every_waiter_of_its_group_and_the_store_recovers_when_space_returns(tmp_path):
    with small_disk(tmp_path / "disk") as disk:
        store = SqliteStore(disk / "c.db")
        store.enable_group_commit()
        failures, callbacks = [], []
        store.on_commit_failed(lambda: failures.append(1))
        try:
            await asyncio.create_task(_create(store, [1]))
            filler = fill(disk)
            # Three writers in one turn, enough pages that the log must grow: the commit fails.
            writers = [asyncio.create_task(_create(store, range(k * 100, k * 100 + 60))) for k in (1, 2, 3)]

            async def tell_once_durable() -> None:  # an ack: registered in the same turn, after the writes
                store.after_commit(lambda: callbacks.append("ran"))

            writers.append(asyncio.create_task(tell_once_durable()))
            results = await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 10)
            assert all(isinstance(r, StorageFull) for r in results[:3]), results
            assert all(r.status.name == "RESOURCE_EXHAUSTED" for r in results[:3])
            assert failures and callbacks == [], "a lost group's callbacks never run"
            assert store.get_task(_big(100).task_id) is None, "a lost write is not readable"
            assert _committed_ids(disk / "c.db") == {_big(1).task_id}

            filler.unlink()  # space returns: the next group commits, without a restart
            await asyncio.wait_for(asyncio.create_task(_create(store, [500])), 10)
            assert _committed_ids(disk / "c.db") == {_big(1).task_id, _big(500).task_id}
            assert store.get_task(_big(100).task_id) is None, "the failed writes were not made durable later"
        finally:
            store.close()


async def test_a_write_sqlite_refuses_for_space_loses_its_group_and_its_writers_hear_so(tmp_path):
    """SQLite can also fail the statement itself (and roll the whole transaction back): the writer gets
    StorageFull at once, and another writer of the same group gets it from durable()."""
    path = tmp_path / "c.db"
    store = SqliteStore(path)
    store.enable_group_commit()
    try:
        await asyncio.create_task(_create(store, [1]))
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count={pages}")  # the database may not grow: SQLITE_FULL

        async def early_writer() -> None:
            store.create_task(task(2))  # small: fits, but its group is lost with the next writer's
            await store.durable()

        async def filling_writer() -> None:
            for i in range(10, 200):
                store.create_task(_big(i))

        early = asyncio.create_task(early_writer())  # both run in one turn, the early one first
        with pytest.raises(StorageFull):
            await asyncio.create_task(filling_writer())
        with pytest.raises(StorageFull):
            await asyncio.wait_for(early, 10)
        assert store.get_task(task(2).task_id) is None and store.get_task(_big(10).task_id) is None
        store._db.execute("PRAGMA max_page_count=1073741823")
        await asyncio.wait_for(asyncio.create_task(_create(store, [3])), 10)
        assert _committed_ids(path) == {_big(1).task_id, _big(3).task_id}
    finally:
        store.close()
