"""A dispatched task as the dispatcher holds it while it runs: the task, its assignments, and the token
deltas of the node whose stream watchers follow."""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.domain.models import Assignment, AssignmentState, Task
from coordinator.service import validation

__all__ = ["InFlight"]


@dataclass(eq=False)
class InFlight:
    task: Task
    assignments: dict[str, Assignment]
    streamer: str | None = None  # the node whose deltas are forwarded to watchers
    # The streamer's deltas so far, replayed to a watcher that subscribes late (bounded).
    deltas: list = field(default_factory=list)

    def submissions(self) -> list[validation.Submission]:
        return [
            validation.Submission(a.node, a.submission_order, a.result_hash, a.phashes)
            for a in self.assignments.values()
            if a.state == AssignmentState.SUBMITTED
        ]

    def live(self) -> list[Assignment]:
        return [a for a in self.assignments.values() if a.state in (AssignmentState.LEASED, AssignmentState.RUNNING,
                                                                      AssignmentState.SUBMITTED)]  # fmt: skip

    def busy_nodes(self) -> frozenset[str]:
        """Nodes a replacement may not be drawn from: those holding an open assignment of the task (a node
        is never in a task twice at once) and those that answered it (a result or an error report). A
        node whose lease lapsed (it crashed, or the coordinator did) may be drawn again once back."""
        return frozenset(a.node for a in self.assignments.values() if a.state.open or a.submitted_ms)
