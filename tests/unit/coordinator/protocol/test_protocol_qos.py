"""Submission-speed scores, the fee split to the wei, and the long-run QoS record of a node."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.service.qos import NodeQos, fee_split, fee_split_by_scores, score_for_order
from coordinator.service.settings import ProtocolSettings

MIN = 60.0
TAU_H = 30 * MIN


# --- scores and the fee split ---------------------------------------------------------------------


def test_scores_by_submission_order():
    assert [score_for_order(o) for o in (1, 2, 3, 4, 0, None)] == [10, 9, 6, 0, 0, 0]


@pytest.mark.parametrize("fee", [25, 10**18, 123_456_789_123_456_789, 400 * 10**18])
def test_fee_split_is_40_36_24_to_the_wei(fee):
    parts = fee_split(fee, [1, 2, 3])
    assert sum(parts) == fee
    base = [fee * 10 // 25, fee * 9 // 25, fee * 6 // 25]
    assert parts[1:] == base[1:]
    assert parts[0] == base[0] + (fee - sum(base))
    if fee % 100 == 0:
        assert parts == [fee // 100 * 40, fee // 100 * 36, fee // 100 * 24]


def test_fee_split_of_one_ether_exactly():
    assert fee_split(10**18, [1, 2, 3]) == [4 * 10**17, 36 * 10**16, 24 * 10**16]


def test_fee_split_keeps_the_callers_order_and_gives_the_remainder_to_the_fastest():
    # 2nd and 3rd results matched and the 1st did not: 9/15 and 6/15; the remainder to order 2.
    fee = 1_000_000_000_000_000_001
    parts = fee_split(fee, [3, 2])
    assert parts == [fee * 6 // 15, fee * 9 // 15 + (fee - fee * 6 // 15 - fee * 9 // 15)]
    assert sum(parts) == fee


def test_fee_split_rejects_bad_input():
    with pytest.raises(ValueError, match="distinct"):
        fee_split(100, [1, 1])
    with pytest.raises(ValueError, match="positive sum"):
        fee_split(100, [4, 5])
    with pytest.raises(ValueError, match="empty"):
        fee_split_by_scores(100, [])
    with pytest.raises(ValueError, match="fee"):
        fee_split(-1, [1])


@given(
    fee=st.integers(min_value=0, max_value=10**30),
    orders=st.sampled_from([[1, 2], [1, 3], [2, 3], [2, 1], [3, 1], [1, 2, 3], [3, 1, 2], [2, 3, 1]]),
)
def test_fee_split_properties(fee, orders):
    parts = fee_split(fee, orders)
    assert sum(parts) == fee
    assert all(p >= 0 for p in parts)
    scores = [score_for_order(o) for o in orders]
    total = sum(scores)
    first = orders.index(min(orders))
    for i, (part, score) in enumerate(zip(parts, scores, strict=True)):
        formula = fee * score // total
        if i == first:
            assert formula <= part < formula + len(orders)  # the remainder is below the node count
        else:
            assert part == formula


# --- the long-run QoS ------------------------------------------------------------------------------


def test_new_node_starts_at_half():
    q = NodeQos.new(now=1000.0)
    assert q.qos(1000.0) == pytest.approx(0.5)
    assert q.h(1000.0) == 1.0
    assert not q.excluded(1000.0) and not q.should_kick()
    assert q.verdict(1000.0) == "ok"


def test_window_mean_moves_from_the_prior_and_keeps_the_last_50():
    s = ProtocolSettings()
    q = NodeQos.new(0.0, s)
    q = q.record_success(1, 0.0)
    assert q.mean_score() == pytest.approx((10 + 49 * 5.0) / 50)
    for i in range(60):
        q = q.record_success(1 if i % 2 else 2, float(i))
    assert len(q.scores) == 50 and q.window_full()
    assert q.mean_score() == pytest.approx(9.5)
    assert q.qos(100.0) == pytest.approx(0.95)


def test_timeouts_cut_h_and_exclude_the_node_until_it_recovers():
    q = NodeQos.new(0.0)
    q = q.record_timeout(0.0)
    assert q.h(0.0) == pytest.approx(0.3)
    assert not q.excluded(0.0)
    q = q.record_timeout(0.0)
    assert q.h(0.0) == pytest.approx(0.09)
    assert q.excluded(0.0) and q.verdict(0.0) == "excluded"
    until = q.excluded_until(0.0)
    assert until == pytest.approx(TAU_H * math.log(0.91 / 0.9))
    assert q.excluded(until - 0.01) and not q.excluded(until + 0.01)
    # Passive recovery: H(t) = 1 - (1 - H0) e^(-t/tau).
    assert q.h(TAU_H) == pytest.approx(1 - 0.91 * math.exp(-1))
    assert q.h(10 * TAU_H) == pytest.approx(1.0, abs=1e-4)
    assert q.qos(10 * TAU_H) == pytest.approx(q.mean_score() / 10, rel=1e-4)


def test_success_gains_h_capped_at_one():
    q = NodeQos.new(0.0).record_timeout(0.0)  # 0.3
    q = q.record_success(1, 0.0)
    assert q.h(0.0) == pytest.approx(0.45)
    for _ in range(10):
        q = q.record_success(2, 0.0)
    assert q.h(0.0) == 1.0


def test_h_recovery_is_continuous_across_events():
    # Recording a miss re-anchors H without changing its curve.
    q = NodeQos.new(0.0).record_timeout(0.0)
    later = q.record_miss(600.0)
    assert later.h(1800.0) == pytest.approx(q.h(1800.0))


def test_a_node_that_keeps_timing_out_is_kicked_once_the_window_is_full():
    s = ProtocolSettings()
    q = NodeQos.new(0.0, s)
    t = 0.0
    for i in range(49):
        # It recovers between tasks long enough to be drawn again, and times out 4 times in 5.
        t += 3 * TAU_H
        q = q.record_timeout(t) if i % 5 else q.record_success(3, t)
        assert not q.should_kick()
    t += 3 * TAU_H
    q = q.record_timeout(t)
    assert q.window_full() and q.mean_score() == pytest.approx(6 * 10 / 50)
    assert q.should_kick() and q.verdict(t) == "kick"


def test_a_slow_but_reliable_node_is_not_kicked():
    q = NodeQos.new(0.0)
    for i in range(80):
        q = q.record_success(3, float(i))
    assert not q.should_kick() and q.qos(100.0) == pytest.approx(0.6)


def test_state_round_trips_and_settings_apply():
    s = ProtocolSettings(qos_window=4, h_recovery_tau=timedelta(seconds=10), kick_mean_below=5.0)
    q = NodeQos.new(5.0, s).record_success(1, 6.0).record_timeout(7.0).record_timeout(8.0).record_miss(9.0)
    back = NodeQos.from_dict(json.loads(json.dumps(q.to_dict())), s)
    assert back == q
    assert back.qos(20.0) == q.qos(20.0)
    assert back.should_kick()  # window of 4: mean (10 + 0 + 0 + 0) / 4 = 2.5 < 5
    assert back.h(1000.0) == pytest.approx(1.0)
    # Too many scores are cut to the window.
    assert NodeQos(scores=(1, 2, 3, 4, 5, 6), settings=s).scores == (3, 4, 5, 6)
    with pytest.raises(ValueError, match="h_base"):
        NodeQos(h_base=1.5)
