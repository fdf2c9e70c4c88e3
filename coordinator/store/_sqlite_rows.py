"""The SQLite store's schema and row codec: the SQL text, and tasks, assignments and node caps to and
from their rows. Kept apart from `sqlite.py`, which holds the transactions and their rules."""

from __future__ import annotations

import functools
import json
import sqlite3

from coordinator.domain.models import (
    TASK_TRANSITIONS,
    Assignment,
    AssignmentState,
    Card,
    ErrorKind,
    NodeCaps,
    Task,
    TaskState,
    TaskType,
)

SCHEMA = """
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

TASK_COLS = (
    "task_id, type, state, creator, nonce, fee, deadline, args, args_hash, signature, model, priority, "
    "created_ms, updated_ms, expires_ms, card_name, card_vram, min_vram, dtype, quantize_bits, result_hash, "
    "output, result_nodes, validation, reason, settlement_tx, validated_ms, estimate_s, stream_deltas"
)
ASSIGN_COLS = (
    "assignment_id, task_id, node, state, leased_ms, lease_expires_ms, result_hash, signature, output, "
    "output_slots, phashes, submission_order, submitted_ms, matched, error_kind, error, stats"
)
OPEN_TASK_STATES = (TaskState.QUEUED, TaskState.DISPATCHED, TaskState.VALIDATED)

# What a saved task may change: everything but its identity (task id, creator, nonce, args, args hash;
# the id commits to them) and the creator's signature over that id.
TASK_MUTABLE = (
    "type, state, fee, deadline, model, priority, created_ms, updated_ms, expires_ms, card_name, card_vram, "
    "min_vram, dtype, quantize_bits, result_hash, output, result_nodes, validation, reason, settlement_tx, "
    "validated_ms, estimate_s, stream_deltas"
).split(", ")


def update_from(previous: list[TaskState]) -> str | None:
    if not previous:
        return None
    return (f"UPDATE tasks SET {', '.join(c + ' = ?' for c in TASK_MUTABLE)} WHERE task_id = ? AND state IN "
            f"({', '.join(repr(s.value) for s in previous)})")  # fmt: skip


def previous_states(new: TaskState) -> list[TaskState]:
    return [s for s, nxt in TASK_TRANSITIONS.items() if new in nxt or s == new]


# new state -> (the UPDATE from an open state, the UPDATE from a closed one): which one matched tells
# whether the task's fee left the creator's pending fees.
UPDATE_TASK = {
    state: (update_from([s for s in previous_states(state) if s in OPEN_TASK_STATES]),
            update_from([s for s in previous_states(state) if s not in OPEN_TASK_STATES]))
    for state in TaskState
}  # fmt: skip
INSERT_ASSIGNMENT = f"INSERT INTO assignments ({ASSIGN_COLS}) VALUES ({','.join('?' * 17)})"
# An assignment never changes its identity (id, task, node, lease start): an update sets the rest only,
# so the (task_id, leased_ms) index is left alone.
_ASSIGN_IDENTITY = ("assignment_id", "task_id", "node", "leased_ms")
_ASSIGN_MUTABLE_AT = [i for i, c in enumerate(ASSIGN_COLS.split(", ")) if c not in _ASSIGN_IDENTITY]
UPDATE_ASSIGNMENT = (
    "UPDATE assignments SET "
    + ", ".join(f"{c} = ?" for c in ASSIGN_COLS.split(", ") if c not in _ASSIGN_IDENTITY)
    + " WHERE assignment_id = ?"
)


def task_row(t: Task) -> tuple:
    return (
        t.task_id, t.type.value, t.state.value, t.creator, str(t.nonce), str(t.fee), t.deadline, t.args,
        t.args_hash, t.signature, t.model, t.priority, t.created_ms, t.updated_ms, t.expires_ms,
        t.card.name if t.card else None, t.card.vram_bytes if t.card else None, t.min_vram_bytes, t.dtype,
        t.quantize_bits, t.result_hash, t.output, json.dumps(list(t.result_nodes)), t.validation, t.reason,
        t.settlement_tx, t.validated_ms, t.estimate_s, int(t.stream_deltas),
    )  # fmt: skip


def task_update_row(t: Task) -> tuple:
    return (
        t.type.value, t.state.value, str(t.fee), t.deadline, t.model, t.priority, t.created_ms, t.updated_ms,
        t.expires_ms, t.card.name if t.card else None, t.card.vram_bytes if t.card else None, t.min_vram_bytes,
        t.dtype, t.quantize_bits, t.result_hash, t.output, json.dumps(list(t.result_nodes)), t.validation, t.reason,
        t.settlement_tx, t.validated_ms, t.estimate_s, int(t.stream_deltas),
    )  # fmt: skip


def task_from(r: sqlite3.Row) -> Task:
    return Task(
        task_id=r[0], type=TaskType(r[1]), state=TaskState(r[2]), creator=r[3], nonce=int(r[4]), fee=int(r[5]),
        deadline=r[6], args=bytes(r[7]), args_hash=bytes(r[8]), signature=bytes(r[9]), model=r[10],
        priority=r[11], created_ms=r[12], updated_ms=r[13], expires_ms=r[14],
        card=Card(r[15], r[16]) if r[15] is not None else None, min_vram_bytes=r[17], dtype=r[18],
        quantize_bits=r[19], result_hash=bytes(r[20]), output=bytes(r[21]), result_nodes=tuple(json.loads(r[22])),
        validation=r[23], reason=r[24], settlement_tx=r[25], validated_ms=r[26], estimate_s=r[27],
        stream_deltas=bool(r[28]),
    )  # fmt: skip


def json_list(items) -> str:
    return json.dumps(list(items)) if items else "[]"  # most rows: empty, and this runs per result


def assign_row(a: Assignment) -> tuple:
    return (
        a.assignment_id, a.task_id, a.node, a.state.value, a.leased_ms, a.lease_expires_ms, a.result_hash,
        a.signature, a.output, json_list(a.output_slots), json_list([str(p) for p in a.phashes]),
        a.submission_order, a.submitted_ms, int(a.matched), a.error_kind.value if a.error_kind else None,
        a.error, json.dumps(a.stats) if a.stats else "{}",
    )  # fmt: skip


def assign_update_row(row: tuple) -> tuple:
    """The parameters of UPDATE_ASSIGNMENT, from the assign_row of the same assignment."""
    return (*(row[i] for i in _ASSIGN_MUTABLE_AT), row[0])


def assign_from(r: sqlite3.Row) -> Assignment:
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
