"""Pins the public face of the protocol modules the coordinator wires in."""

from __future__ import annotations

from coordinator.service import pricing, qos, selection, settings


def test_public_api_is_pinned():
    assert sorted(pricing.__all__) == [
        "PricedQueue",
        "QueueEntry",
        "QueueFullError",
        "TimeEstimator",
        "approx_tokens",
        "current_priority",
        "parse_params_billions",
        "static_priority",
    ]
    assert sorted(qos.__all__) == ["NodeQos", "fee_split", "fee_split_by_scores", "score_for_order"]
    assert sorted(selection.__all__) == [
        "CardLike",
        "CardSpec",
        "NodeCandidate",
        "SelectableNode",
        "TaskRequirements",
        "can_ever_run",
        "can_run_now",
        "draw_group",
        "draw_replacement",
        "eligible",
        "model_locality",
        "node_weight",
        "parse_version",
        "static_reason",
        "version_compatible",
    ]
    assert sorted(settings.__all__) == ["ProtocolSettings", "TaskKind"]
    for module in (pricing, qos, selection, settings):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_settings_load_through_the_shared_loader():
    from datetime import timedelta

    from helium.config import load_settings

    s = load_settings(
        settings.ProtocolSettings,
        {"queue_capacity": 5},
        section="protocol",
        environ={"HELIUM_AGING_TAU": "120", "HELIUM_ORDER_SCORES": "10,9,6"},
    )
    assert s.queue_capacity == 5 and s.aging_tau == timedelta(seconds=120) and s.order_scores == (10, 9, 6)
    assert s.h_recovery_tau == timedelta(minutes=30) and s.qos_window == 50 and s.group_size == 3
