"""Prometheus metrics of a worker process, and the tiny `/metrics` server that exposes them.

Registry: the process's default `prometheus_client.REGISTRY` (one worker
process, possibly several nodes, each labelled by its address). Metric
objects are created once, at import; the worker code calls the helpers below.
"""

from __future__ import annotations

import functools

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

__all__ = [
    "observe_task",
    "record_assignment",
    "record_relay_bytes",
    "set_connected",
    "set_model_loaded",
    "start_worker_metrics_server",
]

_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

TASK_SECONDS = Histogram("helium_worker_task_seconds", "Execution time of one assignment",
                         ["node", "task_type"], buckets=_BUCKETS)
TOKENS = Counter("helium_worker_generated_tokens_total", "Tokens generated", ["node", "model"])
TOKENS_PER_SECOND = Gauge("helium_worker_tokens_per_second", "Generation speed of the last GPT task",
                          ["node", "model"])
IMAGES = Counter("helium_worker_images_total", "Images generated", ["node", "model"])
ASSIGNMENTS = Counter("helium_worker_assignments_total", "Assignments by outcome",
                      ["node", "task_type", "outcome"])
CONNECTED = Gauge("helium_worker_connected", "1 while the node's stream to the coordinator is up", ["node"])
MODEL_LOADED = Gauge("helium_worker_model_loaded", "1 for each model loaded in memory", ["node", "model"])
RELAY_BYTES = Counter("helium_worker_relay_bytes_total", "Bytes to/from the relay", ["node", "direction"])


@functools.lru_cache(maxsize=8192)
def _child(metric, *values: str):
    """The labelled child of `metric` (label values in declaration order), looked up once: these are
    recorded per task."""
    return metric.labels(*values)


def observe_task(node: str, task_type: str, model: str, seconds: float, *,
                 completion_tokens: int = 0, images: int = 0) -> None:
    """One finished execution: its time, and tokens/s (GPT) or images (SD)."""
    _child(TASK_SECONDS, node, task_type).observe(seconds)
    if completion_tokens:
        _child(TOKENS, node, model).inc(completion_tokens)
        if seconds > 0:
            _child(TOKENS_PER_SECOND, node, model).set(completion_tokens / seconds)
    if images:
        _child(IMAGES, node, model).inc(images)


def record_assignment(node: str, task_type: str, outcome: str) -> None:
    """outcome: "submitted", "invalid_args", "out_of_memory", "crash", "cancelled"."""
    _child(ASSIGNMENTS, node, task_type, outcome).inc()


def set_connected(node: str, up: bool) -> None:
    CONNECTED.labels(node=node).set(1 if up else 0)


def set_model_loaded(node: str, model: str, loaded: bool) -> None:
    MODEL_LOADED.labels(node=node, model=model).set(1 if loaded else 0)


def record_relay_bytes(node: str, direction: str, n: int) -> None:
    RELAY_BYTES.labels(node=node, direction=direction).inc(n)


def start_worker_metrics_server(port: int = 0, host: str = "127.0.0.1", registry=REGISTRY) -> int:
    """Serves `/metrics` from a daemon thread; returns the bound port (port 0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
