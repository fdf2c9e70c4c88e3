"""Results waiting for the coordinator's ack, kept on disk so that a `kill -9` of the worker loses none.

A node's Result and ErrorReport messages are journaled in ``<data_dir>/outbox/<address>.journal`` and
fsynced *before* they are sent (write-ahead, as the coordinator does with its own state); an ack appends
an ack record (not fsynced: a lost one only re-sends a result the coordinator already has, which it
acknowledges again and never counts twice). At start the journal is read back, a torn last record is
dropped (each record carries its length and a crc32), and what is still unacknowledged is re-sent after
the node registers. The journal is emptied once it has grown a little and nothing waits, rewritten with
only what waits when it has grown a lot, and removed when the node stops with nothing waiting.

One thread at a time owns the file: results are queued and applied, in order, by a flush on a small
shared pool, so one fsync covers every result that became ready meanwhile (group commit); an ack, which
needs no fsync, is written on the event loop when no flush holds the file, else queued behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from helium.v1 import worker_pb2

__all__ = ["ResultOutbox", "outbox_path"]

log = structlog.get_logger("worker.outbox")

_PUT, _ACK = b"P", b"A"
_HEADER = struct.Struct(">cII")  # kind, payload length, crc32 of the payload
_ID = struct.Struct(">H")  # assignment id length inside the payload
_COMPACT_BYTES = 4 << 20  # a journal this large is rewritten with only the records still waiting
_RESTART_BYTES = 64 << 10  # a journal this large is emptied once nothing waits

_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _io_pool() -> ThreadPoolExecutor:
    """One small pool for every node of the process: not the loop's default executor, which model
    runs may fill for minutes, and not a thread per node (a simulated fleet has thousands)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="worker-outbox")
        return _pool


def outbox_path(data_dir: Path, address: str) -> Path:
    return Path(data_dir).expanduser() / "outbox" / f"{address.lower()}.journal"


def _record(kind: bytes, assignment_id: str, body: bytes = b"") -> bytes:
    aid = assignment_id.encode()
    payload = _ID.pack(len(aid)) + aid + body
    return _HEADER.pack(kind, len(payload), zlib.crc32(payload)) + payload


def _parse(data: bytes) -> tuple[OrderedDict[str, bytes], int]:
    """(assignment id -> its put record, still waiting) and the length of the intact prefix."""
    live: OrderedDict[str, bytes] = OrderedDict()
    off = 0
    while off + _HEADER.size <= len(data):
        kind, n, crc = _HEADER.unpack_from(data, off)
        end = off + _HEADER.size + n
        payload = data[off + _HEADER.size : end]
        if end > len(data) or kind not in (_PUT, _ACK) or zlib.crc32(payload) != crc or n < _ID.size:
            break  # a torn or damaged tail: everything after it is unreadable
        (k,) = _ID.unpack_from(payload)
        aid = payload[_ID.size : _ID.size + k].decode(errors="replace")
        if kind == _PUT:
            live[aid] = data[off:end]
        else:
            live.pop(aid, None)
        off = end
    return live, off


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


