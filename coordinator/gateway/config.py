"""Gateway settings (flags > HELIUM_* env > TOML [gateway] > defaults, via `helium.config`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

__all__ = ["GatewaySettings"]


@dataclass(frozen=True)
class GatewaySettings:
    # Where the gateway keeps its creator key (gateway/creator.key) and API keys (gateway/keys.sqlite).
    data_dir: Path = Path("~/.helium").expanduser()
    host: str = "127.0.0.1"
    # 0 picks a free port; the bound one is reported by `GatewayServer.port`.
    http_port: int = 8080
    # The coordinator's gRPC address (standalone gateway); the coordinator passes its own when embedding.
    coordinator: str = "127.0.0.1:7070"
    # Admin credential for the network page's read-only data (AdminService List*/GetStats).
    admin_token: str = ""
    # Fee per request when the request names none; never below the network's min_fee.
    default_fee_wei: int = 10**15
    # Each task's deadline (after it, the task may not be settled).
    task_deadline: timedelta = timedelta(minutes=15)
    # How long one HTTP request waits for its validated answer.
    request_timeout: timedelta = timedelta(minutes=5)
    # Deadline of each unary coordinator RPC.
    rpc_timeout: timedelta = timedelta(seconds=10)
    # Rate limit given to keys created without one.
    default_rate_per_min: int = 60
    # Refuse (503) a model that no available node has loaded or cached (ListModels), before any fee is
    # reserved; off, such a task is sent and fails on the nodes.
    require_listed_model: bool = True
    models_cache_s: float = 5.0
    # POST /v1/images/generations runs SD tasks; off, it answers 501.
    images_enabled: bool = True
    # How many images served as URLs (response_format=url) the gateway keeps in memory.
    image_url_cache: int = 256
    # How long an image URL (signed, HMAC) stays good.
    image_url_ttl: timedelta = timedelta(hours=1)
    # A client address that sends this many bad API keys within a minute is refused (429) for auth_lockout.
    auth_max_failures: int = 10
    auth_lockout: timedelta = timedelta(minutes=1)
    # Reverse proxies in front of the gateway (their addresses): behind one of them, the client address (for
    # the bad-key lockout) is the one it forwards (X-Forwarded-For); from anyone else that header is ignored.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)
    # Refuse requests without a valid API key (the only sane setting outside tests).
    require_api_key: bool = True
    # CA certificate of the coordinator's TLS; plaintext is allowed to loopback or with `insecure`.
    tls_ca: Path | None = None
    insecure: bool = False
    creator_key_file: Path | None = None
    keys_db: Path | None = None

    @property
    def creator_key_path(self) -> Path:
        """The gateway wallet's key file (0600; `chain.signing.load_or_create_key`)."""
        return self.creator_key_file or Path(self.data_dir).expanduser() / "gateway" / "creator.key"

    @property
    def keys_db_path(self) -> Path:
        return self.keys_db or Path(self.data_dir).expanduser() / "gateway" / "keys.sqlite"
