"""Filesystem blob store.

Layout under ``root``::

    <tt>/<task hex>+<slot, '/' as '+'>.blob     the bytes, exactly as written (tt: first 2 hex of the task)
    <tt>/<task hex>+<slot, '/' as '+'>.sha256   sidecar "<sha256 hex> <size>\\n": a cache, derivable from .blob
    <tt>/<task hex>.pin                         "<unix time>\n": keep the task's blobs until then (evidence)
    .tmp/<random>                               staging for writes in progress

A write streams into a staging file on the same filesystem, checks size and sha256, fsyncs, then is
published with ``link()`` (which, unlike ``rename()``, refuses to replace an existing slot, so two
writers of one slot cannot both win), and the directory is fsynced. Staging lives in one directory so
leftovers of a crash are swept at start-up; ``rename``/``link`` within one filesystem stay atomic.
Blobs sit flat in 256 shard directories, made at start-up, rather than one directory per task, so a
write costs one directory fsync. While a large write streams in, writeback of its bytes is started in
the background every MiB (``sync_file_range`` on Linux), so the final fsync has little left to do, and they are hashed on the store's
pool behind the writes (the digest is checked after the fsync, before anything is published).
Reads for the relay's Get map the file and encode straight from the page cache.
A blob is as old as its file's mtime (the time of its last written byte): :meth:`FilesystemBlobStore.sweep`
removes those older than the retention period unless their task is pinned. A full disk is refused as
StorageFullError (RESOURCE_EXHAUSTED), before streaming when the declared size does not fit the free space.
The sidecar (the declared hash and size) is staged while the bytes stream in and renamed into place
after the blob is published, without fsync; a blob whose sidecar is missing or damaged (a crash in
between) is re-hashed on read.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import mmap
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import structlog

from relay.errors import (
    BlobExistsError,
    BlobNotFoundError,
    ContentMismatchError,
    ResourceLimitError,
    StorageFullError,
)
from relay.store._base import BlobInfo, BlobReader, BlobStore, BlobWriter, T, parse_sha256
from relay.store._hashing import BackgroundHash
from relay.store._names import canonical_slot, canonical_task_id
from relay.store._retention import read_pin, sweep_shard, write_pin

__all__ = ["FilesystemBlobStore"]

log = structlog.get_logger("relay.store")

_TMP = ".tmp"
_FLUSH_EVERY_BYTES = 1 << 20
_HASH_BACKLOG_BYTES = 8 << 20  # a write blocks while this much is waiting to be hashed
_HASH_INLINE_BYTES = 64 << 10  # smaller chunks are hashed in the writing thread when none are waiting
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)  # Linux: map every page up front, no fault per page
_POPULATE_MAX_BYTES = 32 << 20  # larger blobs are mapped lazily: the first frame need not wait for all


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the range's dirty pages, do not wait


def _writeback_starter() -> Callable[[int], object]:
    """What a streaming write calls every _FLUSH_EVERY_BYTES so that the commit's fsync finds little
    left to write. On Linux ``sync_file_range`` starts the writeback and returns: no journal commit
    and no device flush per call, which a busy disk makes slow and which the commit's fsync would
    otherwise queue behind. Elsewhere ``fdatasync``. Either is only a head start: durability comes from
    the commit's fsync, which also reports any write error."""
    try:
        sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return os.fdatasync
    sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    sync_file_range.restype = ctypes.c_int

    def start_writeback(fd: int) -> int:
        return sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # 0, 0: the whole file

    return start_writeback


_start_writeback = _writeback_starter()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _disk_full_is_resource_limit(writer: _FsWriter | None, slot: str = "") -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        if writer is not None:
            writer.abort()
            slot = writer._slot
        raise StorageFullError(f"relay storage is full; blob {slot!r} refused") from None


