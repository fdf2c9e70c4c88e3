"""The seams between the backbone and the network protocol.

The dispatcher only talks to these small interfaces. The backbone ships plain,
honest implementations of each (FIFO order, uniform random choice among the
capable free nodes, open membership, no deposit check, no settlement: tasks end
VALIDATED); the protocol layer (`coordinator.service.protocol`) supplies the
priced queue, QoS-weighted selection, the on-chain stake and deposit checks
and batched settlement.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from sortedcontainers import SortedKeyList

from coordinator.domain.models import Assignment, NodeRecord, Task, TaskType
from coordinator.errors import ResourceExhausted

__all__ = [
    "DepositCheck",
    "NoDepositCheck",
    "NoSettlement",
    "NodeView",
    "OpenMembership",
    "Pricer",
    "QosHook",
    "Selector",
    "SettlementHook",
    "StakeCheck",
    "TaskQueue",
    "UniformSelector",
    "CreationPricer",
    "eligible",
]


@dataclass(frozen=True)
class NodeView:
    """A node as the selector sees it: its record, and whether it is free now."""

    record: NodeRecord
    qos: float = 0.5

    @property
    def address(self) -> str:
        return self.record.address


def eligible(task: Task, node: NodeRecord) -> bool:
    """Whether `node` can run `task` at all (card, VRAM, type, dtype, quantization)."""
    caps = node.caps
    if task.type not in caps.task_types:
        return False
    if task.type == TaskType.GPT and task.card is not None and caps.card != task.card:
        return False
    if task.min_vram_bytes and caps.card.vram_bytes < task.min_vram_bytes:
        return False
    if task.dtype and task.dtype != "auto" and caps.dtypes and task.dtype not in caps.dtypes:
        return False
    if task.quantize_bits and task.quantize_bits not in caps.quantize_bits:
        return False
    return True


class TaskQueue:
    """The QUEUED tasks, in order of their static priority key (highest first, then oldest).

    Keys never change while a task waits (aging is folded into the key), so the order
    is the same after a restart that reloads the keys from the store. Bounded: a push
    beyond `capacity` raises ResourceExhausted and changes nothing.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items = SortedKeyList(key=lambda t: (-t.priority, t.created_ms, t.task_id))
        self._by_id: dict[str, Task] = {}
        self._depth: dict[TaskType, int] = {t: 0 for t in TaskType}

    def check_room(self) -> None:
        if len(self._by_id) >= self.capacity:
            raise ResourceExhausted(f"queue is full ({self.capacity} tasks); try again later")

    def push(self, task: Task) -> None:
        if task.task_id in self._by_id:
            return
        self.check_room()
        self._items.add(task)
        self._by_id[task.task_id] = task
        self._depth[task.type] += 1

    def remove(self, task_id: str) -> Task | None:
        task = self._by_id.pop(task_id, None)
        if task is not None:
            self._items.remove(task)
            self._depth[task.type] -= 1
        return task

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Task]:
        return iter(list(self._items))

    def head(self, limit: int, chunk: int = 64) -> Iterator[Task]:
        """The first `limit` tasks in order. Read a chunk at a time, each from where the last one ended, so
        the caller may remove tasks while it walks, and a round that stops early copies little."""
        taken, after = 0, None
        while taken < limit:
            it = iter(self._items) if after is None else self._items.irange_key(after, inclusive=(False, False))
            part = list(itertools.islice(it, min(chunk, limit - taken)))
            if not part:
                return
            yield from part
            taken += len(part)
            after = self._items.key(part[-1])

    def depth_by_type(self) -> dict[TaskType, int]:
        return dict(self._depth)


class Pricer(Protocol):
    def priority(self, task: Task, now_ms: int) -> float:
        """The task's static queue key (higher is served first)."""

    def estimate_seconds(self, task: Task) -> float: ...

    def observe(self, task: Task, assignment: Assignment, card_name: str) -> None:
        """Learns from a finished assignment (its stats)."""


