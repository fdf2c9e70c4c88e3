"""SQLite implementation of the coordinator store (WAL, synchronous=NORMAL).

NORMAL in WAL mode survives a `kill -9` of the process (only a power loss can
drop the last commits), at ~15x the commit rate of FULL. Every write method is a
single transaction.

Group commit (`enable_group_commit`, which the coordinator turns on): the writes made during one
turn of the event loop share one SQLite transaction, committed at the start of the next turn. A write
method of several statements runs in its own SAVEPOINT (a single failing statement SQLite undoes by
itself), so a refused write is rolled back alone and the others stand: every write is still whole or
absent. What depends on durability waits for the commit:
`after_commit` callbacks (acks to workers, task events) run right after it and `durable()` returns
after it (CreateTask answers), so nothing acknowledged can be lost by a `kill -9`, and a crash before
the commit loses only writes nobody was told about. `put_value` (the settlement journal) commits at
once, because a chain transaction is sent right after it.

A commit that fails (a full disk, an I/O error) loses its whole group: SQLite may already have rolled the
transaction back itself. Every waiter of the group then fails with `StorageFull` (RESOURCE_EXHAUSTED) or
`Unavailable`, its callbacks are dropped, and the `on_commit_failed` listeners (the dispatcher) rebuild
what they hold in memory from what is stored. The next group simply tries again: when space returns,
writes succeed without a restart.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import structlog

from coordinator.domain.models import (
    Assignment,
    AssignmentState,
    NodeRecord,
    NodeState,
    Task,
    TaskState,
)
from coordinator.errors import AlreadyExists, CoordinatorError, NotFound, StorageFull, Unavailable
from coordinator.store._checkpoint import WAL_RESET_PAGES, WalCheckpointer
from coordinator.store._sqlite_rows import (
    ASSIGN_COLS,
    INSERT_ASSIGNMENT,
    OPEN_TASK_STATES,
    SCHEMA,
    TASK_COLS,
    UPDATE_ASSIGNMENT,
    UPDATE_TASK,
    assign_from,
    assign_row,
    assign_update_row,
    caps_from_json,
    caps_to_json,
    task_from,
    task_row,
    task_update_row,
)
from coordinator.store.base import CoordinatorStore, check_transition

__all__ = ["SqliteStore", "caps_from_json", "caps_to_json"]

log = structlog.get_logger("coordinator.store")

_SOON_NODE_DELAY_S = 1.0  # how long a `soon` node write may wait to be merged with the next ones
_FAILED_GROUPS_KEPT = 4096  # failed group numbers remembered for `durable()` (failures are rare)
_SQLITE_FULL = 13


def store_error(exc: sqlite3.Error) -> CoordinatorError:
    """The client-facing error for a write SQLite could not make: a full disk is RESOURCE_EXHAUSTED,
    anything else (an I/O error, a busy database) UNAVAILABLE; both are retryable."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == _SQLITE_FULL or "full" in str(exc):
        return StorageFull(f"the coordinator's disk is full; nothing was stored ({exc})")
    return Unavailable(f"the coordinator's store could not commit; nothing was stored ({exc})")


