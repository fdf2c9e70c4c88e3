"""RelayService over a real grpc.aio server: round trips, and every bad input with its status,
a message naming the problem, and nothing stored."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time

import grpc
import pytest
from relay_helpers import OTHER_TASK, TASK, creator_grant, worker_grant

from chain.signing import DEV_DOMAIN
from helium.v1 import relay_pb2
from relay.auth import GET, PUT, ZERO_HASH, build_auth, make_grant
from relay.errors import BlobNotFoundError, PermissionDeniedError
from relay.store import result_slot

CHUNK = 64 << 10


def _put_requests(task: str, slot: str, data: bytes, auth, sha=None, size=None):
    digest = sha if sha is not None else hashlib.sha256(data).hexdigest()
    header = relay_pb2.PutHeader(
        task_id=task, slot=slot, sha256=digest, size=len(data) if size is None else size, auth=auth
    )
    reqs = [relay_pb2.PutRequest(header=header)]
    reqs += [relay_pb2.PutRequest(chunk=data[i : i + CHUNK]) for i in range(0, len(data), CHUNK)]
    return reqs


async def _raw_put(relay, key, task, slot, data, *, grant=None, sha=None, size=None, now=None, auth=None):
    digest = hashlib.sha256(data).digest()
    if sha:
        digest = bytes.fromhex(sha) if len(sha) == 64 else bytes(32)
    auth = auth or build_auth(key, DEV_DOMAIN, PUT, task, slot, digest, grant, now=now)
    return await relay.stub.Put(iter(_put_requests(task, slot, data, auth, sha, size)), timeout=10)


async def _raw_get(relay, key, task, slot, *, grant=None, now=None, auth=None) -> bytes:
    auth = auth or build_auth(key, DEV_DOMAIN, GET, task, slot, ZERO_HASH, grant, now=now)
    parts = [m async for m in relay.stub.Get(relay_pb2.GetRequest(task_id=task, slot=slot, auth=auth), timeout=10)]
    return b"".join(m.chunk for m in parts[1:])


async def _status(coro) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value.code(), err.value.details()


async def _eventually(predicate, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


# --- round trips -------------------------------------------------------------------------------------


async def test_put_get_round_trip_multi_chunk(relay, keys) -> None:
    data = os.urandom(5 * CHUNK + 123)
    coordinator = relay.client(keys.coordinator, chunk_bytes=CHUNK)
    assert await coordinator.put(TASK, "input", data) == hashlib.sha256(data).hexdigest()
    assert await coordinator.get(TASK, "input") == data

    w1 = relay.client(keys.worker1, chunk_bytes=CHUNK)
    grant = worker_grant(keys, keys.worker1)
    assert await w1.get(TASK, "input", grant) == data
    out = os.urandom(3 * CHUNK)
    await w1.put(TASK, result_slot(keys.worker1.address), out, grant)
    await w1.put(TASK, result_slot(keys.worker1.address, 0), b"image 0", grant)
    await w1.put(TASK, "result/" + keys.worker1.address + "/1", b"image 1", grant)  # EIP-55 form, same slot family

    creator = relay.client(keys.creator)
    assert await creator.get(TASK, result_slot(keys.worker1.address), creator_grant(keys)) == out
    assert relay.store.get_bytes(TASK, result_slot(keys.worker1.address, 1)) == b"image 1"
    assert await coordinator.get(TASK, result_slot(keys.worker1.address, 0)) == b"image 0"
    assert relay.temp_files() == []


async def test_in_process_put_is_readable_over_grpc(relay, keys) -> None:
    relay.store.put_bytes(TASK, "input", b'{"prompt": "hi"}')
    assert await relay.client(keys.worker2).get(TASK, "input", worker_grant(keys, keys.worker2)) == b'{"prompt": "hi"}'


async def test_empty_blob_round_trip(relay, keys) -> None:
    c = relay.client(keys.coordinator)
    await c.put(TASK, "input", b"")
    assert await c.get(TASK, "input") == b""


async def test_missing_blob_is_not_found(relay, keys) -> None:
    code, details = await _status(_raw_get(relay, keys.coordinator, TASK, "input"))
    assert code == grpc.StatusCode.NOT_FOUND and "'input'" in details
    with pytest.raises(BlobNotFoundError, match="not written"):
        await relay.client(keys.coordinator).get(TASK, "result/x")


# --- authentication ------------------------------------------------------------------------------------


async def test_replayed_nonce_is_unauthenticated(relay, keys) -> None:
    relay.store.put_bytes(TASK, "input", b"x")
    auth = build_auth(keys.coordinator, DEV_DOMAIN, GET, TASK, "input")
    assert await _raw_get(relay, keys.coordinator, TASK, "input", auth=auth) == b"x"
    code, details = await _status(_raw_get(relay, keys.coordinator, TASK, "input", auth=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "auth.nonce" in details and "already used" in details


async def test_replayed_put_is_unauthenticated_and_stores_nothing(relay, keys) -> None:
    data = b"result bytes"
    auth = build_auth(keys.coordinator, DEV_DOMAIN, PUT, OTHER_TASK, "input", hashlib.sha256(data).digest())
    await _raw_put(relay, keys.coordinator, OTHER_TASK, "input", data, auth=auth)
    # the same signed request again, now aimed at a fresh task store: refused before any storage
    code, details = await _status(_raw_put(relay, keys.coordinator, OTHER_TASK, "input", data, auth=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "already used" in details
    assert relay.nothing_stored(TASK)


@pytest.mark.parametrize("skew", [-120, 120])
async def test_stale_or_future_timestamp_is_unauthenticated(relay, keys, skew) -> None:
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", b"x", now=time.time() + skew))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "auth.timestamp" in details and "outside the 60 s window" in details
    assert relay.nothing_stored()


async def test_bad_signature_is_unauthenticated(relay, keys) -> None:
    data = b"x"
    auth = build_auth(keys.coordinator, DEV_DOMAIN, PUT, TASK, "input", hashlib.sha256(data).digest())
    auth.signature = auth.signature[:10] + bytes([auth.signature[10] ^ 0xFF]) + auth.signature[11:]
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", data, auth=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "auth.signature" in details
    auth.signature = b"\x01" * 10
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", data, auth=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "signature must be 65 bytes" in details
    assert relay.nothing_stored()


async def test_signature_from_wrong_key_is_unauthenticated(relay, keys) -> None:
    data = b"x"
    auth = build_auth(keys.stranger, DEV_DOMAIN, PUT, TASK, "input", hashlib.sha256(data).digest())
    auth.address = keys.coordinator.address  # claims to be the coordinator
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", data, auth=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert f"not by auth.address {keys.coordinator.address}" in details and keys.stranger.address in details
    assert relay.nothing_stored()


async def test_signature_over_other_content_is_unauthenticated(relay, keys) -> None:
    """A valid signature for one hash cannot carry other bytes."""
    auth = build_auth(keys.coordinator, DEV_DOMAIN, PUT, TASK, "input", hashlib.sha256(b"good").digest())
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", b"evil", auth=auth))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "not by auth.address" in details
    assert relay.nothing_stored()


async def test_missing_auth_is_unauthenticated(relay, keys) -> None:
    reqs = _put_requests(TASK, "input", b"x", None)
    code, details = await _status(relay.stub.Put(iter(reqs), timeout=10))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "auth is required" in details
    assert relay.nothing_stored()


# --- content and limits ----------------------------------------------------------------------------------


async def test_blob_larger_than_limit_is_refused_before_storing(relay, keys) -> None:
    big = relay.config.max_blob_bytes + 1
    code, details = await _status(
        _raw_put(relay, keys.coordinator, TASK, "input", b"", sha=hashlib.sha256(b"").hexdigest(), size=big)
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"size {big} exceeds max_blob_bytes {relay.config.max_blob_bytes}" in details
    assert relay.nothing_stored()


async def test_blob_streaming_past_limit_is_refused(relay, keys) -> None:
    limit = relay.config.max_blob_bytes
    data = os.urandom(limit + 1)  # declares the limit, then sends one byte more
    code, details = await _status(
        _raw_put(relay, keys.coordinator, TASK, "input", data, sha=hashlib.sha256(data).hexdigest(), size=limit)
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "exceeds max_blob_bytes" in details
    assert relay.nothing_stored()


async def test_bytes_not_matching_hash_are_refused(relay, keys) -> None:
    data = os.urandom(3 * CHUNK)
    wrong = hashlib.sha256(b"something else").hexdigest()
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", data, sha=wrong))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"do not match declared sha256 {wrong}" in details
    assert relay.nothing_stored()


async def test_bytes_not_matching_size_are_refused(relay, keys) -> None:
    data = b"abcdef"
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", data, size=7))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "declared size is 7" in details
    assert relay.nothing_stored()


@pytest.mark.parametrize("slot", ["../../etc/passwd", "result/../../x", "/etc/passwd", "input/..", "a/.hidden"])
async def test_path_traversal_slot_is_invalid_argument(relay, keys, tmp_path, slot) -> None:
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, slot, b"pwned"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and repr(slot) in details
    code, details = await _status(_raw_get(relay, keys.coordinator, TASK, slot))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and repr(slot) in details
    assert relay.nothing_stored()
    assert not any(p.read_bytes() == b"pwned" for p in tmp_path.rglob("*") if p.is_file())


async def test_bad_task_id_and_header_are_invalid_argument(relay, keys) -> None:
    auth = build_auth(keys.coordinator, DEV_DOMAIN, GET, TASK, "input")
    code, details = await _status(_raw_get(relay, keys.coordinator, "0x1234", "input", auth=auth))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "task_id must be 0x followed by 64 hex digits" in details
    code, details = await _status(relay.stub.Put(iter([relay_pb2.PutRequest(chunk=b"x")]), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "first PutRequest must be a header" in details
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", b"x", sha="nothex"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "header.sha256" in details
    assert relay.nothing_stored()


async def test_second_write_to_same_slot_is_already_exists(relay, keys) -> None:
    c = relay.client(keys.coordinator)
    await c.put(TASK, "input", b"first")
    code, details = await _status(_raw_put(relay, keys.coordinator, TASK, "input", b"second"))
    assert code == grpc.StatusCode.ALREADY_EXISTS and "'input'" in details and "write-once" in details
    assert await c.get(TASK, "input") == b"first" and relay.temp_files() == []


# --- ACL ----------------------------------------------------------------------------------------------------


async def test_worker_reading_another_workers_result_is_permission_denied(relay, keys) -> None:
    w1_slot = result_slot(keys.worker1.address)
    await relay.client(keys.worker1).put(TASK, w1_slot, b"w1 output", worker_grant(keys, keys.worker1))
    code, details = await _status(
        _raw_get(relay, keys.worker2, TASK, w1_slot, grant=worker_grant(keys, keys.worker2))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and f"Get of slot {w1_slot!r}" in details


async def test_worker_writing_another_workers_slot_or_input_is_permission_denied(relay, keys) -> None:
    grant = worker_grant(keys, keys.worker2)
    for slot in (result_slot(keys.worker1.address), "input", result_slot(keys.worker2.address) + "x"):
        code, details = await _status(_raw_put(relay, keys.worker2, TASK, slot, b"forged", grant=grant))
        assert code == grpc.StatusCode.PERMISSION_DENIED and f"Put of slot {slot!r}" in details
    assert relay.nothing_stored()


async def test_no_grant_is_permission_denied(relay, keys) -> None:
    relay.store.put_bytes(TASK, "input", b"x")
    code, details = await _status(_raw_get(relay, keys.stranger, TASK, "input"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "presented no grant" in details
    code, details = await _status(_raw_put(relay, keys.stranger, TASK, result_slot(keys.stranger.address), b"x"))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "presented no grant" in details
    assert relay.store.list_slots(TASK) == ["input"]


async def test_expired_grant_is_permission_denied(relay, keys) -> None:
    grant = worker_grant(keys, keys.worker1, expires_in=-1)
    code, details = await _status(
        _raw_put(relay, keys.worker1, TASK, result_slot(keys.worker1.address), b"x", grant=grant)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "grant expired at" in details
    assert relay.nothing_stored()


async def test_grant_for_another_task_is_permission_denied(relay, keys) -> None:
    grant = worker_grant(keys, keys.worker1, task=OTHER_TASK)
    code, details = await _status(
        _raw_put(relay, keys.worker1, TASK, result_slot(keys.worker1.address), b"x", grant=grant)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and f"grant is for task {OTHER_TASK}" in details
    assert relay.nothing_stored()


async def test_grant_not_signed_by_coordinator_is_permission_denied(relay, keys) -> None:
    forged = worker_grant(keys, keys.worker1, signer=keys.worker1)
    code, details = await _status(
        _raw_put(relay, keys.worker1, TASK, result_slot(keys.worker1.address), b"x", grant=forged)
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not by the coordinator" in details
    tampered = worker_grant(keys, keys.worker1)
    tampered.write_slots.append("input")  # widening a real grant breaks its signature
    code, details = await _status(_raw_put(relay, keys.worker1, TASK, "input", b"x", grant=tampered))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "not by the coordinator" in details
    assert relay.nothing_stored()


async def test_stolen_grant_is_permission_denied(relay, keys) -> None:
    """worker2 presents worker1's grant under its own signature."""
    code, details = await _status(
        _raw_put(relay, keys.worker2, TASK, result_slot(keys.worker1.address), b"x", grant=worker_grant(keys, keys.worker1))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and "is not the caller" in details
    assert relay.nothing_stored()


async def test_client_raises_relay_errors(relay, keys) -> None:
    with pytest.raises(PermissionDeniedError, match="presented no grant"):
        await relay.client(keys.stranger).get(TASK, "input")
    grant = make_grant(keys.coordinator, DEV_DOMAIN, TASK, keys.stranger.address, ["input"], [], int(time.time()) + 60)
    with pytest.raises(BlobNotFoundError):
        await relay.client(keys.stranger).get(TASK, "input", grant)


# --- atomicity -------------------------------------------------------------------------------------------------


async def test_cancelled_put_leaves_no_temp_file(relay, keys) -> None:
    data = os.urandom(CHUNK)
    release = asyncio.Event()

    async def stalling():
        auth = build_auth(keys.coordinator, DEV_DOMAIN, PUT, TASK, "input", hashlib.sha256(data * 2).digest())
        header = relay_pb2.PutHeader(task_id=TASK, slot="input", sha256=hashlib.sha256(data * 2).hexdigest(),
                                     size=2 * len(data), auth=auth)  # fmt: skip
        yield relay_pb2.PutRequest(header=header)
        yield relay_pb2.PutRequest(chunk=data)
        await release.wait()

    call = relay.stub.Put(stalling(), timeout=10)
    assert await _eventually(lambda: relay.temp_files() != []), "the write should be staged while the stream is open"
    call.cancel()
    release.set()
    assert await _eventually(relay.nothing_stored)
