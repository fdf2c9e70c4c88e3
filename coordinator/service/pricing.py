"""Pricing: the execution-time estimate T, the value V = fee / T with aging, and the priced queue.

Order. A task's priority at time t is `log(V) + age / tau`: highest value per GPU second first
(weighted shortest job first), and a waiting task gains a factor e in V every `tau`, so nothing
starves. Because every task ages at the same rate, that order equals the order of the
time-invariant key `log(V) - enqueued_at / tau` (`static_priority`). The heap never needs
re-keying, and a queue rebuilt from persisted keys (and sequence numbers, the tie-break) has
exactly the same order after a restart.

Estimate. `TimeEstimator` learns T per (model, card) from finished tasks by online ridge
regression toward a prior: GPT `seconds = a + b * prompt_tokens + c * generated_tokens`, SD
`seconds = a + r * images * steps * (pixels / 512^2)`. The prior of a (model, card) is what was
learned for the model on any card, and the prior of that is a formula from the model size
(parsed from its name), max_new_tokens, and images x steps. With no samples the estimate is the
formula; each sample moves it toward the data, and old samples are forgotten slowly.

Plain Python: no gRPC, SQL or protobuf types. Inputs are strings and numbers; a card is any
string key (`CardSpec.key` in `selection`).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from coordinator.errors import ResourceExhausted
from coordinator.service.settings import ProtocolSettings, TaskKind

__all__ = [
    "PricedQueue",
    "QueueEntry",
    "QueueFullError",
    "TimeEstimator",
    "approx_tokens",
    "current_priority",
    "parse_params_billions",
    "static_priority",
]

T = TypeVar("T")

_SD_BASE_PIXELS = 512 * 512
# Feature scales that keep the regression well conditioned (coefficients are per 1000 prompt
# tokens, per 100 generated tokens, per 100 image-steps).
_GPT_SCALE = (1.0, 1000.0, 100.0)
_SD_SCALE = (1.0, 100.0)
# The fixed overhead varies less between machines than the per-token rate does, so the prior
# holds the intercept more firmly: a surprising time first moves the rate.
_INTERCEPT_STIFFNESS = 4.0


# ---------------------------------------------------------------------------------------------
# Value and aging


def static_priority(fee_wei: int, est_seconds: float, enqueued_at_s: float, tau_s: float) -> float:
    """The time-invariant queue key `log(fee / T) - enqueued_at / tau`; higher is served first."""
    if fee_wei <= 0:
        raise ValueError(f"fee must be > 0, got {fee_wei}")
    if not (est_seconds > 0 and math.isfinite(est_seconds)):
        raise ValueError(f"est_seconds must be a finite number > 0, got {est_seconds}")
    if not (tau_s > 0):
        raise ValueError(f"tau_s must be > 0, got {tau_s}")
    return math.log(fee_wei) - math.log(est_seconds) - enqueued_at_s / tau_s


def current_priority(fee_wei: int, est_seconds: float, age_s: float, tau_s: float) -> float:
    """The aged priority `log(V) + age / tau` at a given wait (for display; orders like the static key)."""
    return static_priority(fee_wei, est_seconds, 0.0, tau_s) + max(0.0, age_s) / tau_s


# ---------------------------------------------------------------------------------------------
# Priced queue


class QueueFullError(ResourceExhausted):
    """The queue holds `capacity` tasks; the task is refused and no fee is taken."""


@dataclasses.dataclass(frozen=True)
class QueueEntry(Generic[T]):
    """One queued task: `key` from `static_priority`, `seq` the enqueue sequence (tie-break)."""

    task_id: str
    key: float
    seq: int
    value: T | None = None


class PricedQueue(Generic[T]):
    """A bounded max-priority queue of tasks keyed by `static_priority`.

    Highest key first; equal keys in enqueue order (`seq`). push, pop and remove are O(log n)
    amortized (removal is lazy; the heap is compacted when half of it is dead). Iteration and
    `pop_first` walk the heap in order without popping: O(k log k) for the k entries looked at.
    Persist `task_id, key, seq` of each entry and push them back (any order) to rebuild the
    same order after a restart.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._heap: list[tuple[float, int, str]] = []
        self._live: dict[str, QueueEntry[T]] = {}
        self._next_seq = 0
        self._version = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def next_seq(self) -> int:
        """The sequence number the next push without `seq` gets."""
        return self._next_seq

    def is_full(self) -> bool:
        return len(self._live) >= self._capacity

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._live

    def get(self, task_id: str) -> QueueEntry[T] | None:
        return self._live.get(task_id)

    def push(
        self, task_id: str, key: float, value: T | None = None, *, seq: int | None = None
    ) -> QueueEntry[T]:
        """Adds a task. Raises QueueFullError when full, ValueError for a duplicate id or a NaN key."""
        if task_id in self._live:
            raise ValueError(f"task {task_id} is already queued")
        if math.isnan(key):
            raise ValueError(f"key of task {task_id} must be a number, got {key}")
        if len(self._live) >= self._capacity:
            raise QueueFullError(f"the task queue is full ({self._capacity} tasks); try again later")
        if seq is None:
            seq = self._next_seq
        self._next_seq = max(self._next_seq, seq + 1)
        entry = QueueEntry(task_id=task_id, key=float(key), seq=seq, value=value)
        self._live[task_id] = entry
        heapq.heappush(self._heap, (-entry.key, seq, task_id))
        self._version += 1
        return entry

    def _alive(self, item: tuple[float, int, str]) -> bool:
        entry = self._live.get(item[2])
        return entry is not None and entry.seq == item[1]

    def _drop_dead_top(self) -> None:
        while self._heap and not self._alive(self._heap[0]):
            heapq.heappop(self._heap)

    def peek(self) -> QueueEntry[T] | None:
        """The highest-key entry, or None when empty."""
        self._drop_dead_top()
        return self._live[self._heap[0][2]] if self._heap else None

    def pop(self) -> QueueEntry[T]:
        """Removes and returns the highest-key entry; IndexError when empty."""
        self._drop_dead_top()
        if not self._heap:
            raise IndexError("pop from an empty PricedQueue")
        _, _, task_id = heapq.heappop(self._heap)
        self._version += 1
        return self._live.pop(task_id)

    def remove(self, task_id: str) -> QueueEntry[T] | None:
        """Removes a task by id (cancel, abort); returns its entry or None when it is not queued."""
        entry = self._live.pop(task_id, None)
        if entry is None:
            return None
        self._version += 1
        dead = len(self._heap) - len(self._live)
        if dead > 64 and dead > len(self._live):
            self._heap = [item for item in self._heap if self._alive(item)]
            heapq.heapify(self._heap)
        return entry

    def __iter__(self) -> Iterator[QueueEntry[T]]:
        """Entries from the highest key down. The queue must not change during the iteration."""
        heap = self._heap
        if not heap:
            return
        version = self._version
        frontier: list[tuple[tuple[float, int, str], int]] = [(heap[0], 0)]
        while frontier:
            item, i = heapq.heappop(frontier)
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
            if self._alive(item):
                yield self._live[item[2]]
                if self._version != version:
                    raise RuntimeError("PricedQueue changed during iteration")

    def pop_first(
        self, predicate: Callable[[QueueEntry[T]], bool], *, limit: int | None = None
    ) -> QueueEntry[T] | None:
        """Removes and returns the highest-key entry for which `predicate` is true (the best task a
        free group can run), looking at no more than `limit` entries; None when there is none."""
        found: QueueEntry[T] | None = None
        for looked, entry in enumerate(self):
            if limit is not None and looked >= limit:
                break
            if predicate(entry):
                found = entry
                break
        if found is not None:
            self.remove(found.task_id)
        return found

    def entries(self) -> list[QueueEntry[T]]:
        """Every entry, highest key first (a snapshot)."""
        return list(self)