class _FsWriter(BlobWriter):
    def __init__(self, store: FilesystemBlobStore, task_id: str, slot: str, sha256: bytes, size: int) -> None:
        self._store, self._task_id, self._slot = store, task_id, slot
        self._sha256, self._size = sha256, size
        self._hash = BackgroundHash(store._pool, _HASH_BACKLOG_BYTES, inline_below=_HASH_INLINE_BYTES)
        self._written = 0
        self._done = False
        self._flush: Future | None = None
        self._flushed_at = 0
        self._tmp = store._tmp_dir / f"{secrets.token_hex(12)}"
        self._fd: int | None = None
        with _disk_full_is_resource_limit(None, slot):  # no inode left
            self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # The sidecar holds the declared hash and size, which commit checks before publishing: it is
            # staged while the bytes stream in, so publishing it costs a rename instead of a new file.
            self._sidecar: Future[Path] | None = store._pool.submit(store._stage_sidecar, sha256, size)
        except BaseException:  # the store is closed
            self._sidecar = None
            self.abort()
            raise

    def write(self, chunk: bytes) -> None:
        if self._done or self._fd is None:
            raise ContentMismatchError(f"write to slot {self._slot!r} after it was closed")
        n = self._written + len(chunk)
        try:
            if n > self._store.max_blob_bytes:
                raise ResourceLimitError(
                    f"blob {self._slot!r} exceeds max_blob_bytes {self._store.max_blob_bytes} (got {n} bytes so far)"
                )
            if n > self._size:
                raise ContentMismatchError(f"blob {self._slot!r} has more bytes than its declared size {self._size}")
        except Exception:
            self.abort()
            raise
        try:
            self._hash.feed(chunk)  # hashed on the store's pool, behind this write (relay.store._hashing)
        except BaseException:
            self.abort()
            raise
        view = memoryview(chunk)
        with _disk_full_is_resource_limit(self):
            while view:
                view = view[os.write(self._fd, view) :]
        self._written = n
        if n - self._flushed_at >= _FLUSH_EVERY_BYTES and (self._flush is None or self._flush.done()):
            self._flushed_at = n
            self._flush = self._store._pool.submit(_start_writeback, self._fd)

    def _wait_flush(self) -> None:
        if self._flush is not None:
            flush, self._flush = self._flush, None
            flush.result()

    def commit(self) -> BlobInfo:
        if self._done:
            raise ContentMismatchError(f"slot {self._slot!r} write already finished")
        try:
            if self._written != self._size:
                raise ContentMismatchError(
                    f"blob {self._slot!r} has {self._written} bytes, declared size is {self._size}"
                )
            assert self._fd is not None
            assert self._sidecar is not None
            with _disk_full_is_resource_limit(self):
                self._wait_flush()
                os.fsync(self._fd)  # while the last chunks are still being hashed
                staged_sidecar = self._sidecar.result()
                digest = self._hash.digest()
                if digest != self._sha256:
                    raise ContentMismatchError(
                        f"blob {self._slot!r} bytes do not match declared sha256 {self._sha256.hex()} "
                        f"(got {digest.hex()})"
                    )
                os.close(self._fd)
                self._fd = None
                info = BlobInfo(self._task_id, self._slot, digest, self._written)
                self._store._publish(self._tmp, info, staged_sidecar)  # a directory may need a new block
        except BaseException:
            self.abort()
            raise
        self._done, self._sidecar = True, None
        return info

    def _discard_sidecar(self) -> None:
        staged, self._sidecar = self._sidecar, None
        if staged is None or staged.cancel():
            return
        try:
            path = staged.result()
        except Exception:  # staging failed: nothing was left
            return
        path.unlink(missing_ok=True)  # already gone if it was published

    def abort(self) -> None:
        self._hash.discard()
        self._discard_sidecar()
        try:
            self._wait_flush()  # never close an fd a flush thread still uses
        except OSError:
            pass
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._done:
            self._done = True
            try:
                os.unlink(self._tmp)
            except FileNotFoundError:
                pass


