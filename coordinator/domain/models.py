"""The coordinator's domain: tasks, assignments and nodes, with their state machines.

Task states (docs/DESIGN.md): QUEUED -> DISPATCHED -> VALIDATED -> SETTLED, or -> ABORTED
(no fee taken), or CANCELLED by its creator (before validation; no fee taken). Assignment states: LEASED -> RUNNING ->
SUBMITTED | ERRORED | EXPIRED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

__all__ = [
    "Assignment",
    "AssignmentState",
    "Card",
    "ErrorKind",
    "NodeCaps",
    "NodeRecord",
    "NodeState",
    "Task",
    "TaskState",
    "TaskType",
    "evolve",
]


class TaskType(enum.StrEnum):
    GPT = "gpt"
    SD = "sd"


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    DISPATCHED = "dispatched"
    VALIDATED = "validated"
    SETTLED = "settled"
    ABORTED = "aborted"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskState.SETTLED, TaskState.ABORTED, TaskState.CANCELLED)


class AssignmentState(enum.StrEnum):
    LEASED = "leased"
    RUNNING = "running"
    SUBMITTED = "submitted"
    ERRORED = "errored"
    EXPIRED = "expired"

    @property
    def open(self) -> bool:
        return self in (AssignmentState.LEASED, AssignmentState.RUNNING)


class ErrorKind(enum.StrEnum):
    INVALID_ARGS = "invalid_args"
    OUT_OF_MEMORY = "out_of_memory"
    CRASH = "crash"


class NodeState(enum.StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    PAUSED = "paused"
    PENDING_PAUSE = "pending_pause"
    PENDING_QUIT = "pending_quit"
    QUIT = "quit"
    KICKED_OUT = "kicked_out"
    SLASHED = "slashed"
    DISCONNECTED = "disconnected"

    @property
    def banned(self) -> bool:
        return self in (NodeState.KICKED_OUT, NodeState.SLASHED)


# Task state transitions allowed by the store (from -> {to}).
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.DISPATCHED, TaskState.CANCELLED, TaskState.ABORTED}),
    TaskState.DISPATCHED: frozenset({TaskState.VALIDATED, TaskState.ABORTED, TaskState.QUEUED, TaskState.CANCELLED}),
    TaskState.VALIDATED: frozenset({TaskState.SETTLED}),
    TaskState.SETTLED: frozenset(),
    TaskState.ABORTED: frozenset({TaskState.SETTLED}),
    TaskState.CANCELLED: frozenset(),
}


@dataclass(frozen=True, order=True)
class Card:
    name: str
    vram_bytes: int

    def __str__(self) -> str:
        return f"{self.name} ({self.vram_bytes / 2**30:.0f} GiB)"


@dataclass(frozen=True)
class NodeCaps:
    """What a node advertised when it registered (and refreshed by heartbeats)."""

    card: Card
    task_types: frozenset[TaskType]
    dtypes: frozenset[str] = frozenset()
    quantize_bits: frozenset[int] = frozenset()
    backends: tuple[str, ...] = ()
    loaded_models: tuple[str, ...] = ()
    cached_models: tuple[str, ...] = ()
    free_vram_bytes: int = 0
    worker_version: str = ""
    device: str = ""
    # How many assignments it holds at once (the running one and those queued behind it).
    max_assignments: int = 1


@dataclass(frozen=True)
class NodeRecord:
    address: str
    caps: NodeCaps
    state: NodeState
    qos: dict = field(default_factory=dict)  # serialized QoS state (see coordinator.service.qos)
    last_seen_ms: int = 0
    reason: str = ""

    def with_state(self, state: NodeState, reason: str = "") -> NodeRecord:
        return replace(self, state=state, reason=reason or self.reason)


@dataclass(frozen=True)
class Task:
    task_id: str
    type: TaskType
    state: TaskState
    creator: str
    nonce: int
    fee: int
    deadline: int  # unix seconds, the settlement deadline the creator signed
    args: bytes  # canonical TaskArgs JSON (helium.tasks.canonical_args)
    args_hash: bytes
    signature: bytes
    model: str
    priority: float  # static queue key: higher first
    created_ms: int
    updated_ms: int
    expires_ms: int  # execution deadline: aborted with no fee past it
    card: Card | None = None  # GPT: the card of its group, fixed at first dispatch
    min_vram_bytes: int = 0
    dtype: str = ""
    quantize_bits: int = 0
    result_hash: bytes = b""
    output: bytes = b""
    result_nodes: tuple[str, ...] = ()
    validation: str = ""
    reason: str = ""
    settlement_tx: str = ""
    validated_ms: int = 0
    estimate_s: float = 0.0
    stream_deltas: bool = False  # the creator asked for token deltas (GPT)


@dataclass(frozen=True)
class Assignment:
    assignment_id: str
    task_id: str
    node: str
    state: AssignmentState
    leased_ms: int
    lease_expires_ms: int
    result_hash: bytes = b""
    signature: bytes = b""
    output: bytes = b""
    output_slots: tuple[str, ...] = ()
    phashes: tuple[int, ...] = ()
    submission_order: int = 0
    submitted_ms: int = 0
    matched: bool = False
    error_kind: ErrorKind | None = None
    error: str = ""
    stats: dict = field(default_factory=dict)


R = TypeVar("R")
_FIELDS: dict[type, frozenset[str]] = {}


def evolve(record: R, **changes) -> R:
    """`dataclasses.replace` for these frozen records, without running `__init__` again (they check
    nothing there): the hot paths evolve a task or an assignment several times per task."""
    cls = type(record)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    if not names.issuperset(changes):
        raise TypeError(f"{cls.__name__} has no field(s) {sorted(set(changes) - names)}")
    new = object.__new__(cls)
    new.__dict__.update(record.__dict__, **changes)
    return new
