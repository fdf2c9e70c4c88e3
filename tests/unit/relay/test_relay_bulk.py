"""Bulk transfer paths of the relay: MiB-sized chunks, hashing behind the writes, Get frames read from
the mapped file, the client's background hash, the relay's gRPC options, and their bounds."""

from __future__ import annotations

import asyncio
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from relay_helpers import TASK, worker_grant

from chain.signing import DEV_DOMAIN
from relay import _wire
from relay._malloc import tune_malloc
from relay.client import RelayClient
from relay.config import RelayConfig, grpc_options
from relay.errors import ContentMismatchError
from relay.server import add_relay_to_server
from relay.store import BlobInfo, BlobReader, FilesystemBlobStore, _filesystem, result_slot
from relay.store._aio import write_chunks
from relay.store._hashing import BackgroundHash

MIB = 1 << 20
LIMIT = 16 * MIB


@pytest.fixture
def store(tmp_path: Path):
    s = FilesystemBlobStore(tmp_path / "blobs", LIMIT)
    yield s
    s.close()


def _leftovers(store: FilesystemBlobStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


# --- store: hashing behind the writes ------------------------------------------------------------------


def test_wrong_hash_after_large_chunks_leaves_nothing(store: FilesystemBlobStore) -> None:
    data = os.urandom(3 * MIB + 17)
    wrong = hashlib.sha256(b"not " + data).digest()
    writer = store.begin_write(TASK, "input", wrong, len(data))
    with writer:
        for off in range(0, len(data), MIB):
            writer.write(data[off : off + MIB])
        with pytest.raises(ContentMismatchError, match=f"do not match declared sha256 {wrong.hex()}"):
            writer.commit()
    assert not store.exists(TASK, "input") and _leftovers(store) == []


def test_mixed_chunk_sizes_are_hashed_in_order(store: FilesystemBlobStore) -> None:
    sizes = [5, MIB, 100, 300 << 10, 1, 70 << 10, 2 * MIB, 3]  # inline and background hashing interleaved
    chunks = [os.urandom(n) for n in sizes]
    data = b"".join(chunks)
    with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), len(data)) as writer:
        for chunk in chunks:
            writer.write(chunk)
        info = writer.commit()
    assert info.sha256 == hashlib.sha256(data).digest() and store.get_bytes(TASK, "input") == data


def test_background_hash_matches_hashlib_and_bounds_its_backlog() -> None:
    with ThreadPoolExecutor(1) as pool:
        h = BackgroundHash(pool, max_backlog=2 * MIB, inline_below=1024)
        parts = [os.urandom(n) for n in (MIB, 10, MIB, MIB, 5000, MIB)]
        for part in parts:
            h.feed(part)  # waits while 2 MiB or more are waiting to be hashed
            assert h._backlog < 2 * MIB + len(part)
        assert h.digest() == hashlib.sha256(b"".join(parts)).digest()


def test_background_hash_surfaces_a_pool_that_cannot_run_it() -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    h = BackgroundHash(pool, max_backlog=MIB)
    with pytest.raises(RuntimeError, match="shutdown"):
        h.feed(os.urandom(MIB))
    with pytest.raises(RuntimeError, match="shutdown"):
        h.digest()


async def test_write_chunks_past_backlog_and_error_midstream(store: FilesystemBlobStore) -> None:
    data = os.urandom(12 * MIB)  # more than the 8 MiB a Put may queue for the disk

    async def chunks(blob: bytes):
        for off in range(0, len(blob), MIB):
            yield memoryview(blob)[off : off + MIB]

    with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), len(data)) as writer:
        info = await write_chunks(writer, chunks(data))
    assert info.size == len(data) and store.get_bytes(TASK, "input") == data

    short = data[: 3 * MIB]  # declares 2 MiB, streams 3: refused at the third chunk, nothing left
    with pytest.raises(ContentMismatchError, match="more bytes than its declared size"):
        with store.begin_write(TASK, "other", hashlib.sha256(short).digest(), 2 * MIB) as writer:
            await write_chunks(writer, chunks(short))
    assert not store.exists(TASK, "other") and store.list_slots(TASK) == ["input"]
    assert list((store.root / ".tmp").iterdir()) == []


# --- store: Get frames ---------------------------------------------------------------------------------


