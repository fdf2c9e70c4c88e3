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

import asyncio
import contextlib
import socket
import ssl
from datetime import timedelta
from pathlib import Path

import grpc

from helium.net import is_loopback
from relay.config import grpc_options as relay_grpc_options
from worker.errors import ConnectError

__all__ = [
    "channel_options",
    "diagnose_unreachable",
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


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


async def diagnose_unreachable(target: str, *, tls_ca: str | Path | None, server_name: str | None,
                               waited_s: float, probe_timeout_s: float = 5.0) -> ConnectError:
    """Why `target` gave no gRPC channel within `waited_s`, found by probing it once: the name does not
    resolve, nothing listens, nothing answers (a partition, a firewall's DROP), the certificate is not
    signed by `tls_ca`, the server speaks TLS to a plaintext client (or the reverse), or it is not a gRPC
    server at all. Refusals that retrying cannot mend (certificates, TLS mismatch, not gRPC) are not
    retryable; the rest are, within the reconnect bounds."""
    head = f"coordinator {target} not reachable within {waited_s:g}s"
    try:
        host, port = split_host_port(target)
    except ValueError as exc:
        return ConnectError(str(exc), retryable=False)
    try:
        return await asyncio.wait_for(_probe(head, host, port, tls_ca, server_name, probe_timeout_s),
                                      probe_timeout_s * 2)  # fmt: skip
    except TimeoutError:
        return ConnectError(f"{head}: the probe got no answer within {probe_timeout_s * 2:g}s")


async def _probe(head: str, host: str, port: int, tls_ca, server_name, timeout: float) -> ConnectError:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except TimeoutError:
        return ConnectError(f"{head}: resolving host {host!r} timed out after {timeout:g}s (DNS)")
    except socket.gaierror as exc:
        return ConnectError(f"{head}: cannot resolve host {host!r} ({exc.strerror}); check the name and this "
                            "host's DNS")  # fmt: skip
    addr = infos[0][4][0]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(addr, port), timeout)
    except TimeoutError:
        return ConnectError(f"{head}: no answer from {addr}:{port} within {timeout:g}s (the host is down, a "
                            "firewall drops the packets, or the network is partitioned)")  # fmt: skip
    except ConnectionRefusedError:
        return ConnectError(f"{head}: connection refused by {addr}:{port} (nothing listens on that port)")
    except OSError as exc:
        return ConnectError(f"{head}: cannot connect to {addr}:{port}: {exc.strerror or exc}")
    try:
        if tls_ca is not None:
            return await _probe_tls(head, host, reader, writer, tls_ca, server_name, timeout)
        return await _probe_plaintext(head, host, port, reader, writer, timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


async def _probe_tls(head, host, reader, writer, tls_ca, server_name, timeout) -> ConnectError:
    ctx = ssl.create_default_context(cafile=str(Path(tls_ca).expanduser()))
    ctx.set_alpn_protocols(["h2"])
    try:
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname=server_name or host), timeout)
    except ssl.SSLCertVerificationError as exc:
        return ConnectError(f"{head}: TLS refused: its certificate is not trusted with --tls-ca {tls_ca} "
                            f"({exc.verify_message}); the coordinator's certificate must be signed by that CA "
                            "and name the host (or give --tls-server-name)", retryable=False)  # fmt: skip
    except ssl.SSLError as exc:
        return ConnectError(f"{head}: TLS handshake failed ({exc.reason or exc}): the server does not speak TLS; "
                            "is it a Helium coordinator, serving with --tls-cert?", retryable=False)  # fmt: skip
    except TimeoutError:
        return ConnectError(f"{head}: the TLS handshake got no answer within {timeout:g}s")
    except (ConnectionError, OSError) as exc:
        return ConnectError(f"{head}: the server closed the TLS handshake ({exc}): does it speak TLS?",
                            retryable=False)  # fmt: skip
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is not None and ssl_object.selected_alpn_protocol() != "h2":
        return ConnectError(f"{head}: the server speaks TLS but not HTTP/2 (ALPN {ssl_object.selected_alpn_protocol()!r}):"
                            " it is not a gRPC server; is it a Helium coordinator?", retryable=False)  # fmt: skip
    return ConnectError(f"{head}: TCP and TLS work (certificate trusted), yet gRPC did not connect")


async def _probe_plaintext(head, host, port, reader, writer, timeout) -> ConnectError:
    writer.write(_H2_PREFACE)
    try:
        await writer.drain()
        first = await asyncio.wait_for(reader.read(64), timeout)
    except TimeoutError:
        return ConnectError(f"{head}: the server sent nothing back to the HTTP/2 preface within {timeout:g}s: "
                            "is it a gRPC server?", retryable=False)  # fmt: skip
    except (ConnectionError, OSError):
        first = b""
    if first.startswith(b"HTTP/"):
        line = first.split(b"\r\n", 1)[0].decode("latin-1")
        return ConnectError(f"{head}: it answered {line!r}, which is HTTP/1, not gRPC: is it a Helium "
                            "coordinator?", retryable=False)  # fmt: skip
    if len(first) >= 9 and first[3] == 4:  # an HTTP/2 SETTINGS frame: a plaintext gRPC server
        return ConnectError(f"{head}: TCP and HTTP/2 work, yet gRPC did not connect")
    if not first and await _speaks_tls(host, port, timeout):
        return ConnectError(f"{head}: the server speaks TLS and closed the plaintext connection; give --tls-ca "
                            "FILE (the CA that signed its certificate) instead of --insecure", retryable=False)  # fmt: skip
    return ConnectError(f"{head}: it answered {first[:16]!r} to the HTTP/2 preface: is it a gRPC server?",
                        retryable=False)  # fmt: skip


async def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout)
    except (OSError, ssl.SSLError, TimeoutError):
        return False
    writer.close()
    return True
