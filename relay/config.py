"""Relay settings: one frozen object, passed in through constructors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from chain.signing import DEV_DOMAIN, Domain

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_MAX_BLOB_BYTES", "RelayConfig", "grpc_options"]

DEFAULT_CHUNK_BYTES = 1 << 20  # 1 MiB per stream message
DEFAULT_MAX_BLOB_BYTES = 256 << 20  # 256 MiB


@dataclass(frozen=True)
class RelayConfig:
    """Settings of one relay (bundled in the coordinator or standalone).

    root: directory of the filesystem blob store.
    coordinator_address: the only key that may read/write everything and that signs grants.
    domain: the EIP-712 domain every relay request and grant is signed in.
    max_blob_bytes: the largest blob a Put may declare or stream (RESOURCE_EXHAUSTED above).
    auth_window: a request's timestamp must be within this of the relay's clock (past or future).
    chunk_bytes: size of each chunk the relay streams on Get.
    max_nonces: bound of the replay cache; when full of unexpired nonces new requests are refused.
    """

    root: Path
    coordinator_address: str
    domain: Domain = DEV_DOMAIN
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    auth_window: timedelta = timedelta(seconds=60)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_nonces: int = 1 << 18
    max_grant_cache: int = 4096
    rpc_timeout: timedelta = field(default=timedelta(seconds=120))

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if not is_address(self.coordinator_address):
            raise ValueError(f"coordinator_address must be an Ethereum address, got {self.coordinator_address!r}")
        object.__setattr__(self, "coordinator_address", to_checksum_address(self.coordinator_address))
        if self.max_blob_bytes <= 0:
            raise ValueError(f"max_blob_bytes must be > 0, got {self.max_blob_bytes}")
        if not (1024 <= self.chunk_bytes <= 16 << 20):
            raise ValueError(f"chunk_bytes must be in [1024, 16 MiB], got {self.chunk_bytes}")
        if self.auth_window <= timedelta(0):
            raise ValueError(f"auth_window must be > 0, got {self.auth_window}")
        if self.max_nonces <= 0:
            raise ValueError(f"max_nonces must be > 0, got {self.max_nonces}")


def grpc_options(chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[tuple[str, int]]:
    """Channel/server options that let relay chunks of `chunk_bytes` through with room to spare."""
    limit = max(chunk_bytes * 2, 4 << 20) + (64 << 10)
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
    ]
