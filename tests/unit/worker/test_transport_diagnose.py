"""Why a worker could not connect, from one probe (worker.transport.diagnose_unreachable), against real
sockets on loopback: refused, an HTTP/1 server, a TLS server reached in plaintext, a certificate from
another CA, a name that does not resolve. The same cases across hosts: tests/hosts/test_tls.py."""

from __future__ import annotations

import asyncio
import socket
import ssl

from tests.hosts.pki import Pki
from worker.transport import diagnose_unreachable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _serve(handler, ssl_ctx=None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_ctx)
    return server, server.sockets[0].getsockname()[1]


async def _http1(reader, writer):
    await reader.read(100)
    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    await asyncio.sleep(5)
    writer.close()


async def _idle(reader, writer):
    await asyncio.sleep(5)
    writer.close()


async def test_refused_port_is_named_and_retryable():
    err = await diagnose_unreachable(f"127.0.0.1:{_free_port()}", tls_ca=None, server_name=None, waited_s=1)
    assert "connection refused" in str(err) and err.retryable


async def test_http1_server_is_not_grpc_and_not_retried():
    server, port = await _serve(_http1)
    async with server:
        err = await diagnose_unreachable(f"127.0.0.1:{port}", tls_ca=None, server_name=None, waited_s=1)
    assert "'HTTP/1.1 400 Bad Request', which is HTTP/1, not gRPC" in str(err) and not err.retryable


async def test_plaintext_to_a_tls_server_says_give_tls_ca(tmp_path):
    pki = Pki(tmp_path)
    cert, key = pki.issue("coord", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server, port = await _serve(_idle, ctx)
    async with server:
        err = await diagnose_unreachable(f"127.0.0.1:{port}", tls_ca=None, server_name=None, waited_s=1)
        assert "speaks TLS" in str(err) and "give --tls-ca" in str(err) and not err.retryable
        other = Pki(tmp_path / "other", "other-ca")
        err = await diagnose_unreachable(f"127.0.0.1:{port}", tls_ca=other.ca_path, server_name=None, waited_s=1)
        assert f"not trusted with --tls-ca {other.ca_path}" in str(err) and not err.retryable
        ok = await diagnose_unreachable(f"127.0.0.1:{port}", tls_ca=pki.ca_path, server_name=None, waited_s=1)
        assert "not HTTP/2" in str(ok)  # trusted, but no h2 ALPN: not a gRPC server


async def test_unresolvable_name_is_named_and_retryable():
    err = await diagnose_unreachable("nowhere.invalid:50051", tls_ca=None, server_name=None, waited_s=1)
    assert ("cannot resolve host 'nowhere.invalid'" in str(err) or "resolving host" in str(err)) and err.retryable
