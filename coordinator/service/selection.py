"""Node selection: which nodes may run a task, and a weighted random draw of its group.

Candidates. A node can run a task when it supports the task type, runs a compatible worker
version (at least `min_worker_version`, same major), has at least the task's minimum VRAM, and
supports the dtype and quantization asked for ("auto" or no quantization: any). GPT groups also
need one identical card (GPU name and VRAM) for the whole group, so that the three results can be
equal to the bit; SD groups may mix cards. To be drawn now, a node must also be available and not
excluded (H < 0.1).

Draw. The weight of a node is `W = M * QoS`, with the model locality M = 2 when the model is
loaded, 1.5 when it is cached on disk, and 1 otherwise (floored at `min_weight`, so that nodes of
QoS 0 can still complete a group). The group is drawn without replacement, each pick proportional
to W, from a `random.Random` the caller passes (seeded in tests). For GPT a card is first drawn
among the cards with enough eligible nodes, weighted by the sum of their weights. A lapsed node is
replaced by one more draw of the same card, excluding the nodes the task has already used.

Plain Python: the inputs are `NodeCandidate` (or anything with its attributes, see
`SelectableNode`) and `TaskRequirements`; a card is anything with `name` and `vram_bytes` that
is hashable and compares by value (`CardSpec`, or the domain's `Card`). `TaskRequirements` is
hashable, so a dispatcher can memoize `can_run_now` per requirements within one pass over the
queue. The draws return the very node objects passed in.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, TypeVar

from coordinator.service.settings import ProtocolSettings, TaskKind

__all__ = [
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

_DEFAULTS = ProtocolSettings()
_ANY_DTYPES = ("", "auto")


@dataclasses.dataclass(frozen=True)
class CardSpec:
    """A node's accelerator: GPU model name as the driver reports it, and total VRAM."""

    name: str
    vram_bytes: int

    @property
    def key(self) -> str:
        """A stable string for maps and the time estimator: "<name>|<vram_bytes>"."""
        return f"{self.name}|{self.vram_bytes}"


class CardLike(Protocol):
    """A card: hashable, equal by value."""

    @property
    def name(self) -> str: ...
    @property
    def vram_bytes(self) -> int: ...
    def __hash__(self) -> int: ...


class SelectableNode(Protocol):
    """What selection reads of a node (NodeCandidate implements it; an adapter may too).

    dtypes: the dtypes the node runs; empty means it did not say, and is taken as any.
    quantize_bits: the quantizations it runs; empty means none.
    """

    @property
    def address(self) -> str: ...
    @property
    def card(self) -> CardLike: ...
    @property
    def worker_version(self) -> str: ...
    @property
    def task_kinds(self) -> Collection[str]: ...
    @property
    def dtypes(self) -> Collection[str]: ...
    @property
    def quantize_bits(self) -> Collection[int]: ...
    @property
    def loaded_models(self) -> Collection[str]: ...
    @property
    def cached_models(self) -> Collection[str]: ...
    @property
    def qos(self) -> float: ...
    @property
    def available(self) -> bool: ...
    @property
    def excluded(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class NodeCandidate:
    """A node as selection sees it at one instant.

    qos: `NodeQos.qos(now)`; excluded: `NodeQos.excluded(now)`; available: state AVAILABLE (and
    connected) now.
    """

    address: str
    card: CardLike
    worker_version: str
    task_kinds: frozenset[str] = frozenset({TaskKind.GPT, TaskKind.SD})
    dtypes: frozenset[str] = frozenset({"float32"})
    quantize_bits: frozenset[int] = frozenset()
    loaded_models: frozenset[str] = frozenset()
    cached_models: frozenset[str] = frozenset()
    qos: float = 0.5
    available: bool = True
    excluded: bool = False


@dataclasses.dataclass(frozen=True)
class TaskRequirements:
    """What a task needs of each node of its group.

    kind: TaskKind ("gpt"/"sd"; any equal string enum, such as the domain's TaskType, is accepted).
    model: the GPT model, or the SD base model (for model locality).
    dtype: "auto" or "" means any. quantize_bits: None or 0 means no quantization.
    min_vram_bytes: a node's card must have at least this much (SD: `for_sd` fills the default).
    card: GPT only: the card the task's group already has (fixed at its first dispatch), so that
        later draws (replacements) stay on it; None before the first dispatch.
    """

    kind: TaskKind
    model: str
    dtype: str = "auto"
    quantize_bits: int | None = None
    min_vram_bytes: int = 0
    card: CardLike | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TaskKind(str(self.kind)))
        object.__setattr__(self, "dtype", self.dtype or "auto")
        object.__setattr__(self, "quantize_bits", self.quantize_bits or None)
        if self.kind != TaskKind.GPT:
            object.__setattr__(self, "card", None)

    @classmethod
    def for_gpt(
        cls, model: str, dtype: str = "auto", quantize_bits: int | None = None, card: CardLike | None = None
    ) -> TaskRequirements:
        return cls(TaskKind.GPT, model, dtype, quantize_bits, 0, card)

    @classmethod
    def for_sd(
        cls,
        model: str,
        dtype: str = "auto",
        min_vram_bytes: int | None = None,
        settings: ProtocolSettings | None = None,
    ) -> TaskRequirements:
        vram = (settings or _DEFAULTS).sd_min_vram_bytes if min_vram_bytes is None else min_vram_bytes
        return cls(TaskKind.SD, model, dtype, None, vram)


