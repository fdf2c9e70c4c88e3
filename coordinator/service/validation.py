"""Result validation: when do submitted results make a verdict?

GPT results match when their result hashes are equal (the hash covers the token
ids and finish reasons of every choice). SD results match when both have the
same number of images and every image's 64-bit pHash is within the Hamming
threshold (distance < threshold, default 5) of the other's.

An invalid-args error report is a submission whose hash is INVALID_ARGS_HASH,
signed like a result: two of them agreeing abort the task with pay. Out-of-memory
and crash reports are not submissions: they count as timeouts and the
assignment is given to another node.

- Early quorum: the first time `quorum` submissions agree, the task is decided.
- Every submission that disagrees with the accepted one is an outlier (slashable
  evidence once the accepted result has its quorum).
- All `group_size` submissions in and no pair agreeing: the task is aborted.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from chain.signing import INVALID_ARGS_HASH, SignatureError, sd_result_hash

__all__ = ["INVALID_ARGS_HASH", "Decision", "Submission", "Verdict", "decide", "hamming", "results_match",
           "sd_hash_binds"]  # fmt: skip


class Verdict(enum.StrEnum):
    PENDING = "pending"
    VALIDATED = "validated"
    INVALID_ARGS = "invalid_args"  # majority says the args are invalid: aborted, nodes paid
    MISMATCH = "mismatch"  # all results differ: aborted, no fee


@dataclass(frozen=True)
class Submission:
    node: str
    order: int  # 1-based order of arrival among the task's submissions
    result_hash: bytes
    phashes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    accepted: Submission | None = None
    winners: tuple[Submission, ...] = ()  # agree with the accepted result, in order
    outliers: tuple[Submission, ...] = ()  # disagree with the accepted result


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def results_match(kind: str, a: Submission, b: Submission, phash_threshold: int = 5) -> bool:
    if a.result_hash == INVALID_ARGS_HASH or b.result_hash == INVALID_ARGS_HASH or kind != "sd":
        return a.result_hash == b.result_hash
    if len(a.phashes) != len(b.phashes) or not a.phashes:
        return False
    return all(hamming(x, y) < phash_threshold for x, y in zip(a.phashes, b.phashes, strict=True))


def decide(
    kind: str, submissions: Sequence[Submission], *, group_size: int = 3, quorum: int = 2, phash_threshold: int = 5
) -> Decision:
    subs = sorted(submissions, key=lambda s: s.order)
    for anchor in subs:
        agreeing = tuple(s for s in subs if results_match(kind, anchor, s, phash_threshold))
        if len(agreeing) >= quorum:
            outliers = tuple(s for s in subs if s not in agreeing)
            verdict = Verdict.INVALID_ARGS if anchor.result_hash == INVALID_ARGS_HASH else Verdict.VALIDATED
            return Decision(verdict, agreeing[0], agreeing, outliers)
    if len(subs) >= group_size:
        return Decision(Verdict.MISMATCH, None, (), tuple(subs))
    return Decision(Verdict.PENDING)


def sd_hash_binds(result_hash: bytes, phashes: Sequence[int]) -> bool:
    """Whether an SD result's signed hash is sd_result_hash(its pHashes): SD results are compared by pHash
    but signed and settled by hash, and the ledger pays only a result whose hash it can recompute."""
    try:
        return bool(phashes) and sd_result_hash(phashes) == result_hash
    except SignatureError:
        return False
