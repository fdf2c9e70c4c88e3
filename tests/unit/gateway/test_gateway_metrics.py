"""coordinator.metrics and worker.metrics: helpers move the right series; /metrics text parses."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from coordinator import metrics as cm
from worker import metrics as wm


def _value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@dataclass
class _Task:
    type: str
    state: str
    created_ms: int = 1000
    updated_ms: int = 1500
    validated_ms: int = 0
    validation: str = ""


@dataclass
class _Card:
    name: str


@dataclass
class _Caps:
    card: _Card


@dataclass
class _Node:
    state: str
    caps: _Caps


def test_task_lifecycle_moves_created_dispatch_quorum_and_outcomes():
    before = (_value("helium_tasks_created_total", task_type="gpt"),
              _value("helium_dispatch_latency_seconds_count", task_type="gpt"),
              _value("helium_time_to_quorum_seconds_sum", task_type="gpt"),
              _value("helium_validation_outcomes_total", task_type="gpt", outcome="quorum_2_of_3"),
              _value("helium_validation_outcomes_total", task_type="gpt", outcome="mismatch"))
    cm.observe_task(_Task("gpt", "queued"))
    cm.observe_task(_Task("gpt", "dispatched"))
    cm.observe_task(_Task("gpt", "validated", validated_ms=3000, validation="quorum 2/3"))
    cm.observe_task(_Task("gpt", "aborted", validation="mismatch"))
    after = (_value("helium_tasks_created_total", task_type="gpt"),
             _value("helium_dispatch_latency_seconds_count", task_type="gpt"),
             _value("helium_time_to_quorum_seconds_sum", task_type="gpt"),
             _value("helium_validation_outcomes_total", task_type="gpt", outcome="quorum_2_of_3"),
             _value("helium_validation_outcomes_total", task_type="gpt", outcome="mismatch"))
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1
    assert after[2] - before[2] == pytest.approx(2.0) and after[3] == before[3] + 1 and after[4] == before[4] + 1


def test_gauges_queue_nodes_slashes_relay():
    cm.observe_queue({"gpt": 4, "sd": 0})
    cm.observe_nodes([_Node("available", _Caps(_Card("H100"))), _Node("available", _Caps(_Card("H100"))),
                      _Node("busy", _Caps(_Card("cpu")))])
    assert _value("helium_queue_depth", task_type="gpt") == 4
    assert _value("helium_nodes", state="available", card="H100") == 2
    cm.observe_nodes([_Node("busy", _Caps(_Card("cpu")))])
    assert _value("helium_nodes", state="available", card="H100") == 0  # gone, not stale
    s, r = _value("helium_slashes_total", reason="wrong_result"), _value("helium_relay_bytes_total", direction="in")
    cm.record_slash()
    cm.record_relay_bytes("in", 1234)
    assert _value("helium_slashes_total", reason="wrong_result") == s + 1
    assert _value("helium_relay_bytes_total", direction="in") == r + 1234
    text = cm.render_latest().decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"helium_queue_depth", "helium_nodes", "helium_slashes", "helium_time_to_quorum_seconds"} <= names


def test_worker_metrics_server_serves_tokens_per_second():
    wm.observe_task("0xnode", "gpt", "tiny", 2.0, completion_tokens=50)
    wm.set_connected("0xnode", True)
    port = wm.start_worker_metrics_server(0)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("helium_worker_tokens_per_second", (("model", "tiny"), ("node", "0xnode")))] == 25.0
    assert samples[("helium_worker_connected", (("node", "0xnode"),))] == 1.0
