"""Settings of the network protocol (pricing, QoS, node selection), and the task-kind vocabulary
the three protocol modules share.

Every number docs/DESIGN.md gives under Pricing and order, Node selection, and QoS and the node
lifecycle is a field here with that number as its default. The dataclass is flat and uses only the types
`helium.config.load_settings` converts (int, float, str, timedelta, tuple), so the coordinator can
load it alone (`load_settings(ProtocolSettings, section="protocol")`) or copy its fields.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from enum import StrEnum

__all__ = ["ProtocolSettings", "TaskKind"]

GIB = 1 << 30


class TaskKind(StrEnum):
    """The two task types. Values equal the lower-case names, so plain strings compare equal."""

    GPT = "gpt"
    SD = "sd"


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    # --- Pricing and the queue -------------------------------------------------------------
    # Aging time constant: a task's priority log(V) grows by 1 every `aging_tau` it waits, so a
    # task worth 10x less than a newcomer is served first after tau * ln(10) of waiting.
    aging_tau: timedelta = timedelta(seconds=60)
    # Bounded queue: a task that cannot enter is refused with RESOURCE_EXHAUSTED.
    queue_capacity: int = 10_000

    # --- Execution-time estimator (T in V = fee / T) -------------------------------------------
    # Pseudo-observations the fallback formula counts for in the online least squares; more
    # makes the estimate trust the formula longer.
    estimator_prior_weight: float = 0.5
    # Per-sample forgetting factor of the learned statistics (memory of about 1 / (1 - f) tasks).
    estimator_forgetting: float = 0.98
    # EWMA weight of the generated / max_new_tokens fraction learned per model.
    estimator_gen_fraction_alpha: float = 0.1
    # No estimate is ever below this.
    estimator_min_seconds: float = 0.05
    # Fallback when nothing is learned: GPT seconds =
    #   overhead + prompt_tokens * prefill_rate * P + max_new_tokens * decode_rate * P
    # with P the parameter count in billions parsed from the model name ("7B", "0.5B", "125M").
    fallback_model_params_b: float = 1.0
    fallback_gpt_overhead_s: float = 0.5
    fallback_gpt_decode_s_per_token_per_b: float = 0.005
    fallback_gpt_prefill_s_per_token_per_b: float = 0.00025
    # SD seconds = overhead + rate * num_images * steps * (width * height / 512^2).
    fallback_sd_overhead_s: float = 1.0
    fallback_sd_s_per_image_step: float = 0.05
    # SD defaults (sd.proto): 512x512, 25 steps, 6 images.
    sd_default_steps: int = 25
    sd_default_num_images: int = 6
    sd_default_pixels: int = 512 * 512
    # GPT default (gpt.proto).
    gpt_default_max_new_tokens: int = 256

    # --- QoS ---------------------------------------------------------------------------------
    # Submission-speed scores by order: 1st, 2nd, 3rd; none (or later) scores 0.
    order_scores: tuple[int, ...] = (10, 9, 6)
    # Long-run QoS = (mean of the last `qos_window` scores / max score) * H.
    qos_window: int = 50
    # A new node's QoS (H = 1): its missing scores count as qos_initial * 10 each.
    qos_initial: float = 0.5
    # Reliability H: x0.3 on each timeout, +0.15 on each success (capped at 1), passive recovery
    # toward 1 with this time constant.
    h_timeout_factor: float = 0.3
    h_success_gain: float = 0.15
    h_recovery_tau: timedelta = timedelta(minutes=30)
    # A node with H below this gets no tasks.
    h_exclude_below: float = 0.1
    # A node whose window is full and whose mean score is below this is kicked out (stake returned).
    kick_mean_below: float = 2.0

    # --- Node selection ----------------------------------------------------------------------
    group_size: int = 3
    # Model locality M in W = M * QoS.
    locality_loaded: float = 2.0
    locality_cached: float = 1.5
    locality_none: float = 1.0
    # Weights never go below this, so eligible nodes of QoS 0 can still complete a group.
    min_weight: float = 1e-6
    # Workers must run this version or newer, with the same major version.
    min_worker_version: str = "0.1.0"
    # The VRAM an SD task needs by default (any card with at least this much).
    sd_min_vram_bytes: int = 4 * GIB

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        check(self.aging_tau.total_seconds() > 0, f"aging_tau must be > 0, got {self.aging_tau}")
        check(self.queue_capacity >= 1, f"queue_capacity must be >= 1, got {self.queue_capacity}")
        check(
            self.estimator_prior_weight > 0,
            f"estimator_prior_weight must be > 0, got {self.estimator_prior_weight}",
        )
        check(
            0 < self.estimator_forgetting <= 1,
            f"estimator_forgetting must be in (0, 1], got {self.estimator_forgetting}",
        )
        check(
            0 < self.estimator_gen_fraction_alpha <= 1,
            f"estimator_gen_fraction_alpha must be in (0, 1], got {self.estimator_gen_fraction_alpha}",
        )
        check(len(self.order_scores) >= 1, "order_scores must not be empty")
        check(all(s >= 0 for s in self.order_scores), f"order_scores must be >= 0, got {self.order_scores}")
        check(max(self.order_scores) > 0, f"order_scores needs a positive score, got {self.order_scores}")
        check(self.qos_window >= 1, f"qos_window must be >= 1, got {self.qos_window}")
        check(0 <= self.qos_initial <= 1, f"qos_initial must be in [0, 1], got {self.qos_initial}")
        check(
            0 <= self.h_timeout_factor < 1, f"h_timeout_factor must be in [0, 1), got {self.h_timeout_factor}"
        )
        check(self.h_success_gain >= 0, f"h_success_gain must be >= 0, got {self.h_success_gain}")
        check(
            self.h_recovery_tau.total_seconds() > 0, f"h_recovery_tau must be > 0, got {self.h_recovery_tau}"
        )
        check(self.group_size >= 1, f"group_size must be >= 1, got {self.group_size}")
        check(self.min_weight > 0, f"min_weight must be > 0, got {self.min_weight}")

    @property
    def max_score(self) -> int:
        return max(self.order_scores)