class ResultOutbox:
    """assignment id -> the ConnectRequest (result or error) waiting for its ack, oldest first.

    Reads (`in`, `len`, iteration, `values()`) see the in-memory view, which changes at once;
    :meth:`put` returns once the message is durable. With `path` None nothing is written (a node
    whose `durable_results` is off)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._live: OrderedDict[str, worker_pb2.ConnectRequest] = OrderedDict()
        # Owned by the flush in progress (one at a time): the file, and the put records it holds.
        self._fd: int | None = None
        self._size = 0
        self._on_disk: OrderedDict[str, bytes] = OrderedDict()
        # Queued operations: (put record or None for an ack, assignment id, future or None).
        self._ops: list[tuple[bytes | None, str, asyncio.Future | None]] = []
        self._flush: asyncio.Future | None = None
        self._closed = False
        self.failures = 0

    # --- the in-memory view ------------------------------------------------------------------------

    def __contains__(self, assignment_id: object) -> bool:
        return assignment_id in self._live

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._live))

    def values(self) -> list[worker_pb2.ConnectRequest]:
        return list(self._live.values())

    # --- start and stop ----------------------------------------------------------------------------

    def load(self) -> int:
        """Reads back what a previous run left unacknowledged (blocking; call before serving). Returns
        how many messages wait; the journal is rewritten to hold just those."""
        if self.path is None or not self.path.exists():
            return 0
        data = self.path.read_bytes()
        records, intact = _parse(data)
        if intact < len(data):
            log.warning("outbox_journal_torn", path=str(self.path), dropped_bytes=len(data) - intact)
        for aid, rec in records.items():
            try:
                msg = worker_pb2.ConnectRequest.FromString(rec[_HEADER.size + _ID.size + len(aid.encode()) :])
            except Exception:  # noqa: BLE001 - a record that passed its crc but is not a message
                log.warning("outbox_record_unreadable", assignment_id=aid)
                continue
            self._live[aid] = msg
            self._on_disk[aid] = rec
        self._rewrite()
        if self._live:
            log.info("outbox_recovered", path=str(self.path), results=len(self._live))
        return len(self._live)

    async def close(self) -> None:
        """Applies what is queued, closes the file, and removes it when nothing waits."""
        while self._flush is not None:
            await asyncio.wait([self._flush])
        if self.path is None or self._closed:
            return
        self._closed = True  # what comes later (a late ack) changes memory only
        await asyncio.get_running_loop().run_in_executor(_io_pool(), self._close_file)

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._on_disk and self.path is not None:  # every record acknowledged: nothing to keep
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)

    # --- changes -----------------------------------------------------------------------------------

    async def put(self, assignment_id: str, msg: worker_pb2.ConnectRequest) -> bool:
        """Adds `msg` and returns once it is on disk (True), or once writing it failed (False, logged: the
        message still waits in memory and is delivered, only not across a crash)."""
        self._live[assignment_id] = msg
        if self.path is None or self._closed:
            return self.path is None
        done = asyncio.get_running_loop().create_future()
        self._ops.append((_record(_PUT, assignment_id, msg.SerializeToString()), assignment_id, done))
        self._start_flush()
        return await asyncio.shield(done)

    def ack(self, assignment_id: str) -> bool:
        """Drops an acknowledged message; whether it was waiting."""
        if self._live.pop(assignment_id, None) is None:
            return False
        if self.path is None or self._closed:
            return True
        if self._flush is not None:  # the file is busy: the flush in progress applies it next
            self._ops.append((None, assignment_id, None))
            return True
        try:  # an ack record needs no fsync: written here, without a thread hop
            self._apply([(None, assignment_id, None)])
        except OSError as exc:  # a lost ack record only re-sends an acknowledged result after a restart
            log.warning("outbox_ack_not_written", path=str(self.path), error=str(exc))
        return True

    # --- the flush (one at a time, on the pool) ----------------------------------------------------

    def _start_flush(self) -> None:
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._flush_loop())

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._ops:
                ops, self._ops = self._ops, []
                try:
                    await loop.run_in_executor(_io_pool(), self._apply, ops)
                    ok = True
                except OSError as exc:
                    self.failures += 1
                    log.error("outbox_write_failed", path=str(self.path), error=str(exc))
                    ok = False
                for _, _, fut in ops:
                    if fut is not None and not fut.done():
                        fut.set_result(ok)
        finally:
            self._flush = None

    def _open(self) -> int:
        if self._fd is None:
            assert self.path is not None
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
            if new:
                _fsync_dir(self.path.parent)  # the file itself must survive, not only its bytes
        return self._fd

    def _apply(self, ops: list[tuple[bytes | None, str, asyncio.Future | None]]) -> None:
        buf, puts = [], False
        for rec, aid, _ in ops:
            if rec is not None:
                self._on_disk[aid] = rec
                buf.append(rec)
                puts = True
            elif self._on_disk.pop(aid, None) is not None:
                buf.append(_record(_ACK, aid))
        data = b"".join(buf)
        if not self._on_disk and (self._size + len(data) > _RESTART_BYTES or self._fd is None):
            if self._fd is not None:  # nothing waits: start the journal over (not per result: a metadata write)
                os.ftruncate(self._fd, 0)
                self._size = 0
            return
        if self._size + len(data) > _COMPACT_BYTES:
            self._rewrite()
            return
        fd = self._open()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        self._size += len(data)
        if puts:
            os.fdatasync(fd)

    def _rewrite(self) -> None:
        """Replaces the journal with the waiting records only: written aside, fsynced, renamed."""
        assert self.path is not None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self._on_disk:
            self.path.unlink(missing_ok=True)
            self._size = 0
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(b"".join(self._on_disk.values()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self._open()
