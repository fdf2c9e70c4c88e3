"""The worker's seam to the relay: what a node needs of a relay client, and the default one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import grpc
from eth_account.signers.local import LocalAccount

from chain import signing

__all__ = ["RelayFactory", "RelayLike", "default_relay_factory"]


class RelayLike(Protocol):
    async def put(self, task_id: str, slot: str, data: bytes, grant: Any = None) -> str: ...

    async def get(self, task_id: str, slot: str, grant: Any = None) -> bytes: ...


RelayFactory = Callable[[grpc.aio.Channel, LocalAccount, signing.Domain], RelayLike]


def default_relay_factory(channel: grpc.aio.Channel, key: LocalAccount, domain: signing.Domain) -> RelayLike:
    from relay.client import RelayClient  # imported late: the relay package is optional for a worker

    return RelayClient(channel, key, domain)
