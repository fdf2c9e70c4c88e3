"""Who may read a task (GetTask, WatchTask): its creator, or the operator.

The creator proves itself with an EIP-712 `TaskRead(taskId, timestamp)` signature (chain.signing) whose
timestamp is within `window_s` of the coordinator's clock, so a signature seen once cannot be replayed
for long; the operator sends its admin token (`authorization: Bearer ...`). A signer that is not the
task's creator gets the same answer whether or not the task exists, so ids cannot be probed.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from chain import signing
from coordinator.domain.models import Task
from coordinator.errors import PermissionDenied, Unauthenticated

__all__ = ["ADMIN", "ReadAccess"]

# The reader a valid admin token stands for.
ADMIN = "admin"


class ReadAccess:
    def __init__(self, domain: Callable[[], signing.Domain], admin_token: str, clock: Callable[[], float],
                 window_s: float = 300.0) -> None:
        self._domain = domain
        self._admin = admin_token.encode()
        self._clock = clock
        self.window_s = window_s

    def reader(self, task_id: str, timestamp: int, signature: bytes, metadata) -> str:
        """ADMIN, or the address that signed this read; Unauthenticated when neither is proven."""
        given = dict(metadata or ()).get("authorization", "")
        if self._admin and given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(),
                                                                                self._admin):
            return ADMIN
        if not signature:
            raise Unauthenticated("signature: reading a task needs its creator's TaskRead signature over "
                                  "(task_id, timestamp), or the admin token")
        now = self._clock()
        if abs(now - timestamp) > self.window_s:
            raise Unauthenticated(f"timestamp must be within {self.window_s:g} s of the coordinator's clock "
                                  f"({int(now)}), got {timestamp}")
        try:
            return signing.task_read_signer(self._domain(), bytes.fromhex(task_id[2:]), timestamp, signature)
        except signing.SignatureError as exc:
            raise Unauthenticated(f"signature: {exc}") from exc

    @staticmethod
    def denied(task_id: str, reader: str) -> PermissionDenied:
        return PermissionDenied(f"task {task_id} is not readable by {reader}: only its creator may read it "
                                "(or it does not exist)")

    def check(self, task_id: str, task: Task | None, reader: str) -> Task:
        """The task, when `reader` may read it; PermissionDenied (for a missing task too) otherwise."""
        if reader == ADMIN and task is not None:
            return task
        if task is None or task.creator != reader:
            raise self.denied(task_id, reader)
        return task
