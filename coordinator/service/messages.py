"""What the dispatcher sends down a node's stream, as plain objects; the worker
servicer turns them into `ConnectResponse` protos."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.domain.models import Assignment, NodeState, Task

__all__ = ["AckMsg", "AssignMsg", "CancelMsg", "DisconnectMsg", "DrainMsg", "Grant", "Outgoing"]


@dataclass(frozen=True)
class Grant:
    """A relay capability signed by the coordinator (see chain.signing RelayGrant)."""

    task_id: str
    grantee: str
    read_slots: tuple[str, ...]
    write_slots: tuple[str, ...]
    expires_at: int
    signature: bytes


@dataclass(frozen=True)
class AssignMsg:
    assignment: Assignment
    task: Task
    grant: Grant | None
    inline_args: bool
    deadline_ms: int


@dataclass(frozen=True)
class AckMsg:
    assignment_id: str


@dataclass(frozen=True)
class CancelMsg:
    assignment_id: str
    task_id: str
    reason: str


@dataclass(frozen=True)
class DrainMsg:
    reason: str


@dataclass(frozen=True)
class DisconnectMsg:
    state: NodeState
    reason: str


Outgoing = AssignMsg | AckMsg | CancelMsg | DrainMsg | DisconnectMsg
