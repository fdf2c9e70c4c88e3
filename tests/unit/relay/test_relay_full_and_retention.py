"""A full relay answers RESOURCE_EXHAUSTED with reason relay_full (store, gRPC, client), and blobs are swept
after the retention period unless their task is pinned as evidence (issue #14, item 5).

The full-disk tests write to a real 3 MiB tmpfs mounted under the test's directory (root only: skipped
with the reason where `mount` is refused)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from eth_account import Account
from relay_helpers import TASK

from chain.signing import DEV_DOMAIN
from helium.v1 import relay_pb2, relay_pb2_grpc
from relay.auth import PUT, build_auth
from relay.client import RelayClient
from relay.config import RelayConfig, grpc_options
from relay.errors import ResourceLimitError, StorageFullError, error_from_status
from relay.server import start_standalone
from relay.store import FilesystemBlobStore
from tests.support.tmpfs import fill, tmpfs

OTHER = "0x" + "6b" * 32
THIRD = "0x" + "7c" * 32
DAY = 86400.0


def _age(store: FilesystemBlobStore, task: str, seconds: float) -> None:
    """Makes every blob of `task` look written `seconds` ago."""
    when = time.time() - seconds
    for p in store.root.glob(f"{task[2:4]}/{task[2:]}+*.blob"):
        os.utime(p, (when, when))


def test_full_disk_is_storage_full_up_front_and_midway_and_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "blobs") as root:
        store = FilesystemBlobStore(root, 8 << 20)
        try:
            store.put_bytes(TASK, "input", os.urandom(2 << 20))
            with pytest.raises(StorageFullError, match="storage is full") as refused:
                store.begin_write(OTHER, "input", hashlib.sha256(b"x").digest(), 2 << 20)  # does not fit: at once
            assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and refused.value.reason == "relay_full"
            # Two writes that each fit the free space, together not: the second runs into ENOSPC midway.
            free = store.free_bytes()
            size = free * 3 // 4
            data = [os.urandom(size), os.urandom(size)]
            writers = [store.begin_write(t, "input", hashlib.sha256(d).digest(), size) for t, d in zip((OTHER, THIRD), data, strict=True)]  # noqa: E501
            writers[0].write(data[0])
            with pytest.raises(StorageFullError):
                writers[1].write(data[1])
                writers[1].commit()
            writers[0].commit()
            assert store.get_bytes(OTHER, "input") == data[0]
            assert not store.exists(THIRD, "input") and list((root / ".tmp").iterdir()) == []
            # Room again (the sweep removed old blobs): the same write goes through.
            _age(store, TASK, 8 * DAY)
            _age(store, OTHER, 8 * DAY)
            assert store.sweep(7 * DAY) == 2
            assert store.put_bytes(THIRD, "input", data[1]).size == size
        finally:
            store.close()


async def test_full_relay_over_grpc_is_resource_exhausted_with_reason_relay_full(tmp_path: Path) -> None:
    coordinator = Account.create()
    with tmpfs(tmp_path / "relay") as root:
        config = RelayConfig(data_dir=root, coordinator_address=coordinator.address, max_blob_bytes=8 << 20, port=0)
        relay = await start_standalone(config)
        try:
            fill(root, 64 << 10)
            opts = grpc_options(config.chunk_bytes)
            async with grpc.aio.insecure_channel(relay.address, options=opts) as ch:
                client = RelayClient(ch, coordinator, DEV_DOMAIN)
                with pytest.raises(StorageFullError, match="RESOURCE_EXHAUSTED"):
                    await client.put(TASK, "input", os.urandom(256 << 10))
                # On the wire: the status and the reason a client tells it by (no message parsing).
                data = os.urandom(128 << 10)
                digest = hashlib.sha256(data).digest()
                auth = build_auth(coordinator, DEV_DOMAIN, PUT, TASK, "input", digest)
                header = relay_pb2.PutHeader(task_id=TASK, slot="input", sha256=digest.hex(), size=len(data), auth=auth)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await relay_pb2_grpc.RelayServiceStub(ch).Put(iter([relay_pb2.PutRequest(header=header)]))
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert ("helium-reason", "relay_full") in tuple(err.value.trailing_metadata())
                # A blob over max_blob_bytes is RESOURCE_EXHAUSTED too, but not "full": waiting cannot help.
                too_big = error_from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "x", "resource_limit")
                assert isinstance(too_big, ResourceLimitError) and not isinstance(too_big, StorageFullError)
        finally:
            await relay.stop()


def test_sweep_removes_expired_blobs_and_keeps_pinned_and_fresh_ones(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path, 1 << 20)
    for task in (TASK, OTHER, THIRD):
        store.put_bytes(task, "input", b"in")
        store.put_bytes(task, "result/0xaa/0", b"image")
    _age(store, TASK, 8 * DAY)
    _age(store, OTHER, 8 * DAY)
    now = time.time()
    assert store.pin_task(OTHER, now + DAY) == pytest.approx(now + DAY, abs=1)
    assert store.pin_task(OTHER, now + 10) == pytest.approx(now + DAY, abs=1)  # a pin is never shortened
    assert store.sweep(7 * DAY, now) == 2
    assert store.list_slots(TASK) == []  # expired
    assert store.list_slots(OTHER) == ["input", "result/0xaa/0"]  # evidence: pinned
    assert store.list_slots(THIRD) == ["input", "result/0xaa/0"]  # fresh
    assert not list(tmp_path.glob(f"{TASK[2:4]}/{TASK[2:]}*"))  # sidecars gone with their blobs
    reopened = FilesystemBlobStore(tmp_path, 1 << 20)  # the pin is on disk, not in memory
    assert reopened.pinned_until(OTHER) == pytest.approx(now + DAY, abs=1)
    assert reopened.sweep(7 * DAY, now + 2 * DAY) == 2  # the pin ran out
    assert reopened.list_slots(OTHER) == [] and reopened.pinned_until(OTHER) == 0.0
    assert reopened.list_slots(THIRD) == ["input", "result/0xaa/0"]
    store.close()
    reopened.close()


async def test_standalone_relay_sweeps_expired_blobs_in_the_background(tmp_path: Path) -> None:
    coordinator = Account.create()
    config = RelayConfig(data_dir=tmp_path, coordinator_address=coordinator.address, port=0,
                         retention=timedelta(seconds=1), sweep_interval=timedelta(milliseconds=200))  # fmt: skip
    relay = await start_standalone(config)
    try:
        relay.store.put_bytes(TASK, "input", b"old news")
        relay.store.pin_task(OTHER, time.time() + 3600)
        relay.store.put_bytes(OTHER, "input", b"evidence")
        assert relay.sweeper is not None
        for _ in range(200):
            if relay.sweeper.removed:  # counted once the sweep that removed it has returned
                break
            await asyncio.sleep(0.1)
        assert relay.sweeper.removed == 1
        assert not relay.store.exists(TASK, "input")
        assert relay.store.exists(OTHER, "input")
    finally:
        await relay.stop()


def test_retention_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="retention must be > 0"):
        RelayConfig(coordinator_address=Account.create().address, retention=timedelta(0))
