"""Adapters from the pure protocol modules (pricing, selection, qos) to the dispatcher's seams (hooks).

- `ValuePricer` (hooks.Pricer): the queue key is `static_priority(fee, T, enqueued_at, tau)`, so the
  order is V = fee / T, highest first, with aging. T comes from a `TimeEstimator` learned online per
  (model, card) from finished assignments' stats; its state is saved in the store (`protocol.estimator`)
  every `persist_every` observations and reloaded at start.
- `WeightedSelector` (hooks.Selector): `selection.draw_group` with W = M * QoS (M from the node's loaded
  and cached models), GPT groups on one card, replacements on the task's card; `can_ever_run` for intake.
- `QosTracker` (hooks.QosHook): `NodeQos` serialized in `NodeRecord.qos`; exclusion while H < 0.1; a
  "kick" verdict (full window, mean < 2.0) is handed to `on_kick_due(address, reason)` once.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from coordinator.domain.models import Assignment, NodeRecord, Task, TaskType
from coordinator.service import hooks
from coordinator.service.pricing import TimeEstimator, approx_tokens, static_priority
from coordinator.service.qos import NodeQos
from coordinator.service.selection import TaskRequirements, can_ever_run, draw_group
from coordinator.service.settings import ProtocolSettings

__all__ = ["QosTracker", "ValuePricer", "WeightedSelector", "task_features"]

log = structlog.get_logger("coordinator.protocol")

ESTIMATOR_KEY = "protocol.estimator"


def task_features(task: Task) -> dict:
    """Size features of a task from its canonical args: prompt_tokens and max_new_tokens (GPT), or
    images, steps and pixels (SD); a missing field is left to the estimator's defaults."""
    try:
        doc = json.loads(task.args)
    except (ValueError, TypeError):
        return {}
    if task.type == TaskType.GPT:
        gpt = doc.get("gpt", {})
        text = "".join(str(m.get("content", "")) for m in gpt.get("messages", []))
        out: dict = {"prompt_tokens": approx_tokens(text)}
        mnt = gpt.get("generation_config", {}).get("max_new_tokens")
        if mnt is not None:
            out["max_new_tokens"] = int(mnt)
        return out
    cfg = doc.get("sd", {}).get("task_config", {})
    out = {}
    if "num_images" in cfg:
        out["images"] = max(1, int(cfg["num_images"]))
    if "steps" in cfg:
        out["steps"] = int(cfg["steps"])
    if "image_width" in cfg and "image_height" in cfg:
        out["pixels"] = int(cfg["image_width"]) * int(cfg["image_height"])
    return out


