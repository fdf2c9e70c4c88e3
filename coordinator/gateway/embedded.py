"""The gateway inside the coordinator process (`helium coordinator --http-port`, `helium dev`).

It is the same gateway as the standalone one: it reaches the coordinator over
gRPC on the coordinator's own port (loopback when the coordinator listens on
every interface), with the admin token for the network page. Its wallet and
API keys live in `<coordinator data dir>/gateway/`.
"""

from __future__ import annotations

from typing import Any

from coordinator.gateway.app import GatewayServer, serve_gateway
from coordinator.gateway.config import GatewaySettings
from helium.config import load_settings

__all__ = ["embedded_settings", "start_embedded_gateway"]

_ANY = ("0.0.0.0", "::", "[::]", "")


def embedded_settings(app: Any) -> GatewaySettings:
    """Gateway settings for a `CoordinatorApp`: its data dir, host, http port, gRPC port, TLS and admin token
    win; everything else comes from HELIUM_* / TOML [gateway] / defaults."""
    c = app.config
    host = "127.0.0.1" if c.host in _ANY else c.host
    target = f"[{host}]:{app.port}" if ":" in host else f"{host}:{app.port}"
    flags = {"data_dir": c.data_dir, "host": c.host, "http_port": c.http_port, "coordinator": target,
             "admin_token": app.admin_token, "tls_ca": c.tls_cert, "insecure": c.insecure}
    return load_settings(GatewaySettings, flags, section="gateway")


async def start_embedded_gateway(app: Any) -> GatewayServer:
    """Starts the gateway for a started `CoordinatorApp`; returns it (`.address`, `.port`, `await .stop()`)."""
    return await serve_gateway(embedded_settings(app))