# ---------------------------------------------------------------------------------------------
# Filters

_VERSION_RE = re.compile(r"^\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?")


@functools.lru_cache(maxsize=1024)
def parse_version(version: str) -> tuple[int, int, int] | None:
    """(major, minor, patch) of "1.2.3", "1.2", "v1.2.3rc1", "0.1.0+g1234"; None when unparseable."""
    m = _VERSION_RE.match(version or "")
    if not m:
        return None
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


@functools.lru_cache(maxsize=1024)
def version_compatible(version: str, minimum: str) -> bool:
    """True when `version` has the major version of `minimum` and is not older than it."""
    v, lo = parse_version(version), parse_version(minimum)
    if v is None or lo is None:
        return False
    return v[0] == lo[0] and v >= lo


def _static_checks(req: TaskRequirements, settings: ProtocolSettings):
    """The node filters that do not change while a node is registered, each with the reason a
    task is refused when it removes the last possible group."""
    yield (
        lambda n: req.kind in n.task_kinds,
        f"no node runs {req.kind.value.upper()} tasks",
    )
    yield (
        lambda n: version_compatible(n.worker_version, settings.min_worker_version),
        f"no node runs a worker version compatible with {settings.min_worker_version}",
    )
    if req.min_vram_bytes > 0:
        yield (
            lambda n: n.card.vram_bytes >= req.min_vram_bytes,
            f"no card has at least {req.min_vram_bytes} bytes of VRAM",
        )
    if req.card is not None:
        card = req.card
        yield (lambda n: n.card == card, f"no node has the task's card {card.name} ({card.vram_bytes} bytes)")
    if req.dtype not in _ANY_DTYPES:
        yield (lambda n: not n.dtypes or req.dtype in n.dtypes, f"no node supports dtype {req.dtype}")
    if req.quantize_bits:
        yield (
            lambda n: req.quantize_bits in n.quantize_bits,
            f"no node supports quantize_bits {req.quantize_bits}",
        )


@functools.lru_cache(maxsize=1024)  # a draw per task: the same few requirement shapes over and over
def _checks_of(req: TaskRequirements, settings: ProtocolSettings) -> tuple:
    return tuple(check for check, _ in _static_checks(req, settings))


def eligible(
    req: TaskRequirements,
    nodes: Iterable[SelectableNode],
    settings: ProtocolSettings | None = None,
    *,
    exclude: Collection[str] = (),
) -> list[SelectableNode]:
    """The nodes that could be drawn for the task now: available, not excluded, not in `exclude`
    (addresses), and passing every static filter. Card equality (GPT) is left to the draw."""
    checks = _checks_of(req, settings or _DEFAULTS)
    return [
        n
        for n in nodes
        if n.available and not n.excluded and n.address not in exclude and all(c(n) for c in checks)
    ]


def model_locality(node: SelectableNode, model: str, settings: ProtocolSettings | None = None) -> float:
    """M: 2 when the model is loaded, 1.5 when it is cached on disk, 1 otherwise (the defaults)."""
    s = settings or _DEFAULTS
    if model in node.loaded_models:
        return s.locality_loaded
    if model in node.cached_models:
        return s.locality_cached
    return s.locality_none


def node_weight(node: SelectableNode, model: str, settings: ProtocolSettings | None = None) -> float:
    """W = M * QoS, floored at min_weight."""
    s = settings or _DEFAULTS
    return max(s.min_weight, model_locality(node, model, s) * max(0.0, node.qos))


# ---------------------------------------------------------------------------------------------
# Draws

N = TypeVar("N", bound=SelectableNode)
X = TypeVar("X")


