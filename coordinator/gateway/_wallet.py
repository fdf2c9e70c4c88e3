"""The gateway wallet: its own creator key, which signs every task for the API-key users (as a bridge).

The key file is made 0600 on first run (`chain.signing.load_or_create_key`).
The operator funds this address's deposit on the TaskLedger; nonces come from
the key store (`KeyStore.next_nonce`, unique across restarts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from chain import signing
from coordinator.gateway.keys import KeyStore
from helium.tasks import args_hash
from helium.v1 import task_pb2

__all__ = ["GatewayWallet", "SignedTask"]


@dataclass(frozen=True)
class SignedTask:
    task_id: str
    request: task_pb2.CreateTaskRequest


class GatewayWallet:
    def __init__(self, key_path: str | Path, keys: KeyStore) -> None:
        self._account = signing.load_or_create_key(key_path)
        self._keys = keys

    @property
    def address(self) -> str:
        return self._account.address

    @property
    def account(self):
        """The creator key (signs relay reads of its own tasks' blobs)."""
        return self._account

    def sign(self, args: task_pb2.TaskArgs, *, fee: int, deadline: timedelta, domain: signing.Domain,
             now: float | None = None) -> SignedTask:
        nonce = self._keys.next_nonce()
        digest = args_hash(args)
        task_id = signing.compute_task_id(self.address, nonce, digest)
        expires = int((time.time() if now is None else now) + deadline.total_seconds())
        signature = signing.sign_task(self._account, domain, task_id, digest, fee, nonce, expires)
        req = task_pb2.CreateTaskRequest(args=args, creator=self.address, nonce=nonce, fee=str(fee),
                                         deadline=expires, signature=signature)
        return SignedTask(task_id="0x" + task_id.hex(), request=req)

    def read_proof(self, task_id: str, domain: signing.Domain) -> dict:
        """GetTask/WatchTask fields proving this wallet created the task (a TaskRead signature, now)."""
        now = int(time.time())
        return {"timestamp": now,
                "signature": signing.sign_task_read(self._account, domain, bytes.fromhex(task_id.removeprefix("0x")),
                                                    now)}

    def sign_cancel(self, task_id: str, domain: signing.Domain) -> bytes:
        return signing.sign_cancel(self._account, domain, bytes.fromhex(task_id.removeprefix("0x")))