class ValuePricer:
    """V = fee / T with aging, T learned per (model, card)."""

    def __init__(self, settings: ProtocolSettings, store=None, *, persist_every: int = 20) -> None:
        self.settings = settings
        self.store = store
        self.persist_every = persist_every
        self._unsaved = 0
        raw = store.get_value(ESTIMATOR_KEY) if store is not None else None
        self.estimator = TimeEstimator(settings)
        if raw:
            try:
                self.estimator = TimeEstimator.from_dict(json.loads(raw), settings)
            except (ValueError, KeyError) as exc:
                log.warning("estimator_state_unreadable", error=str(exc))

    def estimate_seconds(self, task: Task) -> float:
        f = task_features(task)
        card = task.card.name if task.card is not None else None
        return self.estimator.estimate(task.type.value, task.model, card, **f)

    def priority(self, task: Task, now_ms: int) -> float:
        est = task.estimate_s if task.estimate_s > 0 else self.estimate_seconds(task)
        return static_priority(task.fee, est, now_ms / 1000.0, self.settings.aging_tau.total_seconds())

    def observe(self, task: Task, assignment: Assignment, card_name: str) -> None:
        stats = assignment.stats or {}
        exec_ms = stats.get("exec_ms") or 0
        if exec_ms <= 0:
            return
        f = task_features(task)
        if task.type == TaskType.GPT:
            self.estimator.observe(
                "gpt", task.model, card_name, exec_ms / 1000.0,
                prompt_tokens=int(stats.get("prompt_tokens") or f.get("prompt_tokens", 0)),
                generated_tokens=int(stats.get("completion_tokens") or 0), max_new_tokens=f.get("max_new_tokens"),
            )  # fmt: skip
        else:
            images = int(stats.get("images") or f.get("images") or 1)
            steps = int(stats.get("steps") or 0)
            self.estimator.observe(
                "sd", task.model, card_name, exec_ms / 1000.0, images=images,
                steps=(steps // images if steps else f.get("steps")), pixels=f.get("pixels"),
            )  # fmt: skip
        self._unsaved += 1
        if self._unsaved >= self.persist_every:
            self.save()

    def save(self) -> None:
        if self.store is not None and self._unsaved:
            self.store.put_value(ESTIMATOR_KEY, json.dumps(self.estimator.to_dict(), separators=(",", ":")))
        self._unsaved = 0


@dataclass(frozen=True)
class _Candidate:
    """A NodeView as `selection` reads it (SelectableNode)."""

    view: hooks.NodeView
    qos: float
    available: bool = True
    excluded: bool = False

    @property
    def address(self) -> str:
        return self.view.record.address

    @property
    def card(self):
        return self.view.record.caps.card

    @property
    def worker_version(self) -> str:
        return self.view.record.caps.worker_version

    @property
    def task_kinds(self):
        return self.view.record.caps.task_types

    @property
    def dtypes(self):
        return self.view.record.caps.dtypes

    @property
    def quantize_bits(self):
        return self.view.record.caps.quantize_bits

    @property
    def loaded_models(self):
        return self.view.record.caps.loaded_models

    @property
    def cached_models(self):
        return self.view.record.caps.cached_models


def requirements(task: Task, settings: ProtocolSettings) -> TaskRequirements:
    return _requirements(task.type, task.model, task.dtype, task.quantize_bits, task.min_vram_bytes, task.card,
                         settings)  # fmt: skip


@functools.lru_cache(maxsize=4096)  # asked per draw; tasks share a few shapes
def _requirements(kind: TaskType, model: str, dtype: str, quantize_bits: int, min_vram_bytes: int, card,
                  settings: ProtocolSettings) -> TaskRequirements:  # fmt: skip
    if kind == TaskType.GPT:
        return TaskRequirements.for_gpt(model, dtype or "auto", quantize_bits or None, card)
    return TaskRequirements.for_sd(model, dtype or "auto", min_vram_bytes or None, settings)


class WeightedSelector:
    """Weighted random groups, W = M * QoS (the dispatcher passes only nodes that are not excluded)."""

    def __init__(self, settings: ProtocolSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng or random.SystemRandom()
        self._free_key: tuple = ()
        self._no_group: set = set()
        self._candidates: list[_Candidate] = []

    def pick(self, task: Task, free: Sequence[hooks.NodeView], count: int, exclude: frozenset[str]):
        req = requirements(task, self.settings)
        key = tuple((v.address, v.qos) for v in free)
        if key != self._free_key:  # a new set of free nodes: forget which requirements found no group
            self._free_key, self._no_group, self._candidates = key, set(), [_Candidate(v, v.qos) for v in free]
        if (req, count, exclude) in self._no_group:
            return None
        group = draw_group(req, self._candidates, self.rng, self.settings, exclude=exclude, count=count)
        if not group:
            self._no_group.add((req, count, exclude))
            return None
        return [c.view for c in group]

    def can_ever_run(self, task: Task, registered: Sequence[hooks.NodeView]) -> tuple[bool, str]:
        req = requirements(task, self.settings)
        return can_ever_run(req, [_Candidate(v, v.qos) for v in registered], self.settings)


class QosTracker:
    """NodeQos per node, stored in NodeRecord.qos. `history[address]` keeps the verdict changes seen
    (for operators and tests): e.g. ["excluded", "ok", "excluded", "kick"]."""

    def __init__(self, settings: ProtocolSettings, on_kick_due: Callable[[str, str], None] | None = None,
                 stake_of: Callable[[str], int | None] | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.on_kick_due = on_kick_due
        self.stake_of = stake_of
        self.history: dict[str, list[str]] = {}
        self._kicked: set[str] = set()
        self._parsed: dict[str, tuple[dict, NodeQos]] = {}  # address -> (the dict parsed, its NodeQos)

    def _load(self, node: NodeRecord) -> NodeQos:
        if not node.qos:
            return NodeQos.new(time.time(), self.settings)
        cached = self._parsed.get(node.address)
        if cached is not None and cached[0] is node.qos:
            return cached[1]
        q = NodeQos.from_dict(node.qos, self.settings)
        self._parsed[node.address] = (node.qos, q)
        return q

    def qos(self, node: NodeRecord, now_ms: int) -> float:
        return self._load(node).qos(now_ms / 1000.0)

    def _note(self, address: str, verdict: str) -> None:
        seen = self.history.setdefault(address, [])
        if not seen or seen[-1] != verdict:
            seen.append(verdict)
            if verdict != "ok":
                log.info("node_qos_verdict", node=address, verdict=verdict)

    def _after(self, node: NodeRecord, q: NodeQos, now_s: float) -> dict:
        verdict = q.verdict(now_s)
        self._note(node.address, verdict)
        if verdict == "kick" and node.address not in self._kicked:
            self._kicked.add(node.address)
            reason = (f"kicked out: mean score {q.mean_score():.2f} below {self.settings.kick_mean_below} over the "
                      f"last {self.settings.qos_window} tasks; stake returned")  # fmt: skip
            if self.on_kick_due is not None:
                self.on_kick_due(node.address, reason)
        state = q.to_dict()
        self._parsed[node.address] = (state, q)  # the record will carry this very dict: no parse next time
        return state

    def on_scored(self, node: NodeRecord, order: int, matched: bool, now_ms: int) -> dict:
        now = now_ms / 1000.0
        q = self._load(node)
        q = q.record_success(order, now) if matched else q.record_miss(now)
        return self._after(node, q, now)

    def on_timeout(self, node: NodeRecord, now_ms: int) -> dict:
        now = now_ms / 1000.0
        return self._after(node, self._load(node).record_timeout(now), now)

    def verdict(self, node: NodeRecord, now_ms: int) -> str:
        v = self._load(node).verdict(now_ms / 1000.0)
        self._note(node.address, v)
        return v

    def describe(self, node: NodeRecord, now_ms: int) -> dict:
        q = self._load(node)
        now = now_ms / 1000.0
        stake = self.stake_of(node.address) if self.stake_of is not None else None
        return {"qos": q.qos(now), "reliability": q.h(now), "mean_score": q.mean_score(), "scores": len(q.scores),
                "stake": "" if stake is None else str(stake)}  # fmt: skip
