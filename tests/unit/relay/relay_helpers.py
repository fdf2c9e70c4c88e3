"""Shared values and grant helpers of the relay tests (a uniquely named module, not `conftest`,
so importing it never picks up another directory's conftest)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from chain.signing import DEV_DOMAIN
from relay.auth import creator_grant_slots, make_grant, worker_grant_slots

MAX_BLOB = 1 << 20  # small limit so the oversize tests stay cheap
TASK = "0x" + "5a" * 32
OTHER_TASK = "0x" + "6b" * 32


@dataclass
class Keys:
    coordinator: LocalAccount
    creator: LocalAccount
    worker1: LocalAccount
    worker2: LocalAccount
    stranger: LocalAccount



def worker_grant(keys: Keys, worker: LocalAccount, task: str = TASK, expires_in: float = 300, signer=None):
    read, write = worker_grant_slots(worker.address)
    signer = signer or keys.coordinator
    return make_grant(signer, DEV_DOMAIN, task, worker.address, read, write, int(time.time() + expires_in))


def creator_grant(keys: Keys, task: str = TASK):
    read, write = creator_grant_slots()
    return make_grant(keys.coordinator, DEV_DOMAIN, task, keys.creator.address, read, write, int(time.time() + 300))