class SqliteStore(CoordinatorStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(tasks)")}
        if "stream_deltas" not in columns:  # a store made before the column existed
            self._db.execute("ALTER TABLE tasks ADD COLUMN stream_deltas INTEGER NOT NULL DEFAULT 0")
        # Nodes are read on every task creation (can a group ever run it?); this process is the only
        # writer, so a write-through cache of the small nodes table is exact.
        self._nodes: dict[str, NodeRecord] | None = None
        self.nodes_version = self.nodes_shape_version = 0  # see CoordinatorStore._node_written
        # Node records saved with `soon`, written together within _SOON_NODE_DELAY_S.
        self._soon_nodes: dict[str, NodeRecord] = {}
        self._soon_timer: asyncio.TimerHandle | None = None
        # creator -> the fees of its open tasks, read per creator on first use and kept by every task
        # write; dropped whole when a write is rolled back.
        self._pending: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # set: group commit is on
        self._checkpointer: WalCheckpointer | None = None  # with group commit: checkpoints off the loop
        self._group_open = False
        self._after: list[Callable[[], object]] = []
        self._waiters: list[asyncio.Future] = []
        # Groups are numbered; each task (an RPC handler) remembers the last group it wrote in, so
        # `durable()` waits for its own writes only, not for a group other code opened since.
        self._group = 0
        self._committed = 0
        self._failed: dict[int, sqlite3.Error] = {}  # group number -> why its commit failed (the latest few)
        self._failure_listeners: list[Callable[[], object]] = []
        self._wrote_in: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(f"store_{id(self)}_groups",
                                                                                         default=())  # fmt: skip

    # One transaction per write method; with group commit, the turn's transaction, plus a savepoint
    # around a method that writes with `several` statements (a single statement that fails is undone
    # alone by SQLite itself, and the transaction goes on).
    def _tx(self, several: bool = False):
        return _Tx(self, several)

    def enable_group_commit(self) -> None:
        """Groups the writes of each event-loop turn into one commit; call from the loop's thread. The
        WAL is then checkpointed mostly by a thread of its own (store/_checkpoint.py)."""
        self._loop = asyncio.get_running_loop()
        if self._checkpointer is None:
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_RESET_PAGES}")
            self._checkpointer = WalCheckpointer(self.path)

    def _open_group(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(exc) from exc
        self._group_open = True
        self._group += 1
        assert self._loop is not None
        self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        try:
            self.flush()
        except CoordinatorError:
            pass  # logged and reported to the group's waiters by _fail_group

    def flush(self) -> None:
        """Commits the open group; raises `StorageFull` / `Unavailable` when the commit fails (the group's
        waiters get the same error, its callbacks are dropped)."""
        if not self._group_open:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._fail_group(exc) from exc
        self._group_open = False
        self._committed = self._group
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        callbacks, self._after = self._after, []
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.exception("after_commit_callback_failed")

    def _fail_group(self, exc: sqlite3.Error) -> CoordinatorError:
        """The open group is lost (SQLite may have rolled it back already): undo what is left of it, fail
        its waiters, drop its callbacks and the caches it touched, and tell the listeners."""
        log.error("store_commit_failed", error=str(exc), group=self._group, dropped_callbacks=len(self._after),
                  waiters=len(self._waiters))  # fmt: skip
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error as again:
                log.error("store_rollback_failed", error=str(again))
        self._group_open = False
        self._failed[self._group] = exc
        while len(self._failed) > _FAILED_GROUPS_KEPT:
            del self._failed[next(iter(self._failed))]
        self._after.clear()
        self._nodes = None
        self._pending.clear()
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(store_error(exc))
        for listener in list(self._failure_listeners):
            try:
                listener()
            except Exception:
                log.exception("commit_failed_listener_failed")
        return store_error(exc)

    def on_commit_failed(self, listener: Callable[[], object]) -> None:
        self._failure_listeners.append(listener)

    def after_commit(self, callback: Callable[[], object]) -> None:
        if self._group_open:
            self._after.append(callback)
        else:
            callback()

    async def durable(self) -> None:
        """Returns once every write made so far by this task (and its context) is committed; raises
        `StorageFull` / `Unavailable` when one of them was lost with a failed commit."""
        groups = self._wrote_in.get()
        if not groups:
            return
        self._wrote_in.set(())
        if self._group_open and groups[-1] == self._group:
            assert self._loop is not None
            done = self._loop.create_future()
            self._waiters.append(done)
            await done
        for g in groups:
            if g in self._failed:
                raise store_error(self._failed[g])

    # --- tasks ---

    def create_task(self, task: Task) -> None:
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO tasks ({TASK_COLS}) VALUES ({','.join('?' * 29)})", task_row(task))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"task {task.task_id} (creator {task.creator}, nonce {task.nonce}) exists") from exc
        if task.state in OPEN_TASK_STATES:
            self._pending_add(task.creator, task.fee)

    def get_task(self, task_id: str) -> Task | None:
        row = self._db.execute(f"SELECT {TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return task_from(row) if row else None

    def _write_task(self, db: sqlite3.Connection, task: Task) -> None:
        # One UPDATE of the fields that can change, guarded by the allowed previous states: no read
        # first, and the identity columns (and the args blob) are never rewritten.
        from_open, from_closed = UPDATE_TASK[task.state]
        params = (*task_update_row(task), task.task_id)
        updated = 0
        if from_open is not None:
            updated = db.execute(from_open, params).rowcount
            if updated and task.state not in OPEN_TASK_STATES:
                self._pending_add(task.creator, -task.fee)
        if not updated and from_closed is not None:
            updated = db.execute(from_closed, params).rowcount
        if not updated:
            row = db.execute("SELECT state FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone()
            if row is None:
                raise NotFound(f"task {task.task_id} not found")
            check_transition(TaskState(row[0]), task)

    def save_task(self, task: Task) -> None:
        with self._tx() as db:
            self._write_task(db, task)

    def dispatch_task(self, task: Task, assignments: Sequence[Assignment]) -> None:
        with self._tx(several=True) as db:
            self._write_task(db, task)
            db.executemany(INSERT_ASSIGNMENT, [assign_row(a) for a in assignments])

    def list_tasks(self, states: Iterable[TaskState] = (), limit: int = 100) -> list[Task]:
        states = [s.value for s in states]
        where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
        rows = self._db.execute(
            f"SELECT {TASK_COLS} FROM tasks {where} ORDER BY created_ms DESC LIMIT ?", (*states, limit)
        ).fetchall()
        return [task_from(r) for r in rows]

    def queued_tasks(self) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {TASK_COLS} FROM tasks WHERE state = ? ORDER BY priority DESC, created_ms",
            (TaskState.QUEUED.value,),
        ).fetchall()
        return [task_from(r) for r in rows]

    def active_tasks(self) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {TASK_COLS} FROM tasks WHERE state = ? OR (state = ? AND task_id IN "
            "(SELECT task_id FROM assignments WHERE state IN (?, ?)))",
            (
                TaskState.DISPATCHED.value,
                TaskState.VALIDATED.value,
                AssignmentState.LEASED.value,
                AssignmentState.RUNNING.value,
            ),
        ).fetchall()
        return [task_from(r) for r in rows]

    def pending_fees(self, creator: str) -> int:
        total = self._pending.get(creator)
        if total is None:  # read once per creator; the writes keep it since (every task creation asks)
            rows = self._db.execute(
                f"SELECT fee FROM tasks WHERE creator = ? AND state IN ({','.join('?' * len(OPEN_TASK_STATES))})",
                (creator, *(s.value for s in OPEN_TASK_STATES)),
            ).fetchall()
            total = self._pending[creator] = sum(int(r[0]) for r in rows)
        return total

    def _pending_add(self, creator: str, fee: int) -> None:
        if creator in self._pending:
            self._pending[creator] += fee

    def count_tasks_by_state(self) -> dict[TaskState, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM tasks GROUP BY state").fetchall()
        return {TaskState(s): n for s, n in rows}

    # --- assignments ---

    def save_assignments(self, assignments: Sequence[Assignment], task: Task | None = None) -> None:
        with self._tx(several=task is not None or len(assignments) > 1) as db:
            if task is not None:
                self._write_task(db, task)
            for a in assignments:  # mostly updates; an assignment added to a running task is new
                row = assign_row(a)
                if not db.execute(UPDATE_ASSIGNMENT, assign_update_row(row)).rowcount:
                    db.execute(INSERT_ASSIGNMENT, row)

    def get_assignment(self, assignment_id: str) -> Assignment | None:
        row = self._db.execute(
            f"SELECT {ASSIGN_COLS} FROM assignments WHERE assignment_id = ?", (assignment_id,)
        ).fetchone()
        return assign_from(row) if row else None

    def assignments_for(self, task_id: str) -> list[Assignment]:
        rows = self._db.execute(
            f"SELECT {ASSIGN_COLS} FROM assignments WHERE task_id = ? ORDER BY leased_ms, rowid", (task_id,)
        ).fetchall()
        return [assign_from(r) for r in rows]

    def open_assignments(self) -> list[Assignment]:
        rows = self._db.execute(
            f"SELECT {ASSIGN_COLS} FROM assignments WHERE state IN (?, ?)",
            (AssignmentState.LEASED.value, AssignmentState.RUNNING.value),
        ).fetchall()
        return [assign_from(r) for r in rows]

    # --- nodes ---

    def save_node(self, node: NodeRecord, *, soon: bool = False) -> None:
        if soon and self._loop is not None:
            cache = self._node_cache()
            self._node_written(cache.get(node.address), node)
            cache[node.address] = node
            self._soon_nodes[node.address] = node
            if self._soon_timer is None:
                self._soon_timer = self._loop.call_later(_SOON_NODE_DELAY_S, self._write_soon_nodes)
            return
        self._soon_nodes.pop(node.address, None)  # this write supersedes a pending one
        self._upsert_node(node)

    def _write_soon_nodes(self) -> None:
        self._soon_timer = None
        nodes, self._soon_nodes = self._soon_nodes, {}
        try:
            for node in nodes.values():
                self._upsert_node(node)
        except CoordinatorError as exc:  # scores only (state changes are not `soon`): lost, as in a crash
            log.warning("store_node_writes_lost", nodes=len(nodes), error=str(exc))

    def _upsert_node(self, node: NodeRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO nodes (address, caps, state, qos, last_seen_ms, reason) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (address) DO UPDATE SET caps = excluded.caps, state = excluded.state, "
                "qos = excluded.qos, last_seen_ms = excluded.last_seen_ms, reason = excluded.reason",
                (node.address, caps_to_json(node.caps), node.state.value, json.dumps(node.qos), node.last_seen_ms,
                 node.reason),
            )  # fmt: skip
        cache = self._node_cache()
        self._node_written(cache.get(node.address), node)
        cache[node.address] = node

    def _node_from(self, r) -> NodeRecord:
        return NodeRecord(r[0], caps_from_json(r[1]), NodeState(r[2]), json.loads(r[3]), r[4], r[5])

    def _node_cache(self) -> dict[str, NodeRecord]:
        if self._nodes is None:
            rows = self._db.execute("SELECT address, caps, state, qos, last_seen_ms, reason FROM nodes").fetchall()
            self._nodes = {r[0]: self._node_from(r) for r in rows}
        return self._nodes

    def get_node(self, address: str) -> NodeRecord | None:
        return self._node_cache().get(address)

    def list_nodes(self) -> list[NodeRecord]:
        cache = self._node_cache()
        return [cache[k] for k in sorted(cache)]

    # --- kv ---

    def get_value(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put_value(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
        self.flush()  # journal entries are durable on return: a chain transaction may follow at once

    def close(self) -> None:
        if self._soon_timer is not None:
            self._soon_timer.cancel()
        try:
            self._write_soon_nodes()
            self.flush()
        except CoordinatorError:
            pass  # logged: what was not committed is lost, as in a crash, and nobody was told of it
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        self._db.close()  # the last connection to close checkpoints the rest and removes the log


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception; with group commit, a SAVEPOINT of the
    turn's transaction, released, or rolled back alone on any exception. SQLite failing under a write
    (a full disk) loses the whole group, as a failed commit does; the caller gets `store_error`."""

    def __init__(self, store: SqliteStore, several: bool) -> None:
        self.store = store
        self.db = store._db
        self.grouped = store._loop is not None
        self.savepoint = self.grouped and several

    def __enter__(self) -> sqlite3.Connection:
        if not self.grouped:
            try:
                self.db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise store_error(exc) from exc
            return self.db
        store = self.store
        if not store._group_open:
            store._open_group()
        groups = store._wrote_in.get()
        if not groups or groups[-1] != store._group:
            store._wrote_in.set((*groups, store._group))
        if self.savepoint:
            self.db.execute("SAVEPOINT write")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.store._pending.clear()  # what the failed write counted is undone with it
        failed = isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError)
        if not self.grouped:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error as err:
                    self._rollback()
                    raise store_error(err) from err
                return
            self._rollback()
            if failed:
                raise store_error(exc) from exc
            return
        if failed:
            raise self.store._fail_group(exc) from exc
        if self.savepoint:
            try:
                if exc_type is not None:
                    self.db.execute("ROLLBACK TO write")
                self.db.execute("RELEASE write")
            except sqlite3.Error as err:
                raise self.store._fail_group(err) from err

    def _rollback(self) -> None:
        if self.db.in_transaction:  # SQLite may have rolled back by itself (a full disk)
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error as err:
                log.error("store_rollback_failed", error=str(err))
