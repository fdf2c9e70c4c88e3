"""Node selection: candidates, same-card GPT groups, VRAM for SD, weights, replacements, refusal."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from coordinator.domain.models import Card, TaskType
from coordinator.service.selection import (
    CardSpec,
    NodeCandidate,
    TaskRequirements,
    can_ever_run,
    can_run_now,
    draw_group,
    draw_replacement,
    eligible,
    model_locality,
    node_weight,
    version_compatible,
)
from coordinator.service.settings import ProtocolSettings, TaskKind

GIB = 1 << 30
H100 = CardSpec("NVIDIA H100 80GB HBM3", 80 * GIB)
A10 = CardSpec("NVIDIA A10", 24 * GIB)
T4 = CardSpec("Tesla T4", 16 * GIB)
T4_SMALL = CardSpec("Tesla T4", 8 * GIB)  # same name, other VRAM: another card
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


def node(address, card, **kw) -> NodeCandidate:
    kw.setdefault("worker_version", "0.1.0")
    kw.setdefault("dtypes", frozenset({"float32", "float16"}))
    return NodeCandidate(address=address, card=card, **kw)


def fleet() -> list[NodeCandidate]:
    return (
        [node(f"h{i}", H100) for i in range(4)]
        + [node(f"a{i}", A10) for i in range(3)]
        + [node(f"t{i}", T4) for i in range(2)]
        + [node("s0", T4_SMALL)]
    )


def test_gpt_groups_always_share_one_card():
    rng = random.Random(1)
    req = TaskRequirements.for_gpt(MODEL)
    seen = Counter()
    for _ in range(300):
        group = draw_group(req, fleet(), rng)
        assert group is not None and len(group) == 3 and len({n.address for n in group}) == 3
        assert len({n.card for n in group}) == 1
        seen[group[0].card] += 1
    # Only cards with >= 3 eligible nodes are drawn; T4 has 2 (the 8 GiB T4 is another card).
    assert set(seen) == {H100, A10}
    # Cards are drawn by their total weight: 4 H100 vs 3 A10 nodes of equal weight.
    assert seen[H100] / 300 == pytest.approx(4 / 7, abs=0.08)


def test_gpt_task_with_a_fixed_card_stays_on_it():
    req = TaskRequirements.for_gpt(MODEL, card=A10)
    group = draw_group(req, fleet(), random.Random(2))
    assert group is not None and {n.card for n in group} == {A10}
    assert draw_group(TaskRequirements.for_gpt(MODEL, card=T4), fleet(), random.Random(2)) is None


def test_sd_groups_need_vram_and_may_mix_cards():
    rng = random.Random(3)
    req = TaskRequirements.for_sd("sd-1.5", min_vram_bytes=16 * GIB)
    mixed = 0
    for _ in range(200):
        group = draw_group(req, fleet(), rng)
        assert group is not None and len(group) == 3
        assert all(n.card.vram_bytes >= 16 * GIB for n in group)
        mixed += len({n.card for n in group}) > 1
    assert mixed > 100
    big = TaskRequirements.for_sd("sdxl", min_vram_bytes=40 * GIB)
    assert {n.card for n in draw_group(big, fleet(), rng)} == {H100}
    assert TaskRequirements.for_sd("sd").min_vram_bytes == ProtocolSettings().sd_min_vram_bytes


def test_availability_exclusion_and_exclude_list_filter_candidates():
    nodes = [
        node("a", A10),
        node("b", A10, available=False),
        node("c", A10, excluded=True),
        node("d", A10),
        node("e", A10),
    ]
    req = TaskRequirements.for_gpt(MODEL)
    assert [n.address for n in eligible(req, nodes)] == ["a", "d", "e"]
    assert [n.address for n in eligible(req, nodes, exclude={"d"})] == ["a", "e"]
    assert {n.address for n in draw_group(req, nodes, random.Random(0))} == {"a", "d", "e"}
    assert draw_group(req, nodes, random.Random(0), exclude={"a"}) is None
    assert can_run_now(req, nodes) and not can_run_now(req, nodes[:3])


def test_dtype_quantization_task_type_and_version_filters():
    nodes = [
        node("bf", A10, dtypes=frozenset({"bfloat16", "float32"}), quantize_bits=frozenset({4, 8})),
        node("fp", A10, dtypes=frozenset({"float16", "float32"}), quantize_bits=frozenset({8})),
        node("any", A10, dtypes=frozenset()),  # did not say: any dtype, no quantization
        node("sd-only", A10, task_kinds=frozenset({TaskKind.SD})),
        node("old", A10, worker_version="0.0.9"),
        node("next-major", A10, worker_version="1.0.0"),
        node("newer", A10, worker_version="0.2.1rc1"),
    ]

    def names(req):
        return {n.address for n in eligible(req, nodes)}

    assert names(TaskRequirements.for_gpt(MODEL)) == {"bf", "fp", "any", "newer"}
    assert names(TaskRequirements.for_gpt(MODEL, dtype="bfloat16")) == {"bf", "any"}
    assert names(TaskRequirements.for_gpt(MODEL, quantize_bits=4)) == {"bf"}
    assert names(TaskRequirements.for_gpt(MODEL, quantize_bits=8)) == {"bf", "fp"}
    # The domain's empty dtype and 0 bits mean "auto" and "none".
    req = TaskRequirements(TaskType.GPT, MODEL, dtype="", quantize_bits=0)
    assert req.kind is TaskKind.GPT and req.dtype == "auto" and req.quantize_bits is None
    assert version_compatible("0.1.0", "0.1.0") and version_compatible("0.3", "0.1.0")
    assert not version_compatible("1.0.0", "0.1.0") and not version_compatible("dev", "0.1.0")


def test_model_locality_and_weight():
    s = ProtocolSettings()
    loaded = node("l", A10, loaded_models=frozenset({MODEL}), cached_models=frozenset({MODEL}), qos=0.8)
    cached = node("c", A10, cached_models=frozenset({MODEL}), qos=0.8)
    cold = node("n", A10, qos=0.8)
    assert [model_locality(n, MODEL, s) for n in (loaded, cached, cold)] == [2.0, 1.5, 1.0]
    assert node_weight(loaded, MODEL, s) == pytest.approx(1.6)
    assert node_weight(node("z", A10, qos=0.0), MODEL, s) == s.min_weight


def test_a_loaded_model_node_is_drawn_about_twice_as_often():
    # Equal QoS; one node has the model loaded. A single draw (a replacement) is proportional
    # to W = M * QoS, so the loaded node comes up 2x as often as each cold one.
    rng = random.Random(42)
    req = TaskRequirements.for_gpt(MODEL)
    hot = node("hot", A10, loaded_models=frozenset({MODEL}))
    small = [hot] + [node(f"c{i}", A10) for i in range(9)]
    single = Counter(draw_replacement(req, small, rng, A10, used=()).address for _ in range(10_000))
    cold_mean = sum(v for k, v in single.items() if k != "hot") / 9
    assert single["hot"] / cold_mean == pytest.approx(2.0, rel=0.08)
    # In a group of 3 drawn without replacement from 20 nodes, the exact inclusion ratio of
    # successive sampling is 1.89 (it tends to 2 as the pool grows).
    pool = [hot] + [node(f"c{i}", A10) for i in range(19)]
    grouped = Counter(n.address for _ in range(8_000) for n in draw_group(req, pool, rng))
    cold_mean = sum(v for k, v in grouped.items() if k != "hot") / 19
    assert grouped["hot"] / cold_mean == pytest.approx(1.89, rel=0.08)


def test_higher_qos_is_drawn_more():
    pool = [node("good", A10, qos=0.9)] + [node(f"p{i}", A10, qos=0.3) for i in range(9)]
    rng = random.Random(9)
    req = TaskRequirements.for_sd("sd", min_vram_bytes=0)
    counts = Counter(draw_replacement(req, pool, rng, A10, used=()).address for _ in range(10_000))
    assert counts["good"] / (sum(counts.values()) - counts["good"]) * 9 == pytest.approx(3.0, rel=0.1)


def test_replacement_keeps_the_card_and_skips_used_nodes():
    rng = random.Random(4)
    req = TaskRequirements.for_gpt(MODEL)
    used = {"h0", "h1", "h2"}
    for _ in range(100):
        r = draw_replacement(req, fleet(), rng, H100, used=used)
        assert r is not None and r.address == "h3"
    assert draw_replacement(req, fleet(), rng, H100, used=used | {"h3"}) is None
    # SD prefers the lapsed node's card and falls back to any eligible one.
    sd = TaskRequirements.for_sd("sd", min_vram_bytes=0)
    assert draw_replacement(sd, fleet(), rng, T4, used={"t0"}).address == "t1"
    other = draw_replacement(sd, fleet(), rng, T4, used={"t0", "t1"})
    assert other is not None and other.card != T4


def test_draws_are_reproducible_with_a_seed():
    req = TaskRequirements.for_gpt(MODEL)
    a = [[n.address for n in draw_group(req, fleet(), random.Random(s))] for s in range(20)]
    b = [[n.address for n in draw_group(req, fleet(), random.Random(s))] for s in range(20)]
    assert a == b and len({tuple(g) for g in a}) > 1


def test_draw_group_count_and_domain_cards():
    # Any value-equal hashable card works, for example the domain's Card.
    nodes = [node(f"n{i}", Card("NVIDIA A10", 24 * GIB)) for i in range(3)]
    req = TaskRequirements.for_gpt(MODEL, card=Card("NVIDIA A10", 24 * GIB))
    assert len(draw_group(req, nodes, random.Random(0))) == 3
    assert len(draw_group(req, nodes, random.Random(0), count=1, exclude={"n0", "n1"})) == 1
    with pytest.raises(ValueError, match="count"):
        draw_group(req, nodes, random.Random(0), count=0)


def test_can_ever_run_counts_busy_nodes_and_names_the_reason():
    busy = [
        node(f"b{i}", A10, available=False, excluded=(i == 0), dtypes=frozenset({"float16"}))
        for i in range(3)
    ]
    assert can_ever_run(TaskRequirements.for_gpt(MODEL), busy) == (True, "")
    ok, reason = can_ever_run(TaskRequirements.for_sd("sdxl", min_vram_bytes=96 * GIB), fleet())
    assert not ok and "VRAM" in reason
    ok, reason = can_ever_run(TaskRequirements.for_gpt(MODEL, dtype="bfloat16"), busy)
    assert not ok and "bfloat16" in reason
    ok, reason = can_ever_run(TaskRequirements.for_gpt(MODEL, quantize_bits=4), fleet())
    assert not ok and "quantize_bits 4" in reason
    # Four T4s, but only two of each VRAM size: no GPT group, while SD can mix them.
    t4s = [node("t0", T4), node("t1", T4), node("s0", T4_SMALL), node("s1", T4_SMALL)]
    ok, reason = can_ever_run(TaskRequirements.for_gpt(MODEL), t4s)
    assert not ok and "card" in reason
    assert can_ever_run(TaskRequirements.for_sd("sd", min_vram_bytes=4 * GIB), t4s) == (True, "")
    ok, reason = can_ever_run(TaskRequirements.for_gpt(MODEL), t4s[:2])
    assert not ok and "fewer than 3" in reason
    sd_only = [node(f"x{i}", A10, task_kinds=frozenset({TaskKind.SD})) for i in range(3)]
    ok, reason = can_ever_run(TaskRequirements.for_gpt(MODEL), sd_only)
    assert not ok and "GPT" in reason
