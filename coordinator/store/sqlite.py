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
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import structlog

from coordinator.domain.models import (
    TASK_TRANSITIONS,
    Assignment,
    AssignmentState,
    Card,
    ErrorKind,
    NodeCaps,
    NodeRecord,
    NodeState,
    Task,
    TaskState,
    TaskType,
)
from coordinator.errors import AlreadyExists, NotFound
from coordinator.store.base import CoordinatorStore, check_transition

__all__ = ["SqliteStore"]

log = structlog.get_logger("coordinator.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
  task_id TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL, creator TEXT NOT NULL,
  nonce TEXT NOT NULL, fee TEXT NOT NULL, deadline INTEGER NOT NULL, args BLOB NOT NULL,
  args_hash BLOB NOT NULL, signature BLOB NOT NULL, model TEXT NOT NULL, priority REAL NOT NULL,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
  card_name TEXT, card_vram INTEGER, min_vram INTEGER NOT NULL, dtype TEXT NOT NULL, quantize_bits INTEGER NOT NULL,
  result_hash BLOB NOT NULL, output BLOB NOT NULL, result_nodes TEXT NOT NULL, validation TEXT NOT NULL,
  reason TEXT NOT NULL, settlement_tx TEXT NOT NULL, validated_ms INTEGER NOT NULL, estimate_s REAL NOT NULL,
  stream_deltas INTEGER NOT NULL DEFAULT 0,
  UNIQUE (creator, nonce)
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks (state, priority DESC, created_ms);
CREATE INDEX IF NOT EXISTS tasks_creator ON tasks (creator, state);
CREATE TABLE IF NOT EXISTS assignments (
  assignment_id TEXT PRIMARY KEY, task_id TEXT NOT NULL REFERENCES tasks (task_id), node TEXT NOT NULL,
  state TEXT NOT NULL, leased_ms INTEGER NOT NULL, lease_expires_ms INTEGER NOT NULL,
  result_hash BLOB NOT NULL, signature BLOB NOT NULL, output BLOB NOT NULL, output_slots TEXT NOT NULL,
  phashes TEXT NOT NULL, submission_order INTEGER NOT NULL, submitted_ms INTEGER NOT NULL, matched INTEGER NOT NULL,
  error_kind TEXT, error TEXT NOT NULL, stats TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS assignments_task ON assignments (task_id, leased_ms);
CREATE INDEX IF NOT EXISTS assignments_state ON assignments (state);
CREATE TABLE IF NOT EXISTS nodes (
  address TEXT PRIMARY KEY, caps TEXT NOT NULL, state TEXT NOT NULL, qos TEXT NOT NULL,
  last_seen_ms INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_TASK_COLS = (
    "task_id, type, state, creator, nonce, fee, deadline, args, args_hash, signature, model, priority, "
    "created_ms, updated_ms, expires_ms, card_name, card_vram, min_vram, dtype, quantize_bits, result_hash, "
    "output, result_nodes, validation, reason, settlement_tx, validated_ms, estimate_s, stream_deltas"
)
_ASSIGN_COLS = (
    "assignment_id, task_id, node, state, leased_ms, lease_expires_ms, result_hash, signature, output, "
    "output_slots, phashes, submission_order, submitted_ms, matched, error_kind, error, stats"
)
_OPEN_TASK_STATES = (TaskState.QUEUED, TaskState.DISPATCHED, TaskState.VALIDATED)
_SOON_NODE_DELAY_S = 1.0  # how long a `soon` node write may wait to be merged with the next ones

# What a saved task may change: everything but its identity (task id, creator, nonce, args, args hash;
# the id commits to them) and the creator's signature over that id.
_TASK_MUTABLE = (
    "type, state, fee, deadline, model, priority, created_ms, updated_ms, expires_ms, card_name, card_vram, "
    "min_vram, dtype, quantize_bits, result_hash, output, result_nodes, validation, reason, settlement_tx, "
    "validated_ms, estimate_s, stream_deltas"
).split(", ")


def _update_from(previous: list[TaskState]) -> str | None:
    if not previous:
        return None
    return (f"UPDATE tasks SET {', '.join(c + ' = ?' for c in _TASK_MUTABLE)} WHERE task_id = ? AND state IN "
            f"({', '.join(repr(s.value) for s in previous)})")  # fmt: skip


def _previous_states(new: TaskState) -> list[TaskState]:
    return [s for s, nxt in TASK_TRANSITIONS.items() if new in nxt or s == new]


# new state -> (the UPDATE from an open state, the UPDATE from a closed one): which one matched tells
# whether the task's fee left the creator's pending fees.
_UPDATE_TASK = {
    state: (_update_from([s for s in _previous_states(state) if s in _OPEN_TASK_STATES]),
            _update_from([s for s in _previous_states(state) if s not in _OPEN_TASK_STATES]))
    for state in TaskState
}  # fmt: skip
_INSERT_ASSIGNMENT = f"INSERT INTO assignments ({_ASSIGN_COLS}) VALUES ({','.join('?' * 17)})"
_UPSERT_ASSIGNMENT = _INSERT_ASSIGNMENT + " ON CONFLICT (assignment_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _ASSIGN_COLS.split(", ")[1:]
)


def _task_row(t: Task) -> tuple:
    return (
        t.task_id, t.type.value, t.state.value, t.creator, str(t.nonce), str(t.fee), t.deadline, t.args,
        t.args_hash, t.signature, t.model, t.priority, t.created_ms, t.updated_ms, t.expires_ms,
        t.card.name if t.card else None, t.card.vram_bytes if t.card else None, t.min_vram_bytes, t.dtype,
        t.quantize_bits, t.result_hash, t.output, json.dumps(list(t.result_nodes)), t.validation, t.reason,
        t.settlement_tx, t.validated_ms, t.estimate_s, int(t.stream_deltas),
    )  # fmt: skip


def _task_update_row(t: Task) -> tuple:
    return (
        t.type.value, t.state.value, str(t.fee), t.deadline, t.model, t.priority, t.created_ms, t.updated_ms,
        t.expires_ms, t.card.name if t.card else None, t.card.vram_bytes if t.card else None, t.min_vram_bytes,
        t.dtype, t.quantize_bits, t.result_hash, t.output, json.dumps(list(t.result_nodes)), t.validation, t.reason,
        t.settlement_tx, t.validated_ms, t.estimate_s, int(t.stream_deltas),
    )  # fmt: skip


def _task_from(r: sqlite3.Row) -> Task:
    return Task(
        task_id=r[0], type=TaskType(r[1]), state=TaskState(r[2]), creator=r[3], nonce=int(r[4]), fee=int(r[5]),
        deadline=r[6], args=bytes(r[7]), args_hash=bytes(r[8]), signature=bytes(r[9]), model=r[10],
        priority=r[11], created_ms=r[12], updated_ms=r[13], expires_ms=r[14],
        card=Card(r[15], r[16]) if r[15] is not None else None, min_vram_bytes=r[17], dtype=r[18],
        quantize_bits=r[19], result_hash=bytes(r[20]), output=bytes(r[21]), result_nodes=tuple(json.loads(r[22])),
        validation=r[23], reason=r[24], settlement_tx=r[25], validated_ms=r[26], estimate_s=r[27],
        stream_deltas=bool(r[28]),
    )  # fmt: skip


def _json_list(items) -> str:
    return json.dumps(list(items)) if items else "[]"  # most rows: empty, and this runs per result


def _assign_row(a: Assignment) -> tuple:
    return (
        a.assignment_id, a.task_id, a.node, a.state.value, a.leased_ms, a.lease_expires_ms, a.result_hash,
        a.signature, a.output, _json_list(a.output_slots), _json_list([str(p) for p in a.phashes]),
        a.submission_order, a.submitted_ms, int(a.matched), a.error_kind.value if a.error_kind else None,
        a.error, json.dumps(a.stats) if a.stats else "{}",
    )  # fmt: skip


def _assign_from(r: sqlite3.Row) -> Assignment:
    return Assignment(
        assignment_id=r[0], task_id=r[1], node=r[2], state=AssignmentState(r[3]), leased_ms=r[4],
        lease_expires_ms=r[5], result_hash=bytes(r[6]), signature=bytes(r[7]), output=bytes(r[8]),
        output_slots=tuple(json.loads(r[9])), phashes=tuple(int(p) for p in json.loads(r[10])),
        submission_order=r[11], submitted_ms=r[12], matched=bool(r[13]),
        error_kind=ErrorKind(r[14]) if r[14] else None, error=r[15], stats=json.loads(r[16]),
    )  # fmt: skip


@functools.lru_cache(maxsize=4096)  # a node's caps rarely change, and its record is saved per scored task
def caps_to_json(c: NodeCaps) -> str:
    return json.dumps(
        {
            "card": [c.card.name, c.card.vram_bytes],
            "task_types": sorted(t.value for t in c.task_types),
            "dtypes": sorted(c.dtypes),
            "quantize_bits": sorted(c.quantize_bits),
            "backends": list(c.backends),
            "loaded_models": list(c.loaded_models),
            "cached_models": list(c.cached_models),
            "free_vram_bytes": c.free_vram_bytes,
            "worker_version": c.worker_version,
            "device": c.device,
            "max_assignments": c.max_assignments,
        }
    )


def caps_from_json(s: str) -> NodeCaps:
    d = json.loads(s)
    return NodeCaps(
        card=Card(d["card"][0], d["card"][1]),
        task_types=frozenset(TaskType(t) for t in d["task_types"]),
        dtypes=frozenset(d["dtypes"]),
        quantize_bits=frozenset(d["quantize_bits"]),
        backends=tuple(d["backends"]),
        loaded_models=tuple(d["loaded_models"]),
        cached_models=tuple(d["cached_models"]),
        free_vram_bytes=d["free_vram_bytes"],
        worker_version=d["worker_version"],
        device=d["device"],
        max_assignments=d.get("max_assignments", 1),  # a store written before the field existed
    )


class SqliteStore(CoordinatorStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
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
        self._group_open = False
        self._after: list[Callable[[], object]] = []
        self._waiters: list[asyncio.Future] = []
        # Groups are numbered; each task (an RPC handler) remembers the last group it wrote in, so
        # `durable()` waits for its own writes only, not for a group other code opened since.
        self._group = 0
        self._committed = 0
        self._wrote_in: contextvars.ContextVar[int] = contextvars.ContextVar(f"store_{id(self)}_group", default=0)

    # One transaction per write method; with group commit, the turn's transaction, plus a savepoint
    # around a method that writes with `several` statements (a single statement that fails is undone
    # alone by SQLite itself, and the transaction goes on).
    def _tx(self, several: bool = False):
        return _Tx(self, several)

    def enable_group_commit(self) -> None:
        """Groups the writes of each event-loop turn into one commit; call from the loop's thread."""
        self._loop = asyncio.get_running_loop()

    def _open_group(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._group_open = True
        self._group += 1
        assert self._loop is not None
        self._loop.call_soon(self.flush)

    def flush(self) -> None:
        if not self._group_open:
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # The turn's writes are lost; nobody was told of them (their callbacks are dropped).
            log.exception("store_commit_failed", dropped_callbacks=len(self._after))
            self._db.execute("ROLLBACK")
            self._after.clear()
            self._nodes = None
            self._pending.clear()
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                if not w.done():
                    w.set_exception(sqlite3.OperationalError("the store could not commit these writes"))
            raise
        finally:
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

    def after_commit(self, callback: Callable[[], object]) -> None:
        if self._group_open:
            self._after.append(callback)
        else:
            callback()

    async def durable(self) -> None:
        """Returns once every write made so far by this task (and its context) is committed."""
        if not self._group_open or self._wrote_in.get() <= self._committed:
            return
        assert self._loop is not None
        done = self._loop.create_future()
        self._waiters.append(done)
        await done

    # --- tasks ---

    def create_task(self, task: Task) -> None:
        try:
            with self._tx() as db:
                db.execute(f"INSERT INTO tasks ({_TASK_COLS}) VALUES ({','.join('?' * 29)})", _task_row(task))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"task {task.task_id} (creator {task.creator}, nonce {task.nonce}) exists") from exc
        if task.state in _OPEN_TASK_STATES:
            self._pending_add(task.creator, task.fee)

    def get_task(self, task_id: str) -> Task | None:
        row = self._db.execute(f"SELECT {_TASK_COLS} FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _task_from(row) if row else None

    def _write_task(self, db: sqlite3.Connection, task: Task) -> None:
        # One UPDATE of the fields that can change, guarded by the allowed previous states: no read
        # first, and the identity columns (and the args blob) are never rewritten.
        from_open, from_closed = _UPDATE_TASK[task.state]
        params = (*_task_update_row(task), task.task_id)
        updated = 0
        if from_open is not None:
            updated = db.execute(from_open, params).rowcount
            if updated and task.state not in _OPEN_TASK_STATES:
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
            db.executemany(_INSERT_ASSIGNMENT, [_assign_row(a) for a in assignments])

    def list_tasks(self, states: Iterable[TaskState] = (), limit: int = 100) -> list[Task]:
        states = [s.value for s in states]
        where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
        rows = self._db.execute(
            f"SELECT {_TASK_COLS} FROM tasks {where} ORDER BY created_ms DESC LIMIT ?", (*states, limit)
        ).fetchall()
        return [_task_from(r) for r in rows]

    def queued_tasks(self) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {_TASK_COLS} FROM tasks WHERE state = ? ORDER BY priority DESC, created_ms",
            (TaskState.QUEUED.value,),
        ).fetchall()
        return [_task_from(r) for r in rows]

    def active_tasks(self) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {_TASK_COLS} FROM tasks WHERE state = ? OR (state = ? AND task_id IN "
            "(SELECT task_id FROM assignments WHERE state IN (?, ?)))",
            (
                TaskState.DISPATCHED.value,
                TaskState.VALIDATED.value,
                AssignmentState.LEASED.value,
                AssignmentState.RUNNING.value,
            ),
        ).fetchall()
        return [_task_from(r) for r in rows]

    def pending_fees(self, creator: str) -> int:
        total = self._pending.get(creator)
        if total is None:  # read once per creator; the writes keep it since (every task creation asks)
            rows = self._db.execute(
                f"SELECT fee FROM tasks WHERE creator = ? AND state IN ({','.join('?' * len(_OPEN_TASK_STATES))})",
                (creator, *(s.value for s in _OPEN_TASK_STATES)),
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
            if len(assignments) == 1:
                db.execute(_UPSERT_ASSIGNMENT, _assign_row(assignments[0]))
            elif assignments:
                db.executemany(_UPSERT_ASSIGNMENT, [_assign_row(a) for a in assignments])

    def get_assignment(self, assignment_id: str) -> Assignment | None:
        row = self._db.execute(
            f"SELECT {_ASSIGN_COLS} FROM assignments WHERE assignment_id = ?", (assignment_id,)
        ).fetchone()
        return _assign_from(row) if row else None

    def assignments_for(self, task_id: str) -> list[Assignment]:
        rows = self._db.execute(
            f"SELECT {_ASSIGN_COLS} FROM assignments WHERE task_id = ? ORDER BY leased_ms, rowid", (task_id,)
        ).fetchall()
        return [_assign_from(r) for r in rows]

    def open_assignments(self) -> list[Assignment]:
        rows = self._db.execute(
            f"SELECT {_ASSIGN_COLS} FROM assignments WHERE state IN (?, ?)",
            (AssignmentState.LEASED.value, AssignmentState.RUNNING.value),
        ).fetchall()
        return [_assign_from(r) for r in rows]

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
        for node in nodes.values():
            self._upsert_node(node)

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
        self._write_soon_nodes()
        if self._group_open:
            self.flush()
        self._db.close()


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception; with group commit, a SAVEPOINT of the
    turn's transaction, released, or rolled back alone on any exception."""

    def __init__(self, store: SqliteStore, several: bool) -> None:
        self.store = store
        self.db = store._db
        self.grouped = store._loop is not None
        self.savepoint = self.grouped and several

    def __enter__(self) -> sqlite3.Connection:
        if not self.grouped:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db
        if not self.store._group_open:
            self.store._open_group()
        self.store._wrote_in.set(self.store._group)
        if self.savepoint:
            self.db.execute("SAVEPOINT write")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.store._pending.clear()  # what the failed write counted is undone with it
        if not self.grouped:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        elif self.savepoint:
            if exc_type is not None:
                self.db.execute("ROLLBACK TO write")
            self.db.execute("RELEASE write")