class CreationPricer:
    """Backbone order: first come, first served."""

    def priority(self, task: Task, now_ms: int) -> float:
        return -float(now_ms)

    def estimate_seconds(self, task: Task) -> float:
        return 0.0

    def observe(self, task: Task, assignment: Assignment, card_name: str) -> None:
        return None


class Selector(Protocol):
    def pick(self, task: Task, free: Sequence[NodeView], count: int, exclude: frozenset[str]) -> list[NodeView] | None:
        """`count` distinct free nodes that can run `task` together (GPT: one card), or None."""

    def can_ever_run(self, task: Task, registered: Sequence[NodeView]) -> tuple[bool, str]:
        """Whether some group of registered nodes could run `task`; otherwise the reason."""


class UniformSelector:
    """Uniform random choice among capable free nodes; GPT groups share one card."""

    def __init__(self, group_size: int = 3, rng: random.Random | None = None) -> None:
        self.group_size = group_size
        self.rng = rng or random.Random()

    def pick(self, task: Task, free: Sequence[NodeView], count: int, exclude: frozenset[str]) -> list[NodeView] | None:
        capable = [n for n in free if n.address not in exclude and eligible(task, n.record)]
        if task.type == TaskType.GPT and task.card is None:
            by_card: dict = {}
            for n in capable:
                by_card.setdefault(n.record.caps.card, []).append(n)
            groups = [g for g in by_card.values() if len(g) >= count]
            if not groups:
                return None
            capable = self.rng.choice(groups)
        if len(capable) < count:
            return None
        return self.rng.sample(capable, count)

    def can_ever_run(self, task: Task, registered: Sequence[NodeView]) -> tuple[bool, str]:
        capable = [n for n in registered if eligible(task, n.record)]
        if task.type == TaskType.GPT:
            counts: dict = {}
            for n in capable:
                counts[n.record.caps.card] = counts.get(n.record.caps.card, 0) + 1
            if not any(c >= self.group_size for c in counts.values()):
                return False, (
                    f"no {self.group_size} registered nodes with the same card can run this GPT task "
                    f"(dtype {task.dtype or 'auto'}, quantize_bits {task.quantize_bits or 'none'})"
                )
            return True, ""
        if len(capable) < self.group_size:
            need = f" with >= {task.min_vram_bytes / 2**30:.1f} GiB VRAM" if task.min_vram_bytes else ""
            return False, f"fewer than {self.group_size} registered nodes can run this {task.type.value} task{need}"
        return True, ""


class StakeCheck(Protocol):
    async def check(self, address: str) -> None:
        """Raises NotStaked when `address` may not join."""


class OpenMembership:
    """No stake required: for a network without a chain (tests, a private cluster)."""

    async def check(self, address: str) -> None:
        return None


class DepositCheck(Protocol):
    async def available(self, creator: str) -> int | None:
        """The creator's deposit that fees may draw on, in wei; None when deposits are not enforced."""


class NoDepositCheck:
    async def available(self, creator: str) -> int | None:
        return None


class QosHook(Protocol):
    def qos(self, node: NodeRecord, now_ms: int) -> float: ...

    def on_scored(self, node: NodeRecord, order: int, matched: bool, now_ms: int) -> dict:
        """Returns the node's new serialized QoS state."""

    def on_timeout(self, node: NodeRecord, now_ms: int) -> dict: ...

    def verdict(self, node: NodeRecord, now_ms: int) -> str:
        """"ok", "excluded" (gets no tasks now) or "kick" (leaves the network, stake returned)."""


class SettlementHook(Protocol):
    def task_finished(self, task: Task, assignments: Sequence[Assignment]) -> None:
        """Called once per task when its outcome is final (every assignment closed after the verdict,
        or the task aborted). Must journal durably before returning."""


class NoSettlement:
    """Tasks end VALIDATED (or ABORTED); nothing is paid. For a network without a chain."""

    def task_finished(self, task: Task, assignments: Sequence[Assignment]) -> None:
        return None