# ---------------------------------------------------------------------------------------------
# Execution-time estimator

_PARAMS_RE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)\s*([bm])(?![a-z])", re.IGNORECASE)
_MOE_RE = re.compile(r"(?<![a-z0-9.])(\d+)x(\d+(?:\.\d+)?)([bm])(?![a-z])", re.IGNORECASE)


def parse_params_billions(model: str) -> float | None:
    """The parameter count in billions named in a model id: "Qwen2.5-0.5B-Instruct" -> 0.5,
    "Llama-2-7b-hf" -> 7, "opt-125m" -> 0.125, "Mixtral-8x7B" -> 56; None when there is none."""
    name = model.rsplit("/", 1)[-1]
    moe = _MOE_RE.search(name)
    if moe:
        n, size, unit = int(moe.group(1)), float(moe.group(2)), moe.group(3).lower()
        return n * size * (1.0 if unit == "b" else 1e-3)
    best: float | None = None
    for m in _PARAMS_RE.finditer(name):
        value = float(m.group(1)) * (1.0 if m.group(2).lower() == "b" else 1e-3)
        if value > 0 and (best is None or value > best):
            best = value
    return best


def approx_tokens(text: str) -> int:
    """A tokenizer-free prompt-length estimate: about 4 characters per token."""
    return (len(text) + 3) // 4


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Solves a small symmetric positive-definite system by Gaussian elimination with pivoting."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        p = m[col][col]
        if p == 0:
            continue
        for r in range(col + 1, n):
            f = m[r][col] / p
            if f:
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        p = m[r][r]
        s = m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))
        x[r] = s / p if p else 0.0
    return x


