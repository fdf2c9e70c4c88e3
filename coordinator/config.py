"""Coordinator settings: one frozen object, read by `helium.config.load_settings`
(flags > HELIUM_* env > TOML [coordinator] > these defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["CoordinatorConfig"]


@dataclass(frozen=True)
class CoordinatorConfig:
    data_dir: Path = Path(".helium/coordinator")
    host: str = "127.0.0.1"
    # gRPC port (TaskService, WorkerService, AdminService, RelayService, health, reflection); 0 picks one.
    port: int = 50051
    # OpenAI-compatible HTTP gateway, pages and /metrics; -1 disables it, 0 picks a port.
    http_port: int = -1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Allow plaintext on a non-loopback address.
    insecure: bool = False
    # The admin credential; empty: read or create <data_dir>/admin.token.
    admin_token: str = ""
    # "embedded" (an EVM persisted in <data_dir>/chain), "none" (no chain: open membership,
    # no deposits, no settlement), or a JSON-RPC URL of an EVM node.
    chain: str = "embedded"
    # Embedded chain: run the EVM in a child process (`python -m chain serve`, JSON-RPC on loopback), so
    # it has a core of its own instead of sharing this process's interpreter lock; false: in this process.
    chain_process: bool = True
    heartbeat_interval_s: float = 5.0
    # Nodes without an assignment heartbeat this seldom (they hold no lease; keepalive watches them).
    idle_heartbeat_interval_s: float = 30.0
    lapse_after_missed: int = 3
    # The most assignments one node may hold at once (it asks for its own number, 1 by default).
    max_assignments_per_node: int = 8
    task_timeout_s: float = 900.0
    queue_capacity: int = 100_000
    # The largest task accepted: its arguments' canonical JSON, in bytes. Larger ones are refused
    # (INVALID_ARGUMENT naming args) before anything is stored or charged.
    max_task_bytes: int = 1 << 20
    min_fee_wei: int = 1
    group_size: int = 3
    quorum: int = 2
    phash_threshold: int = 5
    max_blob_bytes: int = 256 << 20
    # Where workers find the relay; empty: the coordinator's own address (bundled relay).
    relay_address: str = ""
    # The bundled relay removes a blob this long after it was written (swept every relay_sweep_interval_s)...
    relay_retention_s: float = 7 * 86400.0
    # ...and keeps the blobs of a task with slash evidence this long after the evidence was found.
    relay_evidence_retention_s: float = 30 * 86400.0
    relay_sweep_interval_s: float = 600.0
    shutdown_grace_s: float = 10.0
    log_json: bool = False
    log_level: str = "info"