class _FsReader(BlobReader):
    def __init__(self, info: BlobInfo, f) -> None:
        self.info, self._f = info, f

    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        while True:
            data = self._f.read(chunk_bytes)
            if not data:
                return
            yield data

    def frames(self, chunk_bytes: int, encode: Callable[[memoryview], T]) -> Iterator[T]:
        """Pieces are views of the file mapped read-only: `encode` copies straight from the page cache
        (one copy per byte instead of a read() and then the encoding). Blobs are never modified in place,
        so the mapping cannot shrink under a reader."""
        size = self.info.size
        if size == 0:
            return
        populate = _MAP_POPULATE if size <= _POPULATE_MAX_BYTES else 0
        try:
            mapped = mmap.mmap(self._f.fileno(), size, flags=mmap.MAP_SHARED | populate, prot=mmap.PROT_READ)
        except (OSError, ValueError):  # a filesystem that cannot map files
            yield from super().frames(chunk_bytes, encode)
            return
        if not populate and hasattr(mapped, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            mapped.madvise(mmap.MADV_SEQUENTIAL)  # a big blob: read ahead as it is streamed, not all up front
        try:
            with memoryview(mapped) as whole:
                for off in range(0, size, chunk_bytes):
                    with whole[off : off + chunk_bytes] as piece:
                        yield encode(piece)
        finally:
            mapped.close()

    def close(self) -> None:
        self._f.close()


class FilesystemBlobStore(BlobStore):
    """Blobs as files under `root` (see the module docstring). One process owns a root at a time."""

    def __init__(self, root: str | os.PathLike, max_blob_bytes: int) -> None:
        if max_blob_bytes <= 0:
            raise ValueError(f"max_blob_bytes must be > 0, got {max_blob_bytes}")
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        self._tmp_dir = self.root / _TMP
        self._tmp_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # only for the no-hard-link fallback of _publish
        # background work of writes: one writeback start in flight and the hashing behind each write
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay-io")
        self._shards: set[str] = set()
        self._make_shards()
        swept = 0
        for leftover in self._tmp_dir.iterdir():
            leftover.unlink(missing_ok=True)
            swept += 1
        if swept:
            log.info("relay_store_swept_temp_files", root=str(self.root), count=swept)

    def _make_shards(self) -> None:
        """Creates the 256 shard directories up front (one root fsync at start-up, none per write)."""
        created = False
        for i in range(256):
            shard = self.root / f"{i:02x}"
            if not shard.is_dir():
                shard.mkdir(exist_ok=True)
                created = True
            self._shards.add(shard.name)
        if created:
            _fsync_dir(self.root)

    # --- paths ---------------------------------------------------------------------------------------

    def _paths(self, task_id: str | bytes, slot: str) -> tuple[str, str, Path, Path]:
        tid, s = canonical_task_id(task_id), canonical_slot(slot)
        base = f"{tid[2:]}+{s.replace('/', '+')}"
        shard = self.root / tid[2:4]
        return tid, s, shard / f"{base}.blob", shard / f"{base}.sha256"

    def _task_files(self, task_id: str | bytes) -> list[Path]:
        tid = canonical_task_id(task_id)
        shard = self.root / tid[2:4]
        return sorted(shard.glob(f"{tid[2:]}+*")) if shard.is_dir() else []

    # --- writes --------------------------------------------------------------------------------------

    def begin_write(self, task_id: str | bytes, slot: str, sha256: bytes | str, size: int) -> BlobWriter:
        tid, s, blob, _ = self._paths(task_id, slot)
        digest = parse_sha256(sha256)
        if not isinstance(size, int) or size < 0:
            raise ContentMismatchError(f"size must be a non-negative integer, got {size!r}")
        if size > self.max_blob_bytes:
            raise ResourceLimitError(f"blob {s!r} size {size} exceeds max_blob_bytes {self.max_blob_bytes}")
        if blob.exists():
            raise BlobExistsError(f"slot {s!r} of task {tid} is already written (slots are write-once)")
        free = self.free_bytes()
        if size > free:
            raise StorageFullError(f"relay storage is full: blob {s!r} of {size} bytes, {free} bytes free")
        return _FsWriter(self, tid, s, digest, size)

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still store on the store's filesystem."""
        st = os.statvfs(self._tmp_dir)
        return st.f_bavail * st.f_frsize

    def _publish(self, tmp: Path, info: BlobInfo, staged_sidecar: Path) -> None:
        """Links the verified, fsynced staging file `tmp` to its slot, then renames the staged sidecar next
        to it. The sidecar is a cache: failing to place it does not fail the write (it is rebuilt on read)."""
        _, _, blob, sidecar = self._paths(info.task_id, info.slot)
        shard = blob.parent
        if shard.name not in self._shards:
            if not shard.exists():
                shard.mkdir(exist_ok=True)
                _fsync_dir(self.root)
            self._shards.add(shard.name)
        exists = BlobExistsError(f"slot {info.slot!r} of task {info.task_id} is already written (slots are write-once)")
        try:
            os.link(tmp, blob)
        except FileExistsError:
            raise exists from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            with self._lock:  # filesystem without hard links
                if blob.exists():
                    raise exists from None
                os.rename(tmp, blob)
        else:
            os.unlink(tmp)
        _fsync_dir(shard)
        try:
            os.replace(staged_sidecar, sidecar)  # no fsync: a lost or torn sidecar is rebuilt from the blob
        except OSError as exc:
            staged_sidecar.unlink(missing_ok=True)
            log.warning("relay_sidecar_not_written", task_id=info.task_id, slot=info.slot, error=str(exc))

    def _stage_sidecar(self, sha256: bytes, size: int) -> Path:
        """A new staging file holding the sidecar line for (sha256, size); the caller renames or removes it."""
        tmp = self._tmp_dir / f"{secrets.token_hex(12)}.sc"
        try:
            with open(tmp, "x") as f:
                f.write(f"{sha256.hex()} {size}\n")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _write_sidecar(self, sidecar: Path, info: BlobInfo) -> None:
        os.replace(self._stage_sidecar(info.sha256, info.size), sidecar)  # no fsync, as in _publish

    # --- reads ---------------------------------------------------------------------------------------

    def _info(self, tid: str, s: str, blob: Path, sidecar: Path, size: int) -> BlobInfo:
        try:
            hex_digest, size_text = sidecar.read_text().split()
            if int(size_text) == size:
                return BlobInfo(tid, s, bytes.fromhex(hex_digest), size)
        except (OSError, ValueError):
            pass
        h = hashlib.sha256()  # sidecar lost (crash between publish and sidecar) or damaged: rebuild it
        with open(blob, "rb") as f:
            while data := f.read(1 << 20):
                h.update(data)
        info = BlobInfo(tid, s, h.digest(), size)
        self._write_sidecar(sidecar, info)
        log.warning("relay_sidecar_rebuilt", task_id=tid, slot=s)
        return info

    def open_read(self, task_id: str | bytes, slot: str) -> BlobReader:
        tid, s, blob, sidecar = self._paths(task_id, slot)
        try:
            f = open(blob, "rb", buffering=0)
        except FileNotFoundError:
            raise BlobNotFoundError(f"slot {s!r} of task {tid} is not written") from None
        try:
            return _FsReader(self._info(tid, s, blob, sidecar, os.fstat(f.fileno()).st_size), f)
        except BaseException:
            f.close()
            raise

    def stat(self, task_id: str | bytes, slot: str) -> BlobInfo:
        with self.open_read(task_id, slot) as reader:
            return reader.info

    def exists(self, task_id: str | bytes, slot: str) -> bool:
        return self._paths(task_id, slot)[2].exists()

    def list_slots(self, task_id: str | bytes) -> list[str]:
        prefix = len(canonical_task_id(task_id)) - 1  # "<64 hex>+"
        blobs = (p for p in self._task_files(task_id) if p.suffix == ".blob")
        return sorted(p.name[prefix : -len(".blob")].replace("+", "/") for p in blobs)

    def delete_task(self, task_id: str | bytes) -> int:
        self._pin_path(task_id).unlink(missing_ok=True)
        files = self._task_files(task_id)
        for p in files:
            p.unlink(missing_ok=True)
        if files:
            _fsync_dir(files[0].parent)
        return sum(p.suffix == ".blob" for p in files)

    # --- retention -----------------------------------------------------------------------------------

    def _pin_path(self, task_id: str | bytes) -> Path:
        tid = canonical_task_id(task_id)
        return self.root / tid[2:4] / f"{tid[2:]}.pin"

    def pin_task(self, task_id: str | bytes, until: float) -> float:
        pin = self._pin_path(task_id)
        until = write_pin(pin, until, self._tmp_dir / f"{secrets.token_hex(12)}.pin")
        _fsync_dir(pin.parent)
        return until

    def pinned_until(self, task_id: str | bytes) -> float:
        return read_pin(self._pin_path(task_id))

    def sweep(self, retention_s: float, now: float | None = None) -> int:
        now = time.time() if now is None else now
        removed = 0
        for shard in sorted(self._shards):
            gone, changed = sweep_shard(self.root / shard, now - retention_s, now)
            removed += gone
            if changed:
                _fsync_dir(self.root / shard)
        if removed:
            log.info("relay_blobs_swept", root=str(self.root), removed=removed, retention_s=retention_s)
        return removed

    def close(self) -> None:
        """Stops the background threads (pending flushes and hashes finish first)."""
        self._pool.shutdown(wait=True)
