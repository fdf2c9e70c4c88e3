"""Typed values the chain client takes and returns: batch items, evidence, settings, views, events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from eth_utils import to_checksum_address

from chain.errors import InvalidChainInput
from chain.signing import INVALID_ARGS_HASH, compact_signature, sd_result_hash

__all__ = [
    "ChainEvent",
    "ClientSettings",
    "ContractAddresses",
    "EvidenceResult",
    "NetworkCounters",
    "NodeInfo",
    "Receipt",
    "SignedResult",
    "SlashEvidence",
    "SlashKind",
    "TaskSettlement",
]

_ORDER_SCORES = {1: 10, 2: 9, 3: 6}


def _b32(value: bytes, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise InvalidChainInput(f"{name} must be 32 bytes, got {value!r:.80}")
    return bytes(value)


def _sig(value: bytes, name: str) -> tuple[bytes, bytes]:
    try:
        return compact_signature(bytes(value))
    except Exception as exc:
        raise InvalidChainInput(f"{name}: {exc}") from exc


def _phashes(values, name: str) -> tuple[int, ...]:
    out = tuple(int(p) for p in values)
    for i, p in enumerate(out):
        if not 0 <= p < 1 << 64:
            raise InvalidChainInput(f"{name}[{i}] must be a uint64, got {p}")
    return out


_CHECKSUMMED: dict[str, str] = {}


def _addr(value: str, name: str) -> str:
    """The checksummed address; the few addresses of a network (nodes, creators) are remembered, since a
    settlement builds several models per task."""
    if isinstance(value, str):
        out = _CHECKSUMMED.get(value)
        if out is not None:
            return out
    try:
        out = to_checksum_address(value)
    except Exception as exc:
        raise InvalidChainInput(f"{name} must be an address, got {value!r:.60}") from exc
    if isinstance(value, str):
        if len(_CHECKSUMMED) >= 10_000:
            _CHECKSUMMED.clear()
        _CHECKSUMMED[value] = out
    return out


@dataclass(frozen=True)
class SignedResult:
    """A matching node's signed result. `order` is its submission position: 1, 2 or 3 (scores 10, 9, 6).
    An SD result carries its images' `phashes` (then result_hash == sd_result_hash(phashes), the hash the
    node signed); GPT results and invalid-args verdicts carry none."""

    node: str
    result_hash: bytes
    signature: bytes
    order: int
    phashes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "node", _addr(self.node, "result.node"))
        object.__setattr__(self, "phashes", _phashes(self.phashes, "result.phashes"))
        _b32(self.result_hash, "result.result_hash")
        _sig(self.signature, "result.signature")
        if self.order not in _ORDER_SCORES:
            raise InvalidChainInput(f"result.order must be 1, 2 or 3, got {self.order}")
        if self.phashes and sd_result_hash(self.phashes) != self.result_hash:
            raise InvalidChainInput(f"result.result_hash of {self.node} must be sd_result_hash(phashes)")

    @classmethod
    def sd(cls, node: str, phashes: tuple[int, ...] | list[int], signature: bytes, order: int) -> SignedResult:
        """An SD result: its hash is computed from its pHashes (the ledger does the same)."""
        phashes = _phashes(phashes, "result.phashes")
        if not phashes:
            raise InvalidChainInput(f"result.phashes of {node} must hold one pHash per image, got none")
        return cls(node, sd_result_hash(phashes), signature, order, phashes)


@dataclass(frozen=True)
class TaskSettlement:
    """One task of a settle batch: the creator's signed Task and the signed results of the matching nodes
    (2 or 3). GPT and invalid-args verdicts: all over the same result hash (INVALID_ARGS_HASH for an
    invalid-args verdict). SD: every result carries its pHashes and its own hash; the ledger requires them
    to match pairwise within NodeStaking's phashThreshold (`sd` tells which)."""

    task_id: bytes
    args_hash: bytes
    creator: str
    fee: int
    nonce: int
    deadline: int
    creator_signature: bytes
    results: tuple[SignedResult, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "creator", _addr(self.creator, "creator"))
        object.__setattr__(self, "results", tuple(self.results))
        _b32(self.task_id, "task_id")
        _b32(self.args_hash, "args_hash")
        _sig(self.creator_signature, "creator_signature")
        for name in ("fee", "nonce", "deadline"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0 or v >= 1 << 256:
                raise InvalidChainInput(f"{name} must be a uint256, got {v!r}")
        if not 2 <= len(self.results) <= 3:
            raise InvalidChainInput(f"results must hold 2 or 3 matching results, got {len(self.results)}")
        with_phashes = sum(1 for r in self.results if r.phashes)
        if with_phashes not in (0, len(self.results)):
            raise InvalidChainInput("results must all carry phashes (SD) or none (GPT, invalid args)")
        if not with_phashes and len({r.result_hash for r in self.results}) != 1:
            raise InvalidChainInput("results must all carry the same result_hash")
        if len({r.node for r in self.results}) != len(self.results):
            raise InvalidChainInput("results must come from distinct nodes")
        if len({r.order for r in self.results}) != len(self.results):
            raise InvalidChainInput("results must have distinct orders")

    @property
    def sd(self) -> bool:
        """Whether the results are matched by pHash (each carries its own pHashes and hash)."""
        return bool(self.results[0].phashes)

    @property
    def result_hash(self) -> bytes:
        """The accepted result hash: the lowest submission order's (all equal unless `sd`)."""
        return min(self.results, key=lambda r: r.order).result_hash

    @property
    def phash_count(self) -> int:
        return sum(len(r.phashes) for r in self.results)

    def shares(self) -> dict[str, int]:
        """The payout per node, computed exactly as TaskLedger does."""
        scores = [_ORDER_SCORES[r.order] for r in self.results]
        total = sum(scores)
        shares = [self.fee * s // total for s in scores]
        first = min(range(len(self.results)), key=lambda i: self.results[i].order)
        shares[first] += self.fee - sum(shares)
        return {r.node: s for r, s in zip(self.results, shares, strict=True)}

    def as_abi(self) -> tuple:
        r, vs = _sig(self.creator_signature, "creator_signature")
        results = [(x.node, x.order, *_sig(x.signature, "result.signature")) for x in self.results]
        phashes = [list(x.phashes) for x in self.results] if self.sd else []
        return (
            self.task_id, self.creator, self.args_hash, self.fee, self.nonce, self.deadline,
            self.result_hash, r, vs, results, phashes,
        )  # fmt: skip


class SlashKind(enum.IntEnum):
    GPT = 0  # results match when their hashes are equal
    SD = 1  # results match when every image's pHash is within the Hamming threshold


@dataclass(frozen=True)
class EvidenceResult:
    """One signed result in slash evidence. SD results carry `phashes` (the hash is then sd_result_hash of
    them); an SD invalid-args verdict has no phashes and result_hash INVALID_ARGS_HASH."""

    node: str
    result_hash: bytes
    signature: bytes
    phashes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "node", _addr(self.node, "evidence.node"))
        object.__setattr__(self, "phashes", tuple(int(p) for p in self.phashes))
        _b32(self.result_hash, "evidence.result_hash")
        _sig(self.signature, "evidence.signature")

    @classmethod
    def sd(cls, node: str, phashes: tuple[int, ...] | list[int], signature: bytes) -> EvidenceResult:
        if not phashes:
            return cls(node=node, result_hash=INVALID_ARGS_HASH, signature=signature)
        return cls(node=node, result_hash=sd_result_hash(phashes), signature=signature, phashes=tuple(phashes))


@dataclass(frozen=True)
class SlashEvidence:
    """Proof that `slashed` was wrong: `agreeing` are two results that match each other, and `slashed`
    matches neither; three distinct nodes, all signing Result for `task_id`."""

    task_id: bytes
    kind: SlashKind
    agreeing: tuple[EvidenceResult, EvidenceResult]
    slashed: EvidenceResult

    def __post_init__(self) -> None:
        _b32(self.task_id, "evidence.task_id")
        object.__setattr__(self, "kind", SlashKind(self.kind))
        object.__setattr__(self, "agreeing", tuple(self.agreeing))
        if len(self.agreeing) != 2:
            raise InvalidChainInput(f"evidence.agreeing must hold 2 results, got {len(self.agreeing)}")

    @property
    def node(self) -> str:
        return self.slashed.node

    def as_abi(self) -> tuple:
        results = []
        for x in (*self.agreeing, self.slashed):
            r, vs = _sig(x.signature, "evidence.signature")
            results.append((x.node, x.result_hash, list(x.phashes), r, vs))
        return (self.task_id, int(self.kind), results)


@dataclass(frozen=True)
class ContractAddresses:
    stats: str
    staking: str
    ledger: str
    deploy_block: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"stats": self.stats, "staking": self.staking, "ledger": self.ledger, "deploy_block": self.deploy_block}


