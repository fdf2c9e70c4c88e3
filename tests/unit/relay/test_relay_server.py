"""`helium relay` as its own process, and the standalone server's TLS and loopback rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import signal
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from relay_helpers import TASK, worker_grant

from chain.signing import DEV_DOMAIN
from relay.client import RelayClient
from relay.config import RelayConfig
from relay.server import start_standalone
from relay.store import result_slot

REPO = Path(__file__).resolve().parents[3]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_standalone_process_serves_health_reflection_and_blobs(tmp_path, keys) -> None:
    cmd = [sys.executable, "-m", "relay", "--port", "0", "--data-dir", str(tmp_path / "blobs")]
    cmd += ["--coordinator-address", keys.coordinator.address]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELIUM_")}
    env["PYTHONPATH"] = str(REPO)
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=60)).decode()
        assert line.startswith("ready grpc=127.0.0.1:"), (line, proc.returncode)
        address = line.split("=", 1)[1].strip()
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="helium.v1.RelayService"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            stream = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
            services = {s.name async for r in stream for s in r.list_services_response.service}
            assert {"helium.v1.RelayService", "grpc.health.v1.Health"} <= services

            coordinator = RelayClient(channel, keys.coordinator, DEV_DOMAIN)
            await coordinator.put(TASK, "input", b"prompt")
            worker = RelayClient(channel, keys.worker1, DEV_DOMAIN)
            grant = worker_grant(keys, keys.worker1)
            assert await worker.get(TASK, "input", grant) == b"prompt"
            await worker.put(TASK, result_slot(keys.worker1.address), b"answer", grant)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_cli_refuses_bad_settings(tmp_path) -> None:
    from relay.__main__ import main

    assert main(["--data-dir", str(tmp_path), "--coordinator-address", "nope"]) == 2


async def test_plaintext_refused_off_loopback(tmp_path, keys) -> None:
    config = RelayConfig(data_dir=tmp_path, coordinator_address=keys.coordinator.address, host="0.0.0.0", port=0)
    with pytest.raises(ValueError, match="host 0.0.0.0 is not loopback: give --tls-cert and --tls-key, or --insecure"):
        await start_standalone(config)


async def test_tls_round_trip(tmp_path, keys) -> None:
    cert, key = _self_signed(tmp_path)
    config = RelayConfig(
        data_dir=tmp_path / "blobs",
        coordinator_address=keys.coordinator.address,
        host="127.0.0.1",
        port=0,
        tls_cert=cert,
        tls_key=key,
    )
    relay = await start_standalone(config)
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(relay.address, creds) as channel:
            client = RelayClient(channel, keys.coordinator, DEV_DOMAIN)
            await client.put(TASK, "input", b"over tls")
            assert await client.get(TASK, "input") == b"over tls"
        async with grpc.aio.insecure_channel(relay.address) as plain:
            started = time.monotonic()
            with pytest.raises(Exception):  # noqa: B017 - a plaintext client cannot talk to a TLS port
                await RelayClient(plain, keys.coordinator, DEV_DOMAIN, attempts=1, timeout=dt.timedelta(seconds=2)).get(
                    TASK, "input"
                )
            assert time.monotonic() - started < 10
    finally:
        await relay.stop()
