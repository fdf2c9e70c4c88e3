"""Replay protection survives a restart (issue #14, item 6): a signed request refused as a replay stays
refused after the relay process is killed and started again, within the request's window."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from eth_account import Account
from relay_helpers import TASK

from chain.signing import DEV_DOMAIN
from helium.v1 import relay_pb2, relay_pb2_grpc
from relay._replay import ReplayCache
from relay.auth import GET, build_auth
from relay.client import RelayClient
from relay.errors import AuthenticationError
from tests.support.procs import spawn


def _relay(tmp_path, coordinator: str):
    return spawn(["-m", "relay", "--data-dir", str(tmp_path / "relay"), "--port", "0", "--coordinator-address",
                  coordinator], "relay")  # fmt: skip


async def _get(address: str, request: relay_pb2.GetRequest) -> bytes:
    async with grpc.aio.insecure_channel(address) as ch:
        call = relay_pb2_grpc.RelayServiceStub(ch).Get(request, timeout=10)
        return b"".join([m.chunk async for m in call if m.WhichOneof("part") == "chunk"])


@pytest.mark.slow
async def test_a_replayed_request_is_refused_after_the_relay_is_killed_and_restarted(tmp_path):
    coordinator = Account.create()
    proc = _relay(tmp_path, coordinator.address)
    procs = [proc]
    try:
        address = (await asyncio.to_thread(proc.wait_for, "ready", 60)).split("grpc=")[1].strip()
        async with grpc.aio.insecure_channel(address) as ch:
            await RelayClient(ch, coordinator, DEV_DOMAIN).put(TASK, "input", b"the task's input")
        request = relay_pb2.GetRequest(task_id=TASK, slot="input",
                                       auth=build_auth(coordinator, DEV_DOMAIN, GET, TASK, "input"))  # fmt: skip
        assert await _get(address, request) == b"the task's input"
        with pytest.raises(grpc.aio.AioRpcError) as replay:
            await _get(address, request)
        assert replay.value.code() == grpc.StatusCode.UNAUTHENTICATED and "already used" in replay.value.details()

        proc.kill9()  # no clean shutdown: what the relay knew of its nonces must already be on disk
        proc = _relay(tmp_path, coordinator.address)
        procs.append(proc)
        address = (await asyncio.to_thread(proc.wait_for, "ready", 60)).split("grpc=")[1].strip()
        assert abs(time.time() - request.auth.timestamp) < 60  # still inside the request's window
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await _get(address, request)
        assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED and "already used" in again.value.details()
        fresh = relay_pb2.GetRequest(task_id=TASK, slot="input",
                                     auth=build_auth(coordinator, DEV_DOMAIN, GET, TASK, "input"))  # fmt: skip
        assert await _get(address, fresh) == b"the task's input"  # the blob and the relay are fine
    finally:
        for p in procs:
            p.kill9()


def test_the_nonce_log_keeps_only_unexpired_nonces_and_rotates(tmp_path, monkeypatch):
    path = tmp_path / "nonces"
    cache = ReplayCache(100, path, now=1000.0)
    cache.add(b"a" * 32, expires_at=1100.0, now=1000.0)
    cache.add(b"b" * 32, expires_at=1010.0, now=1000.0)
    cache.close()
    later = ReplayCache(100, path, now=1050.0)  # b's window has closed: forgotten, a's has not
    assert len(later) == 1
    with pytest.raises(AuthenticationError, match="already used"):
        later.add(b"a" * 32, expires_at=1200.0, now=1050.0)
    later.add(b"b" * 32, expires_at=1200.0, now=1050.0)
    later.add(b"c" * 32, expires_at=1300.0, now=1200.0)  # a's log has run out: rotated
    later.add(b"d" * 32, expires_at=1400.0, now=1301.0)  # and again: a, b and c's logs are gone
    assert len(list(path.glob("nonces-*.log"))) == 2
    later.close()
    with (path / sorted(p.name for p in path.glob("nonces-*.log"))[-1]).open("ab") as torn:
        torn.write(b"\x01" * 17)  # a record cut short by a kill: ignored
    again = ReplayCache(100, path, now=1302.0)
    assert len(again) == 1  # d: the others expired
    with pytest.raises(AuthenticationError, match="already used"):
        again.add(b"d" * 32, expires_at=1400.0, now=1302.0)
    again.close()
    memory = ReplayCache(100)  # no path: nothing written, nothing kept
    memory.add(b"a" * 32, expires_at=1100.0, now=1000.0)
    assert len(ReplayCache(100)) == 0