@dataclasses.dataclass
class _Stats:
    """Exponentially forgotten sufficient statistics of a least-squares fit in scaled features."""

    xtx: list[list[float]]
    xty: list[float]
    count: int = 0

    @classmethod
    def empty(cls, d: int) -> _Stats:
        return cls([[0.0] * d for _ in range(d)], [0.0] * d)

    def add(self, x: list[float], y: float, forgetting: float) -> None:
        d = len(x)
        for i in range(d):
            self.xty[i] = forgetting * self.xty[i] + x[i] * y
            for j in range(d):
                self.xtx[i][j] = forgetting * self.xtx[i][j] + x[i] * x[j]
        self.count += 1

    def fit(self, prior: list[float], weight: float) -> list[float]:
        """Ridge solution toward `prior`, (w I + XtX) theta = w prior + Xty, with no coefficient
        below 0: a negative one is fixed at 0 and the others are solved again (active set)."""
        d = len(prior)
        w = [weight * _INTERCEPT_STIFFNESS] + [weight] * (d - 1)
        a = [[self.xtx[i][j] + (w[i] if i == j else 0.0) for j in range(d)] for i in range(d)]
        b = [self.xty[i] + w[i] * prior[i] for i in range(d)]
        free = list(range(d))
        theta = [0.0] * d
        while free:
            sub = _solve([[a[i][j] for j in free] for i in free], [b[i] for i in free])
            worst = min(range(len(free)), key=lambda k: sub[k])
            if sub[worst] >= 0:
                for k, i in enumerate(free):
                    theta[i] = sub[k]
                break
            free.pop(worst)
        return theta


