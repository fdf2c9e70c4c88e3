"""The blobs of a task with slash evidence outlive the relay's retention (issue #14, item 5): the coordinator's
outcome hook pins them in the real filesystem store, and the sweep keeps them until the pin runs out."""

from __future__ import annotations

import os
import time

import pytest
from eth_account import Account

from chain import signing
from coordinator.domain.models import Assignment, AssignmentState, Task, TaskState, TaskType
from coordinator.service.blob_retention import evidence_pinner
from relay.store import FilesystemBlobStore

TASK = "0x" + "3c" * 32
DAY = 86400.0
GOOD, BAD = b"\x01" * 32, b"\x02" * 32


def _task(state: TaskState = TaskState.VALIDATED) -> Task:
    return Task(task_id=TASK, type=TaskType.GPT, state=state, creator="0x" + "11" * 20, nonce=1, fee=10,
                deadline=0, args=b"{}", args_hash=b"\0" * 32, signature=b"", model="m", priority=0.0, created_ms=0,
                updated_ms=0, expires_ms=0, result_hash=GOOD)  # fmt: skip


def _submitted(i: int, result_hash: bytes, matched: bool) -> Assignment:
    key = Account.create()
    sig = signing.sign_result(key, signing.DEV_DOMAIN, bytes.fromhex(TASK[2:]), result_hash)
    return Assignment(assignment_id=f"a-{i}", task_id=TASK, node=key.address, state=AssignmentState.SUBMITTED,
                      leased_ms=i, lease_expires_ms=0, result_hash=result_hash, signature=sig,
                      submission_order=i + 1, matched=matched)  # fmt: skip


def _age_all(store: FilesystemBlobStore, seconds: float) -> None:
    when = time.time() - seconds
    for p in store.root.glob("*/*.blob"):
        os.utime(p, (when, when))


def test_a_task_with_slash_evidence_is_pinned_and_outlives_the_retention(tmp_path):
    store = FilesystemBlobStore(tmp_path, 1 << 20)
    store.put_bytes(TASK, "result/0xaa/0", b"the liar's image")
    now = time.time()
    hook = evidence_pinner(store, 30 * DAY, clock=lambda: now)
    honest = [_submitted(i, GOOD, True) for i in range(3)]
    hook("finished", _task(), [*honest, _submitted(3, GOOD, True)])  # everyone agreed: nothing to keep
    assert store.pinned_until(TASK) == 0.0
    hook("finished", _task(), [*honest, _submitted(3, BAD, False)])  # an outlier: slash evidence
    assert store.pinned_until(TASK) == pytest.approx(now + 30 * DAY)
    _age_all(store, 8 * DAY)
    assert store.sweep(7 * DAY, now) == 0 and store.list_slots(TASK) == ["result/0xaa/0"]
    assert store.sweep(7 * DAY, now + 31 * DAY) == 1 and store.list_slots(TASK) == []
    store.close()


def test_no_evidence_no_pin(tmp_path):
    store = FilesystemBlobStore(tmp_path, 1 << 20)
    hook = evidence_pinner(store, 30 * DAY)
    hook("finished", _task(TaskState.ABORTED), [_submitted(0, BAD, False)])
    assert store.pinned_until(TASK) == 0.0
    store.close()
