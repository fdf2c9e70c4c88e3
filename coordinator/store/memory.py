"""In-memory implementation of the coordinator store, for tests and throwaway networks.

It honours the same contract as `SqliteStore` (same test suite), without durability.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from coordinator.domain.models import Assignment, AssignmentState, NodeRecord, Task, TaskState, evolve
from coordinator.errors import AlreadyExists, NotFound
from coordinator.store.base import CoordinatorStore, check_transition

__all__ = ["MemoryStore"]


class MemoryStore(CoordinatorStore):
    def __init__(self) -> None:
        self._tasks: dict[str, Task] = {}
        self._nonces: set[tuple[str, int]] = set()
        self._assignments: dict[str, Assignment] = {}
        self._by_task: dict[str, list[str]] = {}
        self._nodes: dict[str, NodeRecord] = {}
        self._kv: dict[str, str] = {}
        self.nodes_version = self.nodes_shape_version = 0  # see CoordinatorStore._node_written

    def create_task(self, task: Task) -> None:
        if task.task_id in self._tasks or (task.creator, task.nonce) in self._nonces:
            raise AlreadyExists(f"task {task.task_id} (creator {task.creator}, nonce {task.nonce}) exists")
        self._tasks[task.task_id] = task
        self._nonces.add((task.creator, task.nonce))

    def get_task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    def _check(self, task: Task) -> None:
        old = self._tasks.get(task.task_id)
        if old is None:
            raise NotFound(f"task {task.task_id} not found")
        check_transition(old, task)

    def save_task(self, task: Task) -> None:
        self._check(task)
        self._tasks[task.task_id] = task

    def dispatch_task(self, task: Task, assignments: Sequence[Assignment]) -> None:
        self._check(task)
        if any(a.assignment_id in self._assignments for a in assignments):
            raise AlreadyExists("assignment exists")
        self._tasks[task.task_id] = task
        for a in assignments:
            self._put_assignment(a)

    def _put_assignment(self, a: Assignment) -> None:
        old = self._assignments.get(a.assignment_id)
        if old is None:
            self._by_task.setdefault(a.task_id, []).append(a.assignment_id)
        elif (a.task_id, a.node, a.leased_ms) != (old.task_id, old.node, old.leased_ms):
            a = evolve(a, task_id=old.task_id, node=old.node, leased_ms=old.leased_ms)  # identity stays
        self._assignments[a.assignment_id] = a

    def list_tasks(self, states: Iterable[TaskState] = (), limit: int = 100) -> list[Task]:
        wanted = set(states)
        tasks = [t for t in self._tasks.values() if not wanted or t.state in wanted]
        return sorted(tasks, key=lambda t: t.created_ms, reverse=True)[:limit]

    def queued_tasks(self) -> list[Task]:
        tasks = [t for t in self._tasks.values() if t.state == TaskState.QUEUED]
        return sorted(tasks, key=lambda t: (-t.priority, t.created_ms))

    def active_tasks(self) -> list[Task]:
        out = []
        for t in self._tasks.values():
            if t.state == TaskState.DISPATCHED or (
                t.state == TaskState.VALIDATED and any(a.state.open for a in self.assignments_for(t.task_id))
            ):
                out.append(t)
        return out

    def pending_fees(self, creator: str) -> int:
        open_states = (TaskState.QUEUED, TaskState.DISPATCHED, TaskState.VALIDATED)
        return sum(t.fee for t in self._tasks.values() if t.creator == creator and t.state in open_states)

    def count_tasks_by_state(self) -> dict[TaskState, int]:
        counts: dict[TaskState, int] = {}
        for t in self._tasks.values():
            counts[t.state] = counts.get(t.state, 0) + 1
        return counts

    def save_assignments(self, assignments: Sequence[Assignment], task: Task | None = None) -> None:
        if task is not None:
            self._check(task)
            self._tasks[task.task_id] = task
        for a in assignments:
            self._put_assignment(a)

    def get_assignment(self, assignment_id: str) -> Assignment | None:
        return self._assignments.get(assignment_id)

    def assignments_for(self, task_id: str) -> list[Assignment]:
        return [self._assignments[i] for i in self._by_task.get(task_id, [])]

    def open_assignments(self) -> list[Assignment]:
        return [a for a in self._assignments.values() if a.state in (AssignmentState.LEASED, AssignmentState.RUNNING)]

    def save_node(self, node: NodeRecord, *, soon: bool = False) -> None:
        self._node_written(self._nodes.get(node.address), node)
        self._nodes[node.address] = node

    def get_node(self, address: str) -> NodeRecord | None:
        return self._nodes.get(address)

    def list_nodes(self) -> list[NodeRecord]:
        return [self._nodes[k] for k in sorted(self._nodes)]

    def get_value(self, key: str) -> str | None:
        return self._kv.get(key)

    def put_value(self, key: str, value: str) -> None:
        self._kv[key] = value