def _weighted_sample(items: Sequence[X], weights: Sequence[float], k: int, rng: random.Random) -> list[X]:
    """k items without replacement, each successive pick proportional to the remaining weights."""
    pool = list(zip(items, weights, strict=True))
    out: list[X] = []
    for _ in range(k):
        total = sum(w for _, w in pool)
        r = rng.random() * total
        acc = 0.0
        idx = len(pool) - 1
        for i, (_, w) in enumerate(pool):
            acc += w
            if r < acc:
                idx = i
                break
        out.append(pool.pop(idx)[0])
    return out


def _by_card(nodes: Iterable[N]) -> dict[CardLike, list[N]]:
    groups: dict[CardLike, list[N]] = {}
    for n in nodes:
        groups.setdefault(n.card, []).append(n)
    return groups


def draw_group(
    req: TaskRequirements,
    nodes: Iterable[N],
    rng: random.Random,
    settings: ProtocolSettings | None = None,
    *,
    exclude: Collection[str] = (),
    count: int | None = None,
) -> list[N] | None:
    """`count` (default `group_size`) distinct nodes for the task, none of them in `exclude`, or
    None when they cannot be found now. GPT: one card (`req.card` when set), drawn by its total
    weight among the cards with enough eligible nodes."""
    s = settings or _DEFAULTS
    k = s.group_size if count is None else count
    if k < 1:
        raise ValueError(f"count must be >= 1, got {k}")
    pool = eligible(req, nodes, s, exclude=exclude)
    if req.kind == TaskKind.GPT:
        cards = [(card, group) for card, group in _by_card(pool).items() if len(group) >= k]
        if not cards:
            return None
        cards.sort(key=lambda cg: (cg[0].name, cg[0].vram_bytes))  # reproducible with a seeded rng
        weighted = [[node_weight(n, req.model, s) for n in group] for _, group in cards]
        (i,) = _weighted_sample(range(len(cards)), [sum(w) for w in weighted], 1, rng)
        return _weighted_sample(cards[i][1], weighted[i], k, rng)
    if len(pool) < k:
        return None
    return _weighted_sample(pool, [node_weight(n, req.model, s) for n in pool], k, rng)


def draw_replacement(
    req: TaskRequirements,
    nodes: Iterable[N],
    rng: random.Random,
    card: CardLike,
    used: Collection[str],
    settings: ProtocolSettings | None = None,
) -> N | None:
    """One node to replace a lapsed one of `card`, never one of `used` (every node the task has
    had). GPT: a node with the same card, or None. SD: the same card when one is eligible,
    otherwise any eligible node (SD results need not come from equal cards)."""
    s = settings or _DEFAULTS
    pool = eligible(req, nodes, s, exclude=used)
    same = [n for n in pool if n.card == card]
    if not same and req.kind == TaskKind.SD:
        same = pool
    if not same:
        return None
    (node,) = _weighted_sample(same, [node_weight(n, req.model, s) for n in same], 1, rng)
    return node


def can_run_now(
    req: TaskRequirements,
    nodes: Iterable[SelectableNode],
    settings: ProtocolSettings | None = None,
) -> bool:
    """Whether `draw_group` would find a group among these nodes now (no randomness used)."""
    s = settings or _DEFAULTS
    pool = eligible(req, nodes, s)
    if req.kind == TaskKind.GPT:
        return any(len(group) >= s.group_size for group in _by_card(pool).values())
    return len(pool) >= s.group_size


def static_reason(
    req: TaskRequirements,
    registered: Iterable[SelectableNode],
    settings: ProtocolSettings | None = None,
) -> str | None:
    """Why no group of the registered nodes could ever run the task, or None when one could.
    Availability, exclusion and QoS are ignored: they change."""
    s = settings or _DEFAULTS
    k = s.group_size
    pool = list(registered)
    if len(pool) < k:
        return f"fewer than {k} nodes are registered"
    for check, reason in _static_checks(req, s):
        pool = [n for n in pool if check(n)]
        if len(pool) < k:
            return reason if not pool else f"{reason} on {k} nodes"
    if req.kind == TaskKind.GPT and not any(len(g) >= k for g in _by_card(pool).values()):
        return f"no card (GPU name and VRAM) has {k} nodes that can run the task"
    return None


def can_ever_run(
    req: TaskRequirements,
    registered: Iterable[SelectableNode],
    settings: ProtocolSettings | None = None,
) -> tuple[bool, str]:
    """(True, "") when some group of registered nodes (free or not) could run the task; else
    (False, reason) for a FAILED_PRECONDITION at creation."""
    reason = static_reason(req, registered, settings)
    return (True, "") if reason is None else (False, reason)
