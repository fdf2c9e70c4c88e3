"""Who may replace a lapsed assignment (issue #14 item 3): a node is never in a task twice at once, a node
that answered the task is never drawn for it again, and a node whose lease lapsed is eligible again (on a
3-node network it is the only possible replacement)."""

from __future__ import annotations

from coordinator.domain.models import Assignment, AssignmentState, ErrorKind
from coordinator.service.flight import InFlight
from tests.unit.coordinator.store.test_store import task


def _a(node: str, state: AssignmentState, **kw) -> Assignment:
    return Assignment(f"a-{node}-{state.value}", "0x1", node, state, leased_ms=1, lease_expires_ms=2, **kw)


def test_only_nodes_holding_or_having_answered_the_task_are_excluded():
    flight = InFlight(task(1), {a.assignment_id: a for a in [
        _a("leased", AssignmentState.LEASED),
        _a("running", AssignmentState.RUNNING),
        _a("submitted", AssignmentState.SUBMITTED, submitted_ms=5),
        _a("reported_oom", AssignmentState.ERRORED, submitted_ms=5, error_kind=ErrorKind.OUT_OF_MEMORY),
        _a("lapsed", AssignmentState.EXPIRED, error="lease lapsed: no heartbeat"),
    ]})  # fmt: skip
    assert flight.busy_nodes() == {"leased", "running", "submitted", "reported_oom"}


def test_a_node_that_lapsed_and_then_answered_through_a_new_assignment_is_excluded_again():
    flight = InFlight(task(1), {a.assignment_id: a for a in [
        _a("n", AssignmentState.EXPIRED),
        Assignment("a-n-2", "0x1", "n", AssignmentState.SUBMITTED, leased_ms=3, lease_expires_ms=4, submitted_ms=5),
    ]})  # fmt: skip
    assert flight.busy_nodes() == {"n"}