def test_frames_are_the_blob_in_encoded_pieces(store: FilesystemBlobStore) -> None:
    data = os.urandom(2 * MIB + MIB // 2)
    store.put_bytes(TASK, "input", data)
    with store.open_read(TASK, "input") as reader:
        frames = list(reader.frames(MIB, _wire.encoded_chunk))
    pieces = [_wire.decode_get_response(f.wire) for f in frames]
    assert [len(p) for p in pieces] == [MIB, MIB, MIB // 2] and b"".join(pieces) == data
    assert _wire.encode_get_response(frames[0]) is frames[0].wire  # sent as is

    store.put_bytes(TASK, "empty", b"")
    with store.open_read(TASK, "empty") as reader:
        assert list(reader.frames(MIB, bytes)) == []


def test_frames_of_a_big_blob_map_lazily(store: FilesystemBlobStore, monkeypatch) -> None:
    monkeypatch.setattr(_filesystem, "_POPULATE_MAX_BYTES", MIB)  # 3 MiB counts as big here
    data = os.urandom(3 * MIB)
    store.put_bytes(TASK, "input", data)
    with store.open_read(TASK, "input") as reader:
        assert b"".join(reader.frames(MIB, bytes)) == data


def test_default_frames_follow_chunks() -> None:
    class Reader(BlobReader):
        info = BlobInfo(TASK, "input", bytes(32), 5)

        def chunks(self, chunk_bytes: int):
            yield from (b"ab", b"cde")

        def close(self) -> None:
            pass

    assert list(Reader().frames(2, bytes)) == [b"ab", b"cde"]


# --- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1023, (16 << 20) + 1])
def test_chunk_bytes_out_of_bounds_is_refused(tmp_path, chunk_bytes) -> None:
    with pytest.raises(ValueError, match=r"chunk_bytes must be in \[1024, 16 MiB\]"):
        RelayConfig(data_dir=tmp_path, coordinator_address="0x" + "11" * 20, chunk_bytes=chunk_bytes)
    for ok in (1024, 16 << 20):
        assert RelayConfig(data_dir=tmp_path, coordinator_address="0x" + "11" * 20, chunk_bytes=ok).chunk_bytes == ok


async def test_client_chunk_bytes_must_be_positive() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(ValueError, match="chunk_bytes must be > 0, got 0"):
            RelayClient(channel, os.urandom(32), DEV_DOMAIN, chunk_bytes=0)


@pytest.mark.parametrize("chunk_bytes", [64 << 10, MIB, 4 * MIB, 16 * MIB])
def test_grpc_options_fit_chunks_in_large_frames(chunk_bytes) -> None:
    opts = dict(grpc_options(chunk_bytes))
    assert opts["grpc.max_receive_message_length"] >= 2 * chunk_bytes
    assert opts["grpc.max_send_message_length"] >= 2 * chunk_bytes
    assert opts["grpc.http2.max_frame_size"] == (1 << 24) - 1  # the HTTP/2 maximum
    assert opts["grpc.http2.lookahead_bytes"] >= 4 * chunk_bytes


def test_tune_malloc_is_idempotent() -> None:
    assert tune_malloc() is tune_malloc()


# --- over gRPC with MiB chunks ---------------------------------------------------------------------------


@pytest.fixture
async def bulk(tmp_path: Path, keys):
    config = RelayConfig(data_dir=tmp_path / "relay", coordinator_address=keys.coordinator.address,
                         max_blob_bytes=LIMIT, chunk_bytes=MIB)  # fmt: skip
    store = FilesystemBlobStore(config.data_dir, LIMIT)
    server = grpc.aio.server(options=grpc_options(MIB))
    add_relay_to_server(server, config, store)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=grpc_options(MIB))
    try:
        yield store, channel
    finally:
        await channel.close()
        await server.stop(0)
        store.close()


async def test_multi_mib_round_trip(bulk, keys) -> None:
    store, channel = bulk
    worker = RelayClient(channel, keys.worker1, DEV_DOMAIN, chunk_bytes=MIB)
    grant = worker_grant(keys, keys.worker1)
    slot = result_slot(keys.worker1.address)
    data = os.urandom(5 * MIB + 4321)
    assert await worker.put(TASK, slot, data, grant) == hashlib.sha256(data).hexdigest()
    coordinator = RelayClient(channel, keys.coordinator, DEV_DOMAIN, chunk_bytes=MIB)
    assert await coordinator.get(TASK, slot) == data
    assert store.get_bytes(TASK, slot) == data and list((store.root / ".tmp").iterdir()) == []


async def test_large_blob_changed_on_disk_fails_the_clients_check(bulk, keys) -> None:
    store, channel = bulk
    client = RelayClient(channel, keys.coordinator, DEV_DOMAIN, chunk_bytes=MIB)
    data = os.urandom(3 * MIB)
    await client.put(TASK, "input", data)
    blob = next(store.root.rglob("*.blob"))
    with open(blob, "r+b") as f:  # bit rot under the relay: its sidecar still declares the old sha256
        f.seek(2 * MIB)
        f.write(bytes([data[2 * MIB] ^ 1]))
    with pytest.raises(ContentMismatchError, match="do not match the relay's sha256"):
        await client.get(TASK, "input")


async def test_put_that_fails_before_its_header_raises_its_own_error(bulk, keys) -> None:
    store, channel = bulk
    client = RelayClient(channel, keys.coordinator, DEV_DOMAIN, chunk_bytes=MIB)
    not_a_grant = _wire.Encoded(b"")  # build_auth cannot copy it into the request: a TypeError, not CANCELLED
    with pytest.raises(TypeError):
        await asyncio.wait_for(client.put(TASK, "input", os.urandom(2 * MIB), not_a_grant), 10)
    assert not store.exists(TASK, "input")
