"""QoS: submission-speed scores, the fee split among matching nodes, and each node's long-run QoS.

Scores. The 1st, 2nd and 3rd result of a task score 10, 9 and 6; no result scores 0
(`ProtocolSettings.order_scores`). Orders are 1-based.

Fee split. The matching nodes share the fee in proportion to their scores, in integer wei, as
the TaskLedger contract computes it: each gets `fee * score // sum(scores)`, and the remainder of
the divisions goes to the node with the lowest order. 10/9/6 of 25 gives 40/36/24%, and the
parts always sum to the fee.

Long-run QoS. `qos(now) = mean(window) / 10 * H(now)`. The window holds the last 50 scores; while
it is not full, the missing scores count as `qos_initial * 10` (5.0), so a new node starts at
QoS 0.5 and moves toward its record gradually. H is the reliability factor: x0.3 on each timeout,
+0.15 on each success (capped at 1), and between events it recovers toward 1 as
`H(t) = 1 - (1 - H0) * exp(-(t - t0) / tau)` with tau = 30 min. A node is excluded from draws
while H < 0.1, and kicked out (stake returned) when its window is full and its mean is below 2.0.

Pure: `NodeQos` is immutable, every method takes an explicit `now` (seconds, any fixed epoch),
and the record methods return a new state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from coordinator.service.settings import ProtocolSettings

__all__ = ["NodeQos", "fee_split", "fee_split_by_scores", "score_for_order"]


def score_for_order(order: int | None, settings: ProtocolSettings | None = None) -> int:
    """The submission-speed score of the `order`-th result (1-based); None, 0 or too late: 0."""
    scores = (settings or _DEFAULTS).order_scores
    if order is None or order < 1 or order > len(scores):
        return 0
    return scores[order - 1]


def fee_split_by_scores(fee_wei: int, scores: Sequence[int]) -> list[int]:
    """Splits `fee_wei` in proportion to `scores` (integer division); the remainder goes to the
    first entry. Callers pass scores in submission order, so the first is the lowest order."""
    if fee_wei < 0:
        raise ValueError(f"fee must be >= 0, got {fee_wei}")
    if not scores:
        raise ValueError("scores must not be empty")
    if any(s < 0 for s in scores):
        raise ValueError(f"scores must be >= 0, got {list(scores)}")
    total = sum(scores)
    if total <= 0:
        raise ValueError(f"scores must have a positive sum, got {list(scores)}")
    parts = [fee_wei * s // total for s in scores]
    parts[0] += fee_wei - sum(parts)
    return parts


def fee_split(fee_wei: int, orders: Sequence[int], settings: ProtocolSettings | None = None) -> list[int]:
    """The payouts of the matching nodes whose results came `orders` (1-based, distinct), returned
    in the order given; the rounding remainder goes to the node with the lowest order."""
    if len(set(orders)) != len(orders):
        raise ValueError(f"orders must be distinct, got {list(orders)}")
    ranked = sorted(range(len(orders)), key=lambda i: orders[i])
    parts = fee_split_by_scores(fee_wei, [score_for_order(orders[i], settings) for i in ranked])
    out = [0] * len(orders)
    for part, i in zip(parts, ranked, strict=True):
        out[i] = part
    return out


@dataclasses.dataclass(frozen=True)
class NodeQos:
    """One node's QoS record.

    scores: the last `qos_window` scores, oldest first.
    h_base, h_at_s: H was `h_base` at time `h_at_s`; it has recovered toward 1 since.
    """

    scores: tuple[int, ...] = ()
    h_base: float = 1.0
    h_at_s: float = 0.0
    settings: ProtocolSettings = dataclasses.field(default=None, compare=False, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.settings is None:
            object.__setattr__(self, "settings", _DEFAULTS)
        if not 0.0 <= self.h_base <= 1.0:
            raise ValueError(f"h_base must be in [0, 1], got {self.h_base}")
        if len(self.scores) > self.settings.qos_window:
            object.__setattr__(self, "scores", tuple(self.scores[-self.settings.qos_window :]))

    @classmethod
    def new(cls, now: float, settings: ProtocolSettings | None = None) -> NodeQos:
        """A node that has just joined: empty window, H = 1 (QoS 0.5 with the defaults)."""
        return cls((), 1.0, now, settings or _DEFAULTS)

    # -- reading ------------------------------------------------------------------------------

    def h(self, now: float) -> float:
        """The reliability factor at `now`, recovered toward 1 since the last event."""
        dt = max(0.0, now - self.h_at_s)
        tau = self.settings.h_recovery_tau.total_seconds()
        return 1.0 - (1.0 - self.h_base) * math.exp(-dt / tau)

    def window_full(self) -> bool:
        return len(self.scores) >= self.settings.qos_window

    def mean_score(self) -> float:
        """The mean of the window, with the missing scores of a young node at qos_initial * 10."""
        s = self.settings
        missing = s.qos_window - len(self.scores)
        prior = s.qos_initial * s.max_score
        return (sum(self.scores) + missing * prior) / s.qos_window

    def qos(self, now: float) -> float:
        """QoS in [0, 1]: mean score / max score * H(now)."""
        return self.mean_score() / self.settings.max_score * self.h(now)

    def excluded(self, now: float) -> bool:
        """True while H < h_exclude_below: the node gets no tasks."""
        return self.h(now) < self.settings.h_exclude_below

    def excluded_until(self, now: float) -> float:
        """When H recovers to the exclusion threshold (`now` when it is not excluded)."""
        s = self.settings
        if not self.excluded(now):
            return now
        tau = s.h_recovery_tau.total_seconds()
        # 1 - (1 - h0) e^(-dt/tau) = thr  ->  dt = tau * ln((1 - h0) / (1 - thr))
        return self.h_at_s + tau * math.log((1.0 - self.h_base) / (1.0 - s.h_exclude_below))

    def should_kick(self) -> bool:
        """True when the window is full and its mean is below kick_mean_below."""
        return self.window_full() and self.mean_score() < self.settings.kick_mean_below

    def verdict(self, now: float) -> str:
        """ "kick" (leaves the network, stake returned), "excluded" (no tasks now) or "ok"."""
        if self.should_kick():
            return "kick"
        return "excluded" if self.excluded(now) else "ok"

    # -- recording ----------------------------------------------------------------------------

    def _push(self, score: int) -> tuple[int, ...]:
        return (*self.scores, score)[-self.settings.qos_window :]

    def record_success(self, order: int, now: float) -> NodeQos:
        """A matching result submitted `order`-th: its score enters the window and H gains 0.15."""
        h = min(1.0, self.h(now) + self.settings.h_success_gain)
        return dataclasses.replace(
            self, scores=self._push(score_for_order(order, self.settings)), h_base=h, h_at_s=now
        )

    def record_timeout(self, now: float) -> NodeQos:
        """No result in time (a lapsed lease, out of memory, a crash): score 0, H x 0.3."""
        h = self.h(now) * self.settings.h_timeout_factor
        return dataclasses.replace(self, scores=self._push(0), h_base=h, h_at_s=now)

    def record_miss(self, now: float) -> NodeQos:
        """A result that earned nothing but is no timeout (for example a task aborted because all
        results differ): score 0, H unchanged."""
        h = self.h(now)
        return dataclasses.replace(self, scores=self._push(0), h_base=h, h_at_s=now)

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"scores": list(self.scores), "h_base": self.h_base, "h_at_s": self.h_at_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any], settings: ProtocolSettings | None = None) -> NodeQos:
        return cls(
            scores=tuple(int(s) for s in data.get("scores", ())),
            h_base=float(data.get("h_base", 1.0)),
            h_at_s=float(data.get("h_at_s", 0.0)),
            settings=settings or _DEFAULTS,
        )


_DEFAULTS = ProtocolSettings()