@dataclass(frozen=True)
class ClientSettings:
    """Gas, fee and deadline settings of the coordinator's chain client."""

    priority_fee_wei: int = 1_000_000_000
    max_fee_per_gas_wei: int = 200_000_000_000
    settle_base_gas: int = 200_000
    settle_gas_per_task: int = 180_000
    settle_gas_per_slash: int = 400_000
    settle_gas_per_phash: int = 2_000
    call_gas: int = 300_000
    deploy_gas: int = 8_000_000
    max_gas: int = 29_000_000
    receipt_timeout: timedelta = timedelta(seconds=60)
    rpc_timeout: timedelta = timedelta(seconds=20)
    poll_interval: timedelta = timedelta(milliseconds=100)
    rpc_attempts: int = 4
    preflight: bool = True  # eth_call a transaction first, so a revert is decoded and nothing is spent


@dataclass(frozen=True)
class NodeInfo:
    stake: int
    unlock_at: int  # 0: no unstake requested; else when the stake may be withdrawn
    left_at: int  # when the stake last went back (withdraw, kick-out); 0: never. Paid until a delay after
    slashed: bool
    active: bool


@dataclass(frozen=True)
class NetworkCounters:
    nodes: int
    gpus: int
    tasks_settled: int
    slashes: int
    kick_outs: int
    fees_settled: int
    slashed_total: int


@dataclass(frozen=True)
class ChainEvent:
    contract: str  # "TaskLedger", "NodeStaking" or "NetworkStats"
    name: str
    args: dict[str, Any]
    block_number: int
    tx_hash: bytes
    log_index: int


@dataclass(frozen=True)
class Receipt:
    tx_hash: bytes
    status: int
    block_number: int
    gas_used: int
    events: tuple[ChainEvent, ...] = field(default=())
