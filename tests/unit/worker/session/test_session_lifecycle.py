"""Reconnects, the outbox, drain, disconnect and refusals, against a scripted coordinator."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from _session_fakes import DOMAIN, FakeCoordinator, assignment, fast_config, new_key
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helium.v1 import worker_pb2, worker_pb2_grpc
from worker.errors import ConnectError
from worker.session import NodeProfile, WorkerNode
from worker.testing import InstantExecutor, SlowExecutor

pytestmark = pytest.mark.timeout(30)

PROFILE = NodeProfile(card_name="Fake GPU 24GB", vram_bytes=24 << 30, device="cuda:0")


def make_node(fake, tmp_path, executors=None, **overrides) -> WorkerNode:
    return WorkerNode(fast_config(fake.address, tmp_path, **overrides), new_key(),
                      executors or [InstantExecutor("gpt")], profile=PROFILE)


async def test_unacked_result_is_resent_after_reconnect(fake, tmp_path):
    async with make_node(fake, tmp_path) as node:
        first = await fake.next_stream()
        a = assignment()
        first.send(assignment=a)
        r1 = await first.recv("result")
        first.end(grpc.StatusCode.UNAVAILABLE, "coordinator restarting")  # dropped before the ack
        second = await fake.next_stream()  # re-registered on a new challenge
        assert second.nonce != first.nonce and second.info.address == node.address
        r2 = await second.recv("result")
        assert r2 == r1  # the same signed result, unchanged
        assert node.registrations == 2
        second.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
        await asyncio.wait_for(node.jobs.delivered(), 2)
        second.end(grpc.StatusCode.UNAVAILABLE, "again")
        third = await fake.next_stream()
        await third.recv("heartbeat")
        assert not any(m.WhichOneof("msg") == "result" for m in third.seen)  # acked: never sent again


async def test_result_finished_while_disconnected_is_delivered(fake, tmp_path):
    async with make_node(fake, tmp_path, [SlowExecutor(0.6)]) as node:
        first = await fake.next_stream()
        a = assignment()
        first.send(assignment=a)
        await first.recv("started")
        first.end(grpc.StatusCode.UNAVAILABLE, "network blip")  # the task keeps running meanwhile
        second = await fake.next_stream()
        result = await second.recv("result")
        assert result.assignment_id == a.assignment_id
        second.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
        await asyncio.wait_for(node.jobs.delivered(), 2)


async def test_drain_from_coordinator_finishes_delivers_and_closes(fake, tmp_path):
    node = make_node(fake, tmp_path, [SlowExecutor(0.4)])
    run = asyncio.create_task(node.run())
    stream = await fake.next_stream()
    a = assignment()
    stream.send(assignment=a)
    await stream.recv("started")
    stream.send(drain=worker_pb2.Drain(reason="maintenance"))
    result = await stream.recv("result")
    assert result.assignment_id == a.assignment_id
    assert not run.done()  # waits for the ack before leaving
    stream.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
    await asyncio.wait_for(run, 5)  # returns cleanly
    await asyncio.wait_for(stream.closed.wait(), 2)
    assert fake.streams.empty() and fake.attempts == 1  # no reconnect
    assert fake.controls == []  # the coordinator asked: nothing to tell it


async def test_disconnect_stops_without_reconnecting(fake, tmp_path):
    node = make_node(fake, tmp_path)
    run = asyncio.create_task(node.run())
    stream = await fake.next_stream()
    stream.send(disconnect=worker_pb2.Disconnect(state=worker_pb2.NODE_STATE_SLASHED, reason="wrong result on 0xabc"))
    with pytest.raises(ConnectError) as info:
        await asyncio.wait_for(run, 5)
    assert not info.value.retryable
    assert "NODE_STATE_SLASHED" in str(info.value) and "wrong result on 0xabc" in str(info.value)
    await asyncio.sleep(0.3)
    assert fake.attempts == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED])
async def test_refusal_is_not_retried(fake, tmp_path, code):
    fake.refusals = [(code, "address 0x... holds no stake")]
    node = make_node(fake, tmp_path)
    with pytest.raises(ConnectError) as info:
        await asyncio.wait_for(node.run(), 5)
    assert not info.value.retryable and code.name in str(info.value) and "no stake" in str(info.value)
    assert fake.attempts == 1


async def test_unavailable_is_retried_with_backoff_then_registers(fake, tmp_path):
    fake.refusals = [(grpc.StatusCode.UNAVAILABLE, "starting")] * 2
    async with make_node(fake, tmp_path) as node:
        await fake.next_stream()
        assert fake.attempts == 3 and node.registrations == 1


async def test_reconnects_are_bounded(tmp_path):
    # Nothing listens on this port: every attempt fails fast, and the node gives up after 3.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = fast_config(f"127.0.0.1:{port}", tmp_path, reconnect_max_attempts=3,
                      connect_timeout=dt.timedelta(milliseconds=300))
    node = WorkerNode(cfg, new_key(), [InstantExecutor()], profile=PROFILE)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ConnectError) as info:
        await asyncio.wait_for(node.run(), 10)
    assert info.value.retryable and "not reachable" in str(info.value)
    assert loop.time() - t0 < 3


async def test_drain_api_notifies_coordinator_and_waits_for_ack(fake, tmp_path):
    node = make_node(fake, tmp_path, [SlowExecutor(0.3)])
    run = asyncio.create_task(node.run())
    stream = await fake.next_stream()
    a = assignment()
    stream.send(assignment=a)
    await stream.recv("started")
    drain = asyncio.create_task(node.drain("operator"))
    await asyncio.wait_for(fake.control_seen.wait(), 2)
    control = fake.controls[0]
    assert control.action == worker_pb2.NODE_ACTION_QUIT and control.address == node.address  # signature checked
    await stream.recv("result")
    await asyncio.sleep(0.1)
    assert not drain.done()
    stream.send(ack=worker_pb2.Ack(assignment_id=a.assignment_id))
    await asyncio.wait_for(drain, 5)
    await asyncio.wait_for(run, 2)


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "helium-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("coordinator.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    (tmp_path / "ca.pem").write_bytes(cert_pem)
    return cert_pem, key_pem, tmp_path / "ca.pem"


async def test_registers_over_tls(tmp_path):
    cert_pem, key_pem, ca = _self_signed(tmp_path)
    server = grpc.aio.server()
    coordinator = FakeCoordinator()
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(coordinator, server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key_pem, cert_pem)]))
    await server.start()
    try:
        cfg = fast_config(f"127.0.0.1:{port}", tmp_path, tls_ca=ca, tls_server_name="coordinator.test")
        async with WorkerNode(cfg, new_key(), [InstantExecutor()], profile=PROFILE) as node:
            stream = await coordinator.next_stream()
            assert stream.info.address == node.address and node.domain == DOMAIN
    finally:
        await server.stop(grace=None)


async def test_keepalive_pings_keep_an_idle_stream_with_server_keepalive_options(tmp_path):
    # A server with gRPC's defaults answers pings more often than every 5 min with GOAWAY too_many_pings
    # (here after ~3.2 s: 3 strikes of 1 s pings); with server_keepalive_options the idle stream survives.
    from worker.transport import server_keepalive_options

    server = grpc.aio.server(options=server_keepalive_options(dt.timedelta(milliseconds=500)))
    coordinator = FakeCoordinator(heartbeat_ms=60_000)  # no heartbeat data: only pings
    worker_pb2_grpc.add_WorkerServiceServicer_to_server(coordinator, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        cfg = fast_config(f"127.0.0.1:{port}", tmp_path, keepalive_time=dt.timedelta(seconds=1),
                          keepalive_timeout=dt.timedelta(seconds=1))
        async with WorkerNode(cfg, new_key(), [InstantExecutor()], profile=PROFILE) as node:
            await asyncio.sleep(4.5)
            assert node.connected and node.registrations == 1 and coordinator.attempts == 1
    finally:
        await server.stop(grace=None)


async def test_pause_and_resume_are_signed_control_requests(fake, tmp_path):
    async with make_node(fake, tmp_path) as node:
        assert await node.pause() == worker_pb2.NODE_STATE_PAUSED
        assert await node.resume() == worker_pb2.NODE_STATE_AVAILABLE
        assert [c.action for c in fake.controls] == [worker_pb2.NODE_ACTION_PAUSE, worker_pb2.NODE_ACTION_RESUME]
        assert all(c.address == node.address for c in fake.controls)  # signatures checked by the fake
        assert node.state == worker_pb2.NODE_STATE_AVAILABLE
