"""Relay settings: one frozen object, passed in through constructors.

Standalone (`helium relay`) it is read with :func:`helium.config.load_settings` (section ``[relay]``):
flags > ``HELIUM_<FIELD>`` env > TOML > the defaults below. Bundled, the coordinator builds one with
its own data directory, coordinator address and chain domain; host/port/TLS are then unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from chain.signing import ZERO_ADDRESS, Domain

__all__ = ["DEFAULT_CHUNK_BYTES", "DEFAULT_MAX_BLOB_BYTES", "RelayConfig", "grpc_options"]

DEFAULT_CHUNK_BYTES = 1 << 20  # 1 MiB per stream message
DEFAULT_MAX_BLOB_BYTES = 256 << 20  # 256 MiB
_MAX_HTTP2_FRAME = (1 << 24) - 1  # the largest SETTINGS_MAX_FRAME_SIZE HTTP/2 allows


@dataclass(frozen=True)
class RelayConfig:
    """Settings of one relay.

    data_dir: root directory of the filesystem blob store.
    coordinator_address: the one key that may read/write everything, and that signs grants (required).
    chain_id, verifying_contract: the EIP-712 domain requests and grants are signed in (see `domain`).
    max_blob_bytes: the largest blob a Put may declare or stream (RESOURCE_EXHAUSTED above it).
    auth_window: a request's timestamp must be within this of the relay's clock, past or future.
    chunk_bytes: size of the chunks the relay streams on Get.
    max_nonces: bound of the replay cache; while it is full of unexpired nonces requests are refused.
    retention: a blob is removed this long after it was written (swept every `sweep_interval`)...
    evidence_retention: ...unless its task holds slash evidence: then it is kept this long after the
        evidence was found (the coordinator pins the task), whichever ends later.
    host, port, tls_cert, tls_key, insecure: the standalone server only.
    """

    data_dir: Path = Path(".helium/relay")
    coordinator_address: str = ""
    chain_id: int = 31337
    verifying_contract: str = ZERO_ADDRESS
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES
    auth_window: timedelta = timedelta(seconds=60)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_nonces: int = 1 << 18
    max_grant_cache: int = 4096
    retention: timedelta = timedelta(days=7)
    evidence_retention: timedelta = timedelta(days=30)
    sweep_interval: timedelta = timedelta(minutes=10)
    host: str = "127.0.0.1"
    port: int = 50052
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    shutdown_grace: timedelta = timedelta(seconds=10)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))
        if not is_address(self.coordinator_address):
            raise ValueError(f"coordinator_address must be an Ethereum address, got {self.coordinator_address!r}")
        object.__setattr__(self, "coordinator_address", to_checksum_address(self.coordinator_address))
        if not is_address(self.verifying_contract):
            raise ValueError(f"verifying_contract must be an Ethereum address, got {self.verifying_contract!r}")
        if self.chain_id <= 0:
            raise ValueError(f"chain_id must be > 0, got {self.chain_id}")
        if self.max_blob_bytes <= 0:
            raise ValueError(f"max_blob_bytes must be > 0, got {self.max_blob_bytes}")
        if not (1024 <= self.chunk_bytes <= 16 << 20):
            raise ValueError(f"chunk_bytes must be in [1024, 16 MiB], got {self.chunk_bytes}")
        if self.auth_window <= timedelta(0):
            raise ValueError(f"auth_window must be > 0, got {self.auth_window}")
        for name in ("retention", "evidence_retention", "sweep_interval"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_nonces <= 0:
            raise ValueError(f"max_nonces must be > 0, got {self.max_nonces}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if not (0 <= self.port <= 65535):
            raise ValueError(f"port must be in [0, 65535], got {self.port}")

    @property
    def replay_path(self) -> Path:
        """The directory, beside the blobs, whose logs keep the replay cache's nonces across restarts."""
        return self.data_dir / ".nonces"

    @property
    def domain(self) -> Domain:
        return Domain(chain_id=self.chain_id, verifying_contract=self.verifying_contract)

    @classmethod
    def for_domain(cls, data_dir: Path, coordinator_address: str, domain: Domain, **kw) -> RelayConfig:
        """A config in the coordinator's own domain (the bundled relay)."""
        if (domain.name, domain.version) != ("Helium", "1"):
            raise ValueError(f"domain must be Helium v1, got {domain.name} v{domain.version}")
        return cls(
            data_dir=data_dir,
            coordinator_address=coordinator_address,
            chain_id=domain.chain_id,
            verifying_contract=domain.verifying_contract,
            **kw,
        )


def grpc_options(chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[tuple[str, int]]:
    """Channel/server options for relay traffic: messages of `chunk_bytes` pass with room to spare, and
    HTTP/2 moves them in large frames (the default is 16 KiB) through a per-stream window of a few
    chunks, so a bulk Put or Get is not paced by flow-control round trips. Pass the same options on
    both ends: each side advertises what it receives."""
    limit = max(chunk_bytes * 2, 4 << 20) + (64 << 10)
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
        ("grpc.http2.max_frame_size", _MAX_HTTP2_FRAME),
        ("grpc.http2.lookahead_bytes", max(4 * chunk_bytes, 8 << 20)),
    ]
