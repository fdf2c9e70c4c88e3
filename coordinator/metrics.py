"""Prometheus metrics of the coordinator process (coordinator, bundled relay, gateway).

Registry: the process's default `prometheus_client.REGISTRY`. One coordinator
runs per process, and the default registry also carries the process and
platform collectors an operator expects; the metric objects below are created
once, at import. The gateway app serves them at `/metrics` (`render_latest`).
Tests that run several coordinators in one process see the sums, which is
what a counter should show anyway; assert on deltas, not absolute values.

The coordinator code calls the small helpers below (never the metric objects
directly), so the label sets stay in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "CONTENT_TYPE_LATEST",
    "observe_dispatch_latency",
    "observe_gateway_answer",
    "observe_gateway_request",
    "observe_gateway_ttft",
    "observe_nodes",
    "observe_queue",
    "observe_task",
    "observe_time_to_quorum",
    "record_relay_bytes",
    "observe_settlement_delay",
    "record_settlement",
    "record_settlement_failure",
    "watch_settlement_lag",
    "record_slash",
    "record_stream_outcome",
    "record_task_created",
    "record_task_finished",
    "record_validation",
    "render_latest",
    "set_nodes",
    "set_queue_depth",
]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

QUEUE_DEPTH = Gauge("helium_queue_depth", "Tasks waiting in the priced queue", ["task_type"])
DISPATCH_LATENCY = Histogram(
    "helium_dispatch_latency_seconds", "From task creation to its dispatch to a group of nodes",
    ["task_type"], buckets=_LATENCY_BUCKETS)
TIME_TO_QUORUM = Histogram(
    "helium_time_to_quorum_seconds", "From task creation to its validation (early quorum)",
    ["task_type"], buckets=_LATENCY_BUCKETS)
TASKS_CREATED = Counter("helium_tasks_created_total", "Tasks accepted by CreateTask", ["task_type"])
TASKS_FINISHED = Counter("helium_tasks_finished_total", "Tasks reaching a final state", ["task_type", "state"])
VALIDATIONS = Counter(
    "helium_validation_outcomes_total",
    "Validation outcomes: quorum_2_of_3, unanimous, mismatch_aborted, invalid_args_aborted, timeout_aborted",
    ["task_type", "outcome"])
SLASHES = Counter("helium_slashes_total", "Nodes slashed for a proven wrong result", ["reason"])
NODES = Gauge("helium_nodes", "Registered nodes by state and card", ["state", "card"])
RELAY_BYTES = Counter("helium_relay_bytes_total", "Bytes through the relay", ["direction"])
SETTLEMENTS = Counter("helium_settlement_batches_total", "Settlement batches settled on chain", ["outcome"])
SETTLED_TASKS = Counter("helium_settled_tasks_total", "Tasks settled on chain")
SETTLEMENT_FAILURES = Counter("helium_settlement_failures_total",
                              "Settlement attempts that failed (chain unreachable, batch rejected or reverted)",
                              ["reason"])  # fmt: skip
SETTLEMENT_LAG = Gauge("helium_settlement_lag_seconds", "Age of the oldest paid task not yet settled on chain")
SETTLEMENT_DELAY = Histogram("helium_settlement_delay_seconds", "From a paid task's outcome to its settlement",
                             buckets=(1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))  # fmt: skip

GATEWAY_REQUESTS = Counter(
    "helium_gateway_requests_total", "HTTP requests to the gateway", ["route", "status"])
GATEWAY_LATENCY = Histogram(
    "helium_gateway_request_seconds", "Gateway request time, to the response headers", ["route"],
    buckets=_LATENCY_BUCKETS)
GATEWAY_ANSWER = Histogram(
    "helium_gateway_answer_seconds", "Gateway time to the validated answer", ["mode"],
    buckets=_LATENCY_BUCKETS)
GATEWAY_TTFT = Histogram(
    "helium_gateway_ttft_seconds", "Time to the first streamed token through the gateway",
    buckets=_LATENCY_BUCKETS)
GATEWAY_STREAM_OUTCOMES = Counter(
    "helium_gateway_stream_outcomes_total", "Streams ended validated or with a verification error", ["outcome"])


@functools.lru_cache(maxsize=1024)
def _child(metric, *values: str):
    """The labelled child of `metric` (label values in declaration order), looked up once: these are
    recorded per task."""
    return metric.labels(*values)


def set_queue_depth(task_type: str, depth: int) -> None:
    QUEUE_DEPTH.labels(task_type=task_type).set(depth)


def observe_dispatch_latency(task_type: str, seconds: float) -> None:
    _child(DISPATCH_LATENCY, task_type).observe(seconds)


def observe_time_to_quorum(task_type: str, seconds: float) -> None:
    _child(TIME_TO_QUORUM, task_type).observe(seconds)


def record_task_created(task_type: str) -> None:
    _child(TASKS_CREATED, task_type).inc()


def record_task_finished(task_type: str, state: str) -> None:
    _child(TASKS_FINISHED, task_type, state).inc()


def record_validation(task_type: str, outcome: str) -> None:
    _child(VALIDATIONS, task_type, outcome).inc()


def record_slash(reason: str = "wrong_result") -> None:
    SLASHES.labels(reason=reason).inc()


def set_nodes(counts: Mapping[tuple[str, str], int] | Iterable[tuple[tuple[str, str], int]]) -> None:
    """Replaces the node gauge with {(state, card name): count}; states/cards now absent drop out."""
    items = counts.items() if isinstance(counts, Mapping) else counts
    NODES.clear()
    for (state, card), n in items:
        NODES.labels(state=state, card=card).set(n)


def record_relay_bytes(direction: str, n: int) -> None:
    """direction: "in" (written to the relay) or "out" (read from it)."""
    RELAY_BYTES.labels(direction=direction).inc(n)


def record_settlement(outcome: str, tasks: int) -> None:
    """A batch whose tasks are now settled: outcome "settled" (its receipt) or "reconciled" (found on chain
    after a crash or a lost receipt); `tasks` settled by it."""
    SETTLEMENTS.labels(outcome=outcome).inc()
    SETTLED_TASKS.inc(tasks)


def record_settlement_failure(reason: str) -> None:
    """reason: "chain_unavailable", "rejected" (the ledger refused the batch), "reverted", "error"."""
    SETTLEMENT_FAILURES.labels(reason=reason).inc()


def observe_settlement_delay(seconds: float) -> None:
    SETTLEMENT_DELAY.observe(max(0.0, seconds))


def watch_settlement_lag(oldest_age_s: Callable[[], float]) -> None:
    """The lag gauge reads `oldest_age_s()` at each scrape (0 when nothing waits)."""

    def read() -> float:
        try:
            return max(0.0, float(oldest_age_s()))
        except (RuntimeError, ValueError):  # the pending set changed under the scrape: report no lag once
            return 0.0

    SETTLEMENT_LAG.set_function(read)


def observe_gateway_request(route: str, status: int, seconds: float) -> None:
    GATEWAY_REQUESTS.labels(route=route, status=str(status)).inc()
    GATEWAY_LATENCY.labels(route=route).observe(seconds)


def observe_gateway_answer(mode: str, seconds: float) -> None:
    """mode: "complete" or "stream"."""
    GATEWAY_ANSWER.labels(mode=mode).observe(seconds)


def observe_gateway_ttft(seconds: float) -> None:
    GATEWAY_TTFT.observe(seconds)


def record_stream_outcome(outcome: str) -> None:
    GATEWAY_STREAM_OUTCOMES.labels(outcome=outcome).inc()


def observe_task(task: Any) -> None:
    """One state change of a domain `Task` (coordinator.domain.models), called where it is published.

    queued -> tasks created; dispatched -> dispatch latency (created -> dispatched); validated -> time to
    quorum and the outcome ("quorum_2_of_3", "quorum_3_of_3"); aborted/cancelled/settled -> finished, with
    the abort's outcome ("mismatch", "invalid_args", "timeout")."""
    kind = str(getattr(task.type, "value", task.type))
    state = str(getattr(task.state, "value", task.state))
    if state == "queued":
        record_task_created(kind)
    elif state == "dispatched":
        observe_dispatch_latency(kind, max(0, task.updated_ms - task.created_ms) / 1000)
    elif state == "validated":
        done_ms = task.validated_ms or task.updated_ms
        observe_time_to_quorum(kind, max(0, done_ms - task.created_ms) / 1000)
        record_validation(kind, (task.validation or "quorum").replace(" ", "_").replace("/", "_of_"))
    elif state in ("aborted", "cancelled", "settled"):
        record_task_finished(kind, state)
        if state == "aborted":
            record_validation(kind, task.validation or "timeout")


def observe_queue(queue_depths: Mapping[str, int]) -> None:
    """{task type: tasks waiting}, e.g. after every push/pop of the priced queue."""
    for kind, n in queue_depths.items():
        set_queue_depth(str(getattr(kind, "value", kind)), n)


def observe_nodes(records: Iterable[Any]) -> None:
    """The node gauge from domain `NodeRecord`s (state and card name of each)."""
    counts: dict[tuple[str, str], int] = {}
    for r in records:
        key = (str(getattr(r.state, "value", r.state)), getattr(r.caps.card, "name", "") or "unknown")
        counts[key] = counts.get(key, 0) + 1
    set_nodes(counts)


def render_latest(registry=REGISTRY) -> bytes:
    return generate_latest(registry)
