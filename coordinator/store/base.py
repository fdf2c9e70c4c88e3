"""The coordinator's store contract.

Every write method is ONE transaction: it either happens whole or not at all,
and a refused write (duplicate id, an illegal state transition) changes nothing.
Task state changes are checked against `TASK_TRANSITIONS`; writing a task in its
current state only updates its fields.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Sequence

from coordinator.domain.models import Assignment, NodeRecord, Task, TaskState

__all__ = ["CoordinatorStore"]


class CoordinatorStore(abc.ABC):
    # --- tasks -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_task(self, task: Task) -> None:
        """Stores a new QUEUED task. Raises `AlreadyExists` if its id, or its (creator, nonce), is taken."""

    @abc.abstractmethod
    def get_task(self, task_id: str) -> Task | None: ...

    @abc.abstractmethod
    def save_task(self, task: Task) -> None:
        """Writes `task` over the stored one; raises `FailedPrecondition` on an illegal transition
        and `NotFound` when it does not exist."""

    @abc.abstractmethod
    def dispatch_task(self, task: Task, assignments: Sequence[Assignment]) -> None:
        """Moves a QUEUED task to DISPATCHED and stores its assignments, in one transaction."""

    @abc.abstractmethod
    def list_tasks(self, states: Iterable[TaskState] = (), limit: int = 100) -> list[Task]:
        """Newest first; all states when `states` is empty."""

    @abc.abstractmethod
    def queued_tasks(self) -> list[Task]:
        """Every QUEUED task, highest priority first (ties: oldest first)."""

    @abc.abstractmethod
    def active_tasks(self) -> list[Task]:
        """Every DISPATCHED task, and every VALIDATED task that still has an open assignment."""

    @abc.abstractmethod
    def pending_fees(self, creator: str) -> int:
        """Sum of the fees of the creator's tasks that may still be charged (queued, dispatched,
        validated and not yet settled)."""

    @abc.abstractmethod
    def count_tasks_by_state(self) -> dict[TaskState, int]: ...

    # --- assignments -----------------------------------------------------------------------------

    @abc.abstractmethod
    def save_assignments(self, assignments: Sequence[Assignment], task: Task | None = None) -> None:
        """Inserts or replaces `assignments`, and writes `task` (checked like `save_task`) in the same
        transaction when given."""

    @abc.abstractmethod
    def get_assignment(self, assignment_id: str) -> Assignment | None: ...

    @abc.abstractmethod
    def assignments_for(self, task_id: str) -> list[Assignment]:
        """In lease order."""

    @abc.abstractmethod
    def open_assignments(self) -> list[Assignment]:
        """Every LEASED or RUNNING assignment."""

    # --- nodes -----------------------------------------------------------------------------------

    # Implementations call `_node_written` on every node write: `nodes_version` counts every write, and
    # `nodes_shape_version` only those that change what a node can run (its state or caps), so views
    # derived from those (can a group ever run this task?) outlive the QoS updates of every scored task.
    nodes_version: int = 0
    nodes_shape_version: int = 0

    def _node_written(self, old: NodeRecord | None, new: NodeRecord) -> None:
        self.nodes_version += 1
        if old is None or old.state != new.state or (old.caps is not new.caps and old.caps != new.caps):
            self.nodes_shape_version += 1

    @abc.abstractmethod
    def save_node(self, node: NodeRecord, *, soon: bool = False) -> None:
        """Stores the node's record; reads see it at once. `soon`: the write may wait a moment and be
        merged with the node's next ones (QoS scores, written per task), so a crash can lose the last
        second of a node's scores, never a state change (those are saved without `soon`)."""

    @abc.abstractmethod
    def get_node(self, address: str) -> NodeRecord | None: ...

    @abc.abstractmethod
    def list_nodes(self) -> list[NodeRecord]: ...

    # --- small durable values (estimator state, settlement journal cursor...) ---------------------

    @abc.abstractmethod
    def get_value(self, key: str) -> str | None: ...

    @abc.abstractmethod
    def put_value(self, key: str, value: str) -> None: ...

    # --- durability (group commit) -----------------------------------------------------------------
    # A store may group the writes of one event-loop turn into one commit. A write is then visible to
    # reads at once but durable only after that commit: whatever tells the outside world that a write
    # happened (an ack, a CreateTask answer, a task event) goes through `after_commit` or `durable`.
    # A store that commits every write at once (the default here) runs callbacks immediately.

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Runs `callback` once every write made so far is durable."""
        callback()

    async def durable(self) -> None:  # noqa: B027 - optional
        """Returns once every write the calling task (its context) has made so far is durable."""

    def flush(self) -> None:  # noqa: B027 - optional
        """Makes every write made so far durable now; raises `StorageFull` (a full disk) or `Unavailable`
        when it cannot, and then every write since the last commit is lost."""

    def on_commit_failed(self, listener: Callable[[], object]) -> None:  # noqa: B027 - optional
        """Calls `listener` (on the loop, synchronously) whenever a group commit fails: writes that reads
        already showed are gone, so whoever keeps a view of them in memory rebuilds it from the store. The
        group's callbacks never run and its `durable()` waiters get the error."""

    def close(self) -> None:  # noqa: B027 - optional
        """Releases resources."""


def check_transition(old: Task | TaskState, new: Task) -> None:
    """Raises FailedPrecondition unless old.state -> new.state is allowed (or unchanged)."""
    from coordinator.domain.models import TASK_TRANSITIONS
    from coordinator.errors import FailedPrecondition

    old_state = old if isinstance(old, TaskState) else old.state
    if old_state != new.state and new.state not in TASK_TRANSITIONS[old_state]:
        raise FailedPrecondition(f"task {new.task_id} cannot go from {old_state} to {new.state}")
