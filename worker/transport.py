"""gRPC channels from the worker to the coordinator and the relay.

TLS is the default across networks: `tls_ca` gives the CA bundle that signed
the server's certificate. Plaintext is allowed only to a loopback host, or
when the operator says `insecure` explicitly; anything else is refused before
a byte is sent.

Keepalive pings keep NATs and load balancers from dropping an idle stream, and
let a dead peer be noticed within keepalive_time + keepalive_timeout. The
server must permit them: it needs `grpc.http2.min_recv_ping_interval_without_data_ms`
(and `grpc.http2.min_ping_interval_without_data_ms`) at or below the client's
keepalive time, and `grpc.keepalive_permit_without_calls` = 1; see
`server_keepalive_options`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import grpc

from helium.net import is_loopback
from relay.config import grpc_options as relay_grpc_options
from worker.errors import ConnectError

__all__ = [
    "channel_options",
    "is_loopback",
    "make_channel",
    "server_keepalive_options",
    "split_host_port",
]

_MAX_MESSAGE = 64 << 20


def split_host_port(target: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port). Raises ValueError naming the target."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


def channel_options(
    keepalive_time: timedelta = timedelta(seconds=30),
    keepalive_timeout: timedelta = timedelta(seconds=10),
    server_name: str | None = None,
) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.keepalive_time_ms", int(keepalive_time.total_seconds() * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout.total_seconds() * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Our own jittered backoff decides when to retry; keep gRPC's from stacking on top of it.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        # One stream per node: never share a TCP connection between nodes of this process.
        ("grpc.use_local_subchannel_pool", 1),
        # Relay blobs move in MiB chunks: large HTTP/2 frames and a per-stream window of a few chunks.
        *[(k, v) for k, v in relay_grpc_options() if k.startswith("grpc.http2.")],
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def server_keepalive_options(min_client_ping: timedelta = timedelta(seconds=10)) -> list[tuple[str, int]]:
    """What a server must set to accept this worker's keepalive pings (without them it answers
    too-frequent pings with GOAWAY, which drops the stream)."""
    ms = int(min_client_ping.total_seconds() * 1000)
    return [
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms),
        ("grpc.http2.min_ping_interval_without_data_ms", ms),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def make_channel(
    target: str,
    *,
    tls_ca: str | Path | None = None,
    insecure: bool = False,
    server_name: str | None = None,
    keepalive_time: timedelta = timedelta(seconds=30),
    keepalive_timeout: timedelta = timedelta(seconds=10),
) -> grpc.aio.Channel:
    """A grpc.aio channel to `target` (HOST:PORT): TLS with `tls_ca`, else plaintext on loopback or
    with `insecure`. Raises ConnectError (not retryable) for plaintext to another host or an unreadable CA."""
    options = channel_options(keepalive_time, keepalive_timeout, server_name)
    if tls_ca is not None:
        try:
            root = Path(tls_ca).expanduser().read_bytes()
        except OSError as exc:
            raise ConnectError(f"tls_ca {tls_ca}: {exc.strerror or exc}", retryable=False) from exc
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=root), options)
    try:
        host, _ = split_host_port(target)
    except ValueError as exc:
        raise ConnectError(str(exc), retryable=False) from exc
    if not insecure and not is_loopback(host):
        raise ConnectError(
            f"refusing plaintext gRPC to {target}: {host} is not a loopback host; "
            "pass --tls-ca FILE for TLS, or --insecure to send plaintext anyway",
            retryable=False,
        )
    return grpc.aio.insecure_channel(target, options)
