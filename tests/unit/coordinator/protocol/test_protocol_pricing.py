"""The priced queue (value order, aging, bound, restart order) and the execution-time estimator."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.errors import ResourceExhausted
from coordinator.service.pricing import (
    PricedQueue,
    QueueFullError,
    TimeEstimator,
    current_priority,
    parse_params_billions,
    static_priority,
)
from coordinator.service.settings import ProtocolSettings, TaskKind

TAU = 60.0
ETH = 10**18


# --- value and aging -----------------------------------------------------------------------------


def test_high_value_task_overtakes_low_value_task():
    q: PricedQueue[str] = PricedQueue(10)
    # Same estimated time, the later task pays 10x more: it is served first.
    q.push("low", static_priority(ETH, 10.0, enqueued_at_s=1000.0, tau_s=TAU))
    q.push("high", static_priority(10 * ETH, 10.0, enqueued_at_s=1001.0, tau_s=TAU))
    assert [e.task_id for e in q] == ["high", "low"]
    # Value is fee per second: a cheap but short task beats an expensive long one.
    assert static_priority(ETH, 1.0, 0.0, TAU) > static_priority(5 * ETH, 10.0, 0.0, TAU)


def test_aging_eventually_serves_the_low_value_task():
    q: PricedQueue[str] = PricedQueue(100)
    q.push("low", static_priority(ETH, 10.0, enqueued_at_s=0.0, tau_s=TAU))
    # High-value tasks keep arriving; before tau*ln(10) = 138 s of waiting they win...
    served = []
    for t in range(0, 400, 20):
        q.push(f"high-{t}", static_priority(10 * ETH, 10.0, enqueued_at_s=float(t), tau_s=TAU))
        served.append(q.pop().task_id)
    first_low = served.index("low")
    # ...and after it, the waiting low-value task is served ahead of newer high-value ones.
    assert all(s.startswith("high") for s in served[:first_low])
    arrival_when_served = first_low * 20
    assert TAU * math.log(10) <= arrival_when_served <= TAU * math.log(10) + 20


def test_aged_priority_orders_like_static_key():
    a = (3 * ETH, 7.0, 100.0)
    b = (ETH, 2.0, 40.0)
    now = 500.0
    static = static_priority(a[0], a[1], a[2], TAU) > static_priority(b[0], b[1], b[2], TAU)
    aged = current_priority(a[0], a[1], now - a[2], TAU) > current_priority(b[0], b[1], now - b[2], TAU)
    assert static == aged


@pytest.mark.parametrize(
    ("fee", "est", "field"),
    [(0, 1.0, "fee"), (-5, 1.0, "fee"), (ETH, 0.0, "est_seconds"), (ETH, float("nan"), "est_seconds")],
)
def test_static_priority_rejects_bad_inputs(fee, est, field):
    with pytest.raises(ValueError, match=field):
        static_priority(fee, est, 0.0, TAU)


# --- the queue -----------------------------------------------------------------------------------


def test_capacity_refusal_changes_nothing():
    q: PricedQueue[None] = PricedQueue(2)
    q.push("a", 1.0)
    q.push("b", 2.0)
    with pytest.raises(QueueFullError) as info:
        q.push("c", 100.0)
    assert isinstance(info.value, ResourceExhausted)  # RESOURCE_EXHAUSTED at the edge
    assert len(q) == 2 and "c" not in q
    assert [e.task_id for e in q] == ["b", "a"]
    q.remove("a")
    q.push("c", 100.0)
    assert q.pop().task_id == "c"


def test_ties_are_broken_by_enqueue_order():
    q: PricedQueue[None] = PricedQueue(10)
    for name in "abcde":
        q.push(name, 5.0)
    assert [q.pop().task_id for _ in range(5)] == list("abcde")


def test_duplicate_and_nan_are_refused():
    q: PricedQueue[None] = PricedQueue(10)
    q.push("a", 1.0)
    with pytest.raises(ValueError, match="already queued"):
        q.push("a", 2.0)
    with pytest.raises(ValueError, match="key"):
        q.push("b", float("nan"))
    assert len(q) == 1


def test_pop_first_takes_the_best_task_the_group_can_run():
    q: PricedQueue[str] = PricedQueue(10)
    q.push("gpt-big", 9.0, "gpt")
    q.push("sd-1", 8.0, "sd")
    q.push("gpt-small", 7.0, "gpt")
    q.push("sd-2", 6.0, "sd")
    got = q.pop_first(lambda e: e.value == "sd")
    assert got is not None and got.task_id == "sd-1"
    assert [e.task_id for e in q] == ["gpt-big", "gpt-small", "sd-2"]
    assert q.pop_first(lambda e: e.value == "sd", limit=2) is None  # sd-2 is third
    assert q.pop_first(lambda e: False) is None
    assert len(q) == 3


def test_order_survives_a_restart_from_persisted_keys():
    rng = random.Random(7)
    q: PricedQueue[None] = PricedQueue(1000)
    for i in range(300):
        fee = rng.randint(1, 1000) * 10**15
        q.push(f"t{i}", static_priority(fee, rng.uniform(0.5, 60), float(i), TAU))
    for i in range(0, 300, 7):
        q.remove(f"t{i}")
    before = [e.task_id for e in q]
    # Persist (task_id, key, seq) as JSON, reload in a shuffled order.
    rows = json.loads(json.dumps([[e.task_id, e.key, e.seq] for e in q]))
    rng.shuffle(rows)
    q2: PricedQueue[None] = PricedQueue(1000)
    for task_id, key, seq in rows:
        q2.push(task_id, key, seq=seq)
    assert [e.task_id for e in q2] == before
    assert [q2.pop().task_id for _ in range(len(q2))] == before
    assert q2.next_seq == max(seq for _, _, seq in rows) + 1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["push", "pop", "remove", "pop_first"]), st.integers(0, 30), st.integers(-5, 5)
        ),
        max_size=120,
    )
)
def test_queue_matches_a_sorted_reference(ops):
    q: PricedQueue[int] = PricedQueue(20)
    ref: dict[str, tuple[float, int]] = {}
    seq = 0

    def order():
        return sorted(ref, key=lambda t: (-ref[t][0], ref[t][1]))

    for op, n, k in ops:
        tid = f"t{n}"
        if op == "push":
            if tid in ref:
                continue
            if len(ref) >= 20:
                with pytest.raises(QueueFullError):
                    q.push(tid, float(k), n)
                continue
            q.push(tid, float(k), n)
            ref[tid] = (float(k), seq)
            seq += 1
        elif op == "pop":
            if not ref:
                with pytest.raises(IndexError):
                    q.pop()
                continue
            assert q.pop().task_id == order()[0]
            del ref[order()[0]]
        elif op == "remove":
            got = q.remove(tid)
            assert (got is not None) == (tid in ref)
            ref.pop(tid, None)
        else:
            want = next((t for t in order() if int(t[1:]) % 3 == n % 3), None)
            got = q.pop_first(lambda e, m=n % 3: e.value % 3 == m)
            assert (got.task_id if got else None) == want
            if want:
                del ref[want]
        assert [e.task_id for e in q] == order()
        assert len(q) == len(ref)
        top = q.peek()
        assert (top.task_id if top else None) == (order()[0] if ref else None)


def test_queue_keeps_its_order_with_100k_entries():
    """Correctness at size; its speed is measured in bench/, not asserted here."""
    rng = random.Random(1)
    q: PricedQueue[None] = PricedQueue(100_000)
    for i in range(100_000):
        q.push(f"t{i}", rng.random())
    for i in range(0, 100_000, 2):
        q.remove(f"t{i}")
    last = math.inf
    for _ in range(1000):
        e = q.pop()
        assert e.key <= last
        last = e.key
    assert q.pop_first(lambda e: e.task_id.endswith("99")) is not None
    assert len(q) == 50_000 - 1001


# --- the estimator -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "billions"),
    [
        ("Qwen/Qwen2.5-0.5B-Instruct", 0.5),
        ("meta-llama/Llama-2-7b-hf", 7.0),
        ("facebook/opt-125m", 0.125),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1.1),
        ("mistralai/Mixtral-8x7B-v0.1", 56.0),
        ("meta-llama/Llama-3.1-70B", 70.0),
        ("gpt2", None),
        ("sshleifer/tiny-gpt2", None),
    ],
)
def test_parse_params(name, billions):
    assert parse_params_billions(name) == billions


def test_fallback_scales_with_model_size_tokens_and_image_steps():
    s = ProtocolSettings()
    est = TimeEstimator(s)
    small = est.estimate(TaskKind.GPT, "Qwen/Qwen2.5-0.5B-Instruct", max_new_tokens=256)
    big = est.estimate(TaskKind.GPT, "meta-llama/Llama-2-7b-hf", max_new_tokens=256)
    unknown = est.estimate(TaskKind.GPT, "gpt2", max_new_tokens=256)
    assert small < unknown < big  # unknown size counts as fallback_model_params_b = 1
    expected = s.fallback_gpt_overhead_s + 256 * s.fallback_gpt_decode_s_per_token_per_b * 7
    assert big == pytest.approx(expected)
    assert est.estimate(TaskKind.GPT, "gpt2", max_new_tokens=512) > unknown
    assert est.estimate(TaskKind.GPT, "gpt2", prompt_tokens=2000, max_new_tokens=256) > unknown
    sd = est.estimate(TaskKind.SD, "sd-1.5", images=6, steps=25)
    assert sd == pytest.approx(s.fallback_sd_overhead_s + 6 * 25 * s.fallback_sd_s_per_image_step)
    assert est.estimate(TaskKind.SD, "sd-1.5", images=6, steps=25, pixels=1024 * 1024) > sd
    assert est.estimate(TaskKind.SD, "sd-1.5") == pytest.approx(sd)  # defaults: 6 images, 25 steps
    with pytest.raises(ValueError, match="kind"):
        est.estimate("video", "x")


def test_estimator_learns_per_model_and_card():
    rng = random.Random(3)
    est = TimeEstimator()
    model, fast, slow = "Qwen/Qwen2.5-0.5B-Instruct", "H100|85899345920", "T4|16106127360"
    for _ in range(200):
        p, g = rng.randint(10, 2000), rng.randint(1, 256)
        est.observe(
            TaskKind.GPT, model, fast, 0.1 + 0.0001 * p + 0.002 * g, prompt_tokens=p, generated_tokens=g
        )
        est.observe(
            TaskKind.GPT, model, slow, 0.5 + 0.0005 * p + 0.02 * g, prompt_tokens=p, generated_tokens=g
        )
    for card, truth in ((fast, 0.1 + 0.05 + 0.2), (slow, 0.5 + 0.25 + 2.0)):
        got = est.estimate(TaskKind.GPT, model, card, prompt_tokens=500, max_new_tokens=100)
        assert got == pytest.approx(truth, rel=0.1)
    # An unseen card falls back to what the model showed on every card: between the two.
    mid = est.estimate(TaskKind.GPT, model, "A10|24", prompt_tokens=500, max_new_tokens=100)
    assert 0.35 < mid < 2.75
    assert est.samples(TaskKind.GPT, model, fast) == 200 and est.samples(TaskKind.GPT, model) == 400


def test_estimator_is_robust_with_few_samples():
    est = TimeEstimator()
    model = "m-7B"
    prior = est.estimate(TaskKind.GPT, model, "c", max_new_tokens=100)
    est.observe(TaskKind.GPT, model, "c", 0.4, prompt_tokens=0, generated_tokens=100)
    one = est.estimate(TaskKind.GPT, model, "c", max_new_tokens=100)
    # One sample moves the estimate toward it without jumping wildly or going negative.
    assert 0.4 < one < prior
    for _ in range(30):
        est.observe(TaskKind.GPT, model, "c", 0.4, prompt_tokens=0, generated_tokens=100)
    assert est.estimate(TaskKind.GPT, model, "c", max_new_tokens=100) == pytest.approx(0.4, rel=0.15)
    assert (
        est.estimate(TaskKind.GPT, model, "c", max_new_tokens=0) >= ProtocolSettings().estimator_min_seconds
    )
    with pytest.raises(ValueError, match="seconds"):
        est.observe(TaskKind.GPT, model, "c", -1.0)


def test_estimator_learns_sd_rate_per_image_step():
    est = TimeEstimator()
    for images, steps in [(1, 10), (2, 20), (4, 25), (6, 25), (1, 50)] * 10:
        est.observe(TaskKind.SD, "sd-1.5", "L4|24", 0.3 + 0.02 * images * steps, images=images, steps=steps)
    assert est.estimate(TaskKind.SD, "sd-1.5", "L4|24", images=3, steps=30) == pytest.approx(
        0.3 + 1.8, rel=0.1
    )


def test_estimator_learns_the_generated_fraction():
    est = TimeEstimator()
    before = est.estimate(TaskKind.GPT, "m-1B", "c", max_new_tokens=256)
    for _ in range(40):  # the model stops after a quarter of max_new_tokens
        est.observe(TaskKind.GPT, "m-1B", "c", 0.5 + 64 * 0.005, generated_tokens=64, max_new_tokens=256)
    after = est.estimate(TaskKind.GPT, "m-1B", "c", max_new_tokens=256)
    assert after < 0.6 * before


def test_estimator_state_round_trips():
    rng = random.Random(5)
    est = TimeEstimator()
    for _ in range(20):
        g = rng.randint(1, 100)
        est.observe(TaskKind.GPT, "m-1B", "c1", 0.2 + 0.01 * g, generated_tokens=g, max_new_tokens=128)
        est.observe(TaskKind.SD, "sd", None, 3.0, images=2, steps=20)
    data = json.loads(json.dumps(est.to_dict()))
    back = TimeEstimator.from_dict(data)
    for args in [
        (TaskKind.GPT, "m-1B", "c1"),
        (TaskKind.GPT, "m-1B", None),
        (TaskKind.GPT, "m-1B", "c2"),
        (TaskKind.SD, "sd", None),
    ]:
        assert back.estimate(*args, max_new_tokens=64) == est.estimate(*args, max_new_tokens=64)
    assert back.to_dict() == data
    with pytest.raises(ValueError, match="version"):
        TimeEstimator.from_dict({"version": 99})
