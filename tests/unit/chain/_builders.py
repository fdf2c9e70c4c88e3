"""Builders of signed batch items for the chain tests."""

from __future__ import annotations

import os
from collections.abc import Sequence

from eth_account.signers.local import LocalAccount

from chain.models import EvidenceResult, SignedResult, SlashEvidence, SlashKind, TaskSettlement
from chain.signing import INVALID_ARGS_HASH, Domain, compute_task_id, sd_result_hash, sign_result, sign_task

GOOD = b"\x01" * 32
BAD = b"\x02" * 32


def make_task(
    domain: Domain,
    creator: LocalAccount,
    nonce: int,
    fee: int,
    deadline: int,
    nodes: Sequence[LocalAccount],
    *,
    orders: Sequence[int] = (1, 2, 3),
    result_hash: bytes = GOOD,
    args_hash: bytes | None = None,
    creator_signer: LocalAccount | None = None,
    creator_domain: Domain | None = None,
    result_domain: Domain | None = None,
) -> TaskSettlement:
    args_hash = args_hash or os.urandom(32)
    task_id = compute_task_id(creator.address, nonce, args_hash)
    sig = sign_task(creator_signer or creator, creator_domain or domain, task_id, args_hash, fee, nonce, deadline)
    results = tuple(
        SignedResult(n.address, result_hash, sign_result(n, result_domain or domain, task_id, result_hash), o)
        for n, o in zip(nodes, orders, strict=False)
    )
    return TaskSettlement(task_id, args_hash, creator.address, fee, nonce, deadline, sig, results)


def make_sd_task(
    domain: Domain,
    creator: LocalAccount,
    nonce: int,
    fee: int,
    deadline: int,
    nodes: Sequence[LocalAccount],
    phashes: Sequence[Sequence[int]],
    *,
    orders: Sequence[int] = (1, 2, 3),
    args_hash: bytes | None = None,
) -> TaskSettlement:
    """An SD task paid to `nodes`, node i having signed sd_result_hash(phashes[i]) (its own images)."""
    args_hash = args_hash or os.urandom(32)
    task_id = compute_task_id(creator.address, nonce, args_hash)
    sig = sign_task(creator, domain, task_id, args_hash, fee, nonce, deadline)
    results = tuple(
        SignedResult.sd(n.address, list(ph), sign_result(n, domain, task_id, sd_result_hash(ph)), o)
        for n, ph, o in zip(nodes, phashes, orders, strict=False)
    )
    return TaskSettlement(task_id, args_hash, creator.address, fee, nonce, deadline, sig, results)


def gpt_evidence(
    domain: Domain, task_id: bytes, agreeing: Sequence[LocalAccount], slashed: LocalAccount, *,
    good: bytes = GOOD, bad: bytes = BAD,
) -> SlashEvidence:  # fmt: skip
    a = tuple(EvidenceResult(n.address, good, sign_result(n, domain, task_id, good)) for n in agreeing)
    c = EvidenceResult(slashed.address, bad, sign_result(slashed, domain, task_id, bad))
    return SlashEvidence(task_id, SlashKind.GPT, a, c)  # type: ignore[arg-type]


def sd_evidence(
    domain: Domain, task_id: bytes, nodes: Sequence[LocalAccount], phashes: Sequence[Sequence[int]]
) -> SlashEvidence:
    """nodes[0], nodes[1] agree; nodes[2] is slashed; phashes[i] are node i's image pHashes."""
    res = []
    for n, ph in zip(nodes, phashes, strict=True):
        h = sd_result_hash(ph) if ph else None
        res.append(EvidenceResult.sd(n.address, list(ph), sign_result(n, domain, task_id, h or INVALID_ARGS_HASH)))
    return SlashEvidence(task_id, SlashKind.SD, (res[0], res[1]), res[2])

