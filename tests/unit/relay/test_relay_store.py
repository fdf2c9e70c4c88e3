"""FilesystemBlobStore against the BlobStore contract."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import (
    BlobExistsError,
    BlobNotFoundError,
    ContentMismatchError,
    InvalidRequestError,
    InvalidSlotError,
    ResourceLimitError,
)
from relay.store import FilesystemBlobStore, canonical_slot, result_slot

TASK = "0x" + "ab" * 32
LIMIT = 4096


@pytest.fixture
def store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "blobs", LIMIT)


def _files(store: FilesystemBlobStore) -> list[Path]:
    return sorted(p for p in store.root.rglob("*") if p.is_file())


def test_put_get_round_trip_with_sha256(store: FilesystemBlobStore) -> None:
    info = store.put_bytes(TASK, "input", b"hello relay")
    assert info.sha256 == hashlib.sha256(b"hello relay").digest() and info.size == 11
    assert store.get_bytes(TASK, "input") == b"hello relay"
    assert store.stat(TASK, "input") == info
    assert store.put_bytes(TASK.upper().replace("0X", "0x"), "result/0xAA/0", b"").size == 0
    assert store.list_slots(TASK) == ["input", "result/0xaa/0"]
    assert store.get_bytes(TASK, "RESULT/0xaa/0") == b""  # slots are case-insensitive


def test_streaming_read_in_chunks(store: FilesystemBlobStore) -> None:
    data = os.urandom(3000)
    store.put_bytes(TASK, "input", data)
    with store.open_read(TASK, "input") as reader:
        chunks = list(reader.chunks(1024))
    assert [len(c) for c in chunks] == [1024, 1024, 952] and b"".join(chunks) == data


def test_second_write_is_already_exists_and_keeps_first(store: FilesystemBlobStore) -> None:
    store.put_bytes(TASK, "input", b"first")
    with pytest.raises(BlobExistsError, match="already written"):
        store.put_bytes(TASK, "input", b"second")
    assert store.get_bytes(TASK, "input") == b"first"


def test_hash_mismatch_refused_and_leaves_nothing(store: FilesystemBlobStore) -> None:
    with pytest.raises(ContentMismatchError, match="do not match declared sha256"):
        with store.begin_write(TASK, "input", hashlib.sha256(b"other").digest(), 5) as w:
            w.write(b"bytes")
            w.commit()
    assert _files(store) == [] and not store.exists(TASK, "input")


def test_size_mismatch_refused(store: FilesystemBlobStore) -> None:
    data = b"abc"
    with pytest.raises(ContentMismatchError, match="declared size is 4"):
        with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), 4) as w:
            w.write(data)
            w.commit()
    with pytest.raises(ContentMismatchError, match="more bytes than its declared size 2"):
        with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), 2) as w:
            w.write(data)
    assert _files(store) == []


def test_size_limit_before_storing_and_while_streaming(store: FilesystemBlobStore) -> None:
    with pytest.raises(ResourceLimitError, match="exceeds max_blob_bytes 4096"):
        store.begin_write(TASK, "input", bytes(32), LIMIT + 1)
    assert _files(store) == []
    with pytest.raises(ResourceLimitError, match="exceeds max_blob_bytes"):
        with store.begin_write(TASK, "input", bytes(32), LIMIT) as w:
            w.write(b"x" * LIMIT)
            w.write(b"x")
    assert _files(store) == []


@pytest.mark.parametrize(
    "slot, reason",
    [
        ("../../etc/passwd", "path traversal"),
        ("result/../input", "path traversal"),
        ("..", "path traversal"),
        ("/etc/passwd", "relative"),
        ("\\windows", "relative"),
        ("a//b", "empty segments"),
        ("a/", "empty segments"),
        ("a/.hidden", "must not start with '.'"),
        ("a\\..\\b", "invalid character"),
        ("in put", "invalid character"),
        ("x\x00y", "invalid character"),
        ("", "must not be empty"),
        ("a" * 161, "longer than 160"),
    ],
)
def test_bad_slot_names_refused(store: FilesystemBlobStore, slot: str, reason: str) -> None:
    with pytest.raises(InvalidSlotError, match=reason) as err:
        store.put_bytes(TASK, slot, b"x")
    if slot:
        assert repr(slot)[:40] in str(err.value)  # the message names the slot
    assert _files(store) == []


def test_bad_task_id_refused(store: FilesystemBlobStore) -> None:
    for bad in ("0x1234", "ab" * 32, "0x" + "zz" * 32, "0x" + "ab" * 32 + "/.."):
        with pytest.raises(InvalidRequestError, match="task_id must be 0x followed by 64 hex digits"):
            store.put_bytes(bad, "input", b"x")
    assert _files(store) == []


def test_missing_blob_is_not_found(store: FilesystemBlobStore) -> None:
    with pytest.raises(BlobNotFoundError, match="'input' of task 0xab"):
        store.get_bytes(TASK, "input")


def test_concurrent_writers_of_one_slot_exactly_one_wins(store: FilesystemBlobStore) -> None:
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def write(i: int) -> None:
        data = bytes([i]) * 100
        with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), 100) as w:
            w.write(data)
            barrier.wait(timeout=5)
            try:
                w.commit()
                outcomes.append("won")
            except BlobExistsError:
                outcomes.append("exists")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(outcomes) == ["exists", "exists", "exists", "won"]
    data = store.get_bytes(TASK, "input")
    assert data == data[:1] * 100 and store.stat(TASK, "input").sha256 == hashlib.sha256(data).digest()
    assert list((store.root / ".tmp").iterdir()) == []


def test_lost_sidecar_is_rebuilt_and_stale_temp_files_swept(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path, LIMIT)
    info = store.put_bytes(TASK, "input", b"payload")
    for sidecar in tmp_path.rglob("*.sha256"):
        sidecar.unlink()  # as if the process died between publishing the blob and its sidecar
    (tmp_path / ".tmp" / "leftover").write_bytes(b"half a write")
    reopened = FilesystemBlobStore(tmp_path, LIMIT)
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert reopened.stat(TASK, "input") == info


def test_result_slot_and_canonical_form() -> None:
    address = "0xAbCdEf0123456789abcdef0123456789ABCDEF01"
    assert result_slot(address) == "result/" + address.lower()
    assert result_slot(address, 2) == "result/" + address.lower() + "/2"
    assert canonical_slot("Result/" + address) == result_slot(address)


def test_delete_task(store: FilesystemBlobStore) -> None:
    store.put_bytes(TASK, "input", b"a")
    store.put_bytes(TASK, "result/x", b"b")
    assert store.delete_task(TASK) == 2 and store.list_slots(TASK) == []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("aZ09._-/\\:~+ \x00.."), max_size=40))
def test_any_accepted_slot_stays_inside_its_shard(slot: str) -> None:
    root = Path("/relay-root")
    store = FilesystemBlobStore.__new__(FilesystemBlobStore)
    store.root = root
    try:
        canonical = canonical_slot(slot)
    except InvalidSlotError:
        return
    assert ".." not in canonical.split("/") and not canonical.startswith("/")
    _, _, blob, sidecar = store._paths(TASK, slot)
    for path in (blob, sidecar):
        assert path.parent == root / TASK[2:4]  # one flat file per slot in the task's shard
        assert os.path.normpath(path) == str(path)


def test_sidecar_is_staged_during_the_write_and_renamed_on_commit(store: FilesystemBlobStore) -> None:
    data = os.urandom(3000)
    with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), len(data)) as w:
        w.write(data)
        info = w.commit()
    _, _, blob, sidecar = store._paths(TASK, "input")
    assert sidecar.read_text() == f"{info.sha256_hex} {len(data)}\n"
    assert list((store.root / ".tmp").iterdir()) == []  # neither the blob's nor the sidecar's staging file


def test_write_refused_after_the_sidecar_is_staged_leaves_nothing(store: FilesystemBlobStore) -> None:
    data = b"abc"
    w = store.begin_write(TASK, "input", hashlib.sha256(b"abd").digest(), 3)
    w._sidecar.result()  # staged
    w.write(data)
    with pytest.raises(ContentMismatchError, match="do not match declared sha256"):
        w.commit()
    assert _files(store) == [] and not store.exists(TASK, "input")


def test_sidecar_that_cannot_be_placed_does_not_fail_the_write(store: FilesystemBlobStore, monkeypatch) -> None:
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith(".sha256"):
            raise PermissionError(13, "denied")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    info = store.put_bytes(TASK, "input", b"payload")
    monkeypatch.setattr(os, "replace", real_replace)
    assert list((store.root / ".tmp").iterdir()) == []
    assert store.stat(TASK, "input") == info  # rebuilt from the blob on read
    assert store.get_bytes(TASK, "input") == b"payload"


def test_full_disk_while_staging_the_sidecar_is_resource_limit(store: FilesystemBlobStore, monkeypatch) -> None:
    def full(sha256: bytes, size: int) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_stage_sidecar", full)
    with pytest.raises(ResourceLimitError, match="storage is full"):
        store.put_bytes(TASK, "input", b"payload")
    assert _files(store) == [] and not store.exists(TASK, "input")


def test_write_to_a_closed_store_leaves_nothing(store: FilesystemBlobStore) -> None:
    store.close()
    with pytest.raises(RuntimeError):
        store.begin_write(TASK, "input", hashlib.sha256(b"x").digest(), 1)
    assert _files(store) == []


def test_streamed_write_starts_writeback_and_fsyncs_before_publishing(tmp_path: Path, monkeypatch) -> None:
    from relay.store import _filesystem

    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link
    monkeypatch.setattr(_filesystem, "_start_writeback", lambda fd: events.append("writeback"))
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "link", lambda src, dst: (events.append("link"), real_link(src, dst))[1])
    store = FilesystemBlobStore(tmp_path, 8 << 20)
    data = os.urandom(3 * _filesystem._FLUSH_EVERY_BYTES + 5)
    with store.begin_write(TASK, "input", hashlib.sha256(data).digest(), len(data)) as w:
        for off in range(0, len(data), 1 << 18):
            w.write(data[off : off + (1 << 18)])
        w.commit()
    store.close()
    assert events.index("writeback") < events.index("link")
    assert events[events.index("link") - 1] == "fsync"  # the blob's own fsync comes right before it is linked
    assert store.get_bytes(TASK, "input") == data


def test_writeback_starter_on_this_platform_and_its_fallback(tmp_path: Path, monkeypatch) -> None:
    from relay.store import _filesystem

    path = tmp_path / "f"
    path.write_bytes(b"x" * 10000)
    fd = os.open(path, os.O_WRONLY)
    try:
        _filesystem._writeback_starter()(fd)  # a hint: never raises on a regular file
    finally:
        os.close(fd)

    def no_libc(name, use_errno=False):
        raise OSError("no C library here")

    monkeypatch.setattr(_filesystem.ctypes, "CDLL", no_libc)
    assert _filesystem._writeback_starter() is os.fdatasync
