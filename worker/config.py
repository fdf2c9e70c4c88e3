"""The worker's settings: one frozen object, read by `helium.config.load_settings`.

Precedence, highest first: command-line flags, `HELIUM_<FIELD>` environment
variables, the `[worker]` table of the TOML file (`--config` or `HELIUM_CONFIG`),
then the defaults below. Durations are `timedelta` (seconds in env and TOML).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

__all__ = ["EXECUTOR_KINDS", "WorkerConfig"]

# "real": the GPT / SD executors of worker.executors. Test doubles that run no model at all
# (tests, simulations and benchmarks only): "instant" (worker.testing.InstantExecutor, honest) and
# "lying" (worker.testing.LyingExecutor, returns hashes no honest node produces).
EXECUTOR_KINDS = ("real", "instant", "lying")


def _default_data_dir() -> Path:
    return Path.home() / ".helium" / "worker"


@dataclass(frozen=True)
class WorkerConfig:
    # HOST:PORT of the coordinator's gRPC server.
    coordinator: str = "127.0.0.1:50051"
    # Keys live in <data_dir>/keys/node-<gpu>.key.
    data_dir: Path = field(default_factory=_default_data_dir)
    # CUDA device indexes served by this process, one node each; empty: device 0 only.
    gpus: tuple[int, ...] = ()
    # Forces the device kind ("cuda", "mps", "cpu"); None: cuda > mps > cpu.
    device: str | None = None
    # GPT backend: "transformers" or "vllm".
    backend: str = "transformers"
    # Memory the model cache may hold, in bytes; 0: the executor's own default.
    model_budget_bytes: int = 0
    executor: str = "real"
    # Test doubles only: how long each instant/lying task takes.
    instant_delay: timedelta = timedelta(0)
    # Used when the coordinator's Registered message names no interval.
    heartbeat_interval: timedelta = timedelta(seconds=5)
    # Bounds one connection attempt: channel ready, then hello/challenge/register/registered.
    connect_timeout: timedelta = timedelta(seconds=10)
    # Jittered exponential backoff between attempts, and its bounds.
    reconnect_initial: timedelta = timedelta(milliseconds=500)
    reconnect_max: timedelta = timedelta(seconds=30)
    reconnect_max_attempts: int = 30
    reconnect_max_time: timedelta = timedelta(minutes=10)
    # gRPC HTTP/2 keepalive pings on an idle connection.
    keepalive_time: timedelta = timedelta(seconds=30)
    keepalive_timeout: timedelta = timedelta(seconds=10)
    # On drain: how long the current task may take to finish, then how long to wait for its ack.
    drain_timeout: timedelta = timedelta(minutes=15)
    ack_timeout: timedelta = timedelta(seconds=15)
    # A task still running after this long is reported Started (the coordinator shows it RUNNING);
    # one that finishes sooner goes straight to its Result, which saves a stream message per task.
    started_report_after: timedelta = timedelta(milliseconds=100)
    # Deadline of one relay or ControlNode call.
    rpc_timeout: timedelta = timedelta(seconds=60)
    # How many assignments the node asks to hold at once: the running one and those queued behind it,
    # so the next task is already here when one finishes (the coordinator may allow fewer).
    max_assignments: int = 1
    # Keep each result on disk (<data_dir>/outbox, fsynced before it is sent) until the coordinator
    # acknowledges it, so a killed worker delivers it after its restart. Off: memory only (simulations).
    durable_results: bool = True
    # While the relay is full, an output upload is tried again after this, doubling up to the max, until
    # the assignment's deadline (the node keeps the assignment: a full relay is never the node's fault).
    relay_full_retry_initial: timedelta = timedelta(seconds=1)
    relay_full_retry_max: timedelta = timedelta(seconds=30)
    # Outputs larger than this go to the relay instead of travelling inline.
    max_inline_output_bytes: int = 1 << 20
    # GPT outputs (text and token ids) travel inline up to this, so that the coordinator can recompute their
    # result hash before accepting them; it refuses inline outputs over 8 MiB.
    max_inline_gpt_output_bytes: int = 7 << 20
    # PEM bundle of the CA that signed the coordinator's (and relay's) certificate.
    tls_ca: Path | None = None
    # Overrides the host name checked against the certificate (tests, IP-only hosts).
    tls_server_name: str | None = None
    # Allows plaintext to a non-loopback host. Never needed on loopback.
    insecure: bool = False
    log_json: bool = False
    log_level: str = "info"
    # Serves Prometheus metrics on metrics_host:metrics_port; port 0: off.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.executor not in EXECUTOR_KINDS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTOR_KINDS)}, got {self.executor!r}")
        if not 1 <= self.max_assignments <= 64:
            raise ValueError(f"max_assignments must be in [1, 64], got {self.max_assignments}")
        if self.device is not None and self.device not in ("cuda", "mps", "cpu"):
            raise ValueError(f"device must be cuda, mps or cpu, got {self.device!r}")
        if self.backend not in ("transformers", "vllm"):
            raise ValueError(f"backend must be transformers or vllm, got {self.backend!r}")
        if self.instant_delay < timedelta(0):
            raise ValueError(f"instant_delay must be >= 0, got {self.instant_delay}")
        if any(g < 0 for g in self.gpus):
            raise ValueError(f"gpus must be device indexes >= 0, got {self.gpus}")
        if len(set(self.gpus)) != len(self.gpus):
            raise ValueError(f"gpus must not repeat an index, got {self.gpus}")
        if ":" not in self.coordinator.strip("[]") and not self.coordinator.startswith("unix:"):
            raise ValueError(f"coordinator must be HOST:PORT, got {self.coordinator!r}")
        for name in ("heartbeat_interval", "connect_timeout", "reconnect_initial", "reconnect_max",
                     "reconnect_max_time", "keepalive_time", "keepalive_timeout", "drain_timeout",
                     "ack_timeout", "rpc_timeout", "relay_full_retry_initial", "relay_full_retry_max"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.reconnect_max_attempts < 1:
            raise ValueError(f"reconnect_max_attempts must be >= 1, got {self.reconnect_max_attempts}")

    @property
    def keys_dir(self) -> Path:
        return Path(self.data_dir).expanduser() / "keys"

    def key_path(self, gpu: int) -> Path:
        return self.keys_dir / f"node-{gpu}.key"