class TimeEstimator:
    """Learns the execution time T of a task per (kind, model, card) from finished tasks.

    `card` is a string key (`CardSpec.key`) or None for "any card" (before the group is picked).
    Not thread-safe; the coordinator calls it from its event loop.
    """

    def __init__(self, settings: ProtocolSettings | None = None) -> None:
        self._settings = settings or ProtocolSettings()
        self._stats: dict[tuple[str, str, str | None], _Stats] = {}
        self._gen_fraction: dict[str, float] = {}
        # (kind, model, card) -> (the sample counts behind the fit, its coefficients)
        self._fits: dict[tuple[str, str, str | None], tuple[tuple[int, int], list[float]]] = {}

    # -- the fallback formula, in scaled coefficients ------------------------------------------

    def _fallback(self, kind: str, model: str) -> list[float]:
        s = self._settings
        if kind == TaskKind.GPT:
            p = parse_params_billions(model) or s.fallback_model_params_b
            raw = (
                s.fallback_gpt_overhead_s,
                s.fallback_gpt_prefill_s_per_token_per_b * p,
                s.fallback_gpt_decode_s_per_token_per_b * p,
            )
            return [c * k for c, k in zip(raw, _GPT_SCALE, strict=True)]
        if kind == TaskKind.SD:
            raw = (s.fallback_sd_overhead_s, s.fallback_sd_s_per_image_step)
            return [c * k for c, k in zip(raw, _SD_SCALE, strict=True)]
        raise ValueError(f"kind must be one of {[k.value for k in TaskKind]}, got {kind!r}")

    def _coefficients(self, kind: str, model: str, card: str | None) -> list[float]:
        """The fitted coefficients, refitted once a tenth of the data behind the last fit is new (every
        estimate would otherwise solve the ridge system again: one per task created)."""
        counts = tuple(st.count if st is not None else -1
                       for st in (self._stats.get((kind, model, None)), self._stats.get((kind, model, card))))  # fmt: skip
        cached = self._fits.get((kind, model, card))
        if cached is not None and all(0 <= n - old < max(1, old // 10) or n == old == -1
                                      for n, old in zip(counts, cached[0], strict=True)):  # fmt: skip
            return cached[1]
        theta = self._fit(kind, model, card)
        self._fits[(kind, model, card)] = (counts, theta)
        return theta

    def _fit(self, kind: str, model: str, card: str | None) -> list[float]:
        w = self._settings.estimator_prior_weight
        theta = self._fallback(kind, model)
        model_stats = self._stats.get((kind, model, None))
        if model_stats is not None:
            theta = model_stats.fit(theta, w)
        if card is not None:
            card_stats = self._stats.get((kind, model, card))
            if card_stats is not None:
                theta = card_stats.fit(theta, w)
        return theta

    def _features(
        self,
        kind: str,
        *,
        prompt_tokens: int,
        gen_tokens: float,
        images: int | None,
        steps: int | None,
        pixels: int | None,
    ) -> list[float]:
        s = self._settings
        if kind == TaskKind.GPT:
            return [1.0, max(0, prompt_tokens) / _GPT_SCALE[1], max(0.0, gen_tokens) / _GPT_SCALE[2]]
        images = s.sd_default_num_images if images is None else images
        steps = s.sd_default_steps if steps is None else steps
        pixels = s.sd_default_pixels if pixels is None else pixels
        work = max(0, images) * max(0, steps) * (max(0, pixels) / _SD_BASE_PIXELS)
        return [1.0, work / _SD_SCALE[1]]

    # -- public ---------------------------------------------------------------------------------

    def estimate(
        self,
        kind: str,
        model: str,
        card: str | None = None,
        *,
        prompt_tokens: int = 0,
        max_new_tokens: int | None = None,
        images: int | None = None,
        steps: int | None = None,
        pixels: int | None = None,
    ) -> float:
        """Estimated execution seconds. GPT uses `max_new_tokens` times the learned fraction of
        it that the model really generates; SD uses images x steps x (pixels / 512^2)."""
        theta = self._coefficients(kind, model, card)
        gen = 0.0
        if kind == TaskKind.GPT:
            max_new = self._settings.gpt_default_max_new_tokens if max_new_tokens is None else max_new_tokens
            gen = max_new * self._gen_fraction.get(model, 1.0)
        x = self._features(
            kind, prompt_tokens=prompt_tokens, gen_tokens=gen, images=images, steps=steps, pixels=pixels
        )
        seconds = sum(t * v for t, v in zip(theta, x, strict=True))
        return max(self._settings.estimator_min_seconds, seconds)

    def observe(
        self,
        kind: str,
        model: str,
        card: str | None,
        seconds: float,
        *,
        prompt_tokens: int = 0,
        generated_tokens: int = 0,
        max_new_tokens: int | None = None,
        images: int | None = None,
        steps: int | None = None,
        pixels: int | None = None,
    ) -> None:
        """Learns from one finished task that took `seconds` on `card` (None: card unknown)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds}")
        self._fallback(kind, model)  # validates kind
        s = self._settings
        x = self._features(
            kind,
            prompt_tokens=prompt_tokens,
            gen_tokens=generated_tokens,
            images=images,
            steps=steps,
            pixels=pixels,
        )
        d = len(x)
        keys: list[tuple[str, str, str | None]] = [(str(kind), model, None)]
        if card is not None:
            keys.append((str(kind), model, card))
        for key in keys:
            self._stats.setdefault(key, _Stats.empty(d)).add(x, seconds, s.estimator_forgetting)
        if kind == TaskKind.GPT and max_new_tokens:
            frac = min(1.0, max(0.0, generated_tokens / max_new_tokens))
            old = self._gen_fraction.get(model, 1.0)
            a = s.estimator_gen_fraction_alpha
            self._gen_fraction[model] = (1 - a) * old + a * frac

    def samples(self, kind: str, model: str, card: str | None = None) -> int:
        """How many finished tasks were learned for (kind, model, card); card None: on any card."""
        stats = self._stats.get((str(kind), model, card))
        return stats.count if stats else 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able snapshot of everything learned."""
        return {
            "version": 1,
            "stats": [
                {"kind": k, "model": m, "card": c, "xtx": st.xtx, "xty": st.xty, "count": st.count}
                for (k, m, c), st in sorted(
                    self._stats.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
                )
            ],
            "gen_fraction": dict(sorted(self._gen_fraction.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], settings: ProtocolSettings | None = None) -> TimeEstimator:
        if data.get("version") != 1:
            raise ValueError(f"estimator state version must be 1, got {data.get('version')!r}")
        est = cls(settings)
        for row in data.get("stats", []):
            kind = TaskKind(row["kind"]).value
            d = len(_GPT_SCALE) if kind == TaskKind.GPT else len(_SD_SCALE)
            xtx = [[float(v) for v in r] for r in row["xtx"]]
            xty = [float(v) for v in row["xty"]]
            if len(xty) != d or len(xtx) != d or any(len(r) != d for r in xtx):
                raise ValueError(f"estimator stats of {row['model']!r} must be {d}-dimensional")
            est._stats[(kind, row["model"], row["card"])] = _Stats(xtx, xty, int(row["count"]))
        est._gen_fraction = {str(m): float(v) for m, v in data.get("gen_fraction", {}).items()}
        return est
