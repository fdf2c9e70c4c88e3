"""Async adapters between a stream of chunks and a blocking BlobWriter/BlobReader.

Disk work runs in threads, pipelined with the network (hashlib and file I/O release the GIL): a Put's
chunks are queued to one drain that writes them in order while the next ones are received (the store
hashes them behind the writes), and a Get's next few frames are read and encoded while the current
ones are sent. The event loop never waits on the disk per chunk, only when a backlog bound is hit.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from relay.store._base import BlobInfo, BlobReader, BlobWriter, T

__all__ = ["read_frames", "write_chunks"]

_READ_AHEAD_CHUNKS = 4
_WRITE_BACKLOG_BYTES = 8 << 20  # a Put stops reading from the network while this much waits for the disk


class _SerialWrites:
    """Runs ``writer.write(chunk)`` for each chunk in order on the default executor, without a round trip
    to the event loop per chunk: one drain call writes every chunk queued so far and returns when the
    queue is empty (no thread is held while the stream is idle). The loop only queues, and waits when
    more than `max_backlog` bytes are queued."""

    def __init__(self, writer: BlobWriter, max_backlog: int) -> None:
        self._writer, self._max_backlog = writer, max_backlog
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._queue: collections.deque[bytes | memoryview] = collections.deque()
        self._backlog = 0
        self._running = False  # a drain is running or about to; cleared by it, under the lock, once idle
        self._drain: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._room = asyncio.Event()
        self._room.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._queue or self._error is not None:
                    self._running = False
                    return
                chunk = self._queue.popleft()
            try:
                self._writer.write(chunk)
            except BaseException as exc:
                with self._lock:
                    self._error = exc
            with self._lock:
                self._backlog -= len(chunk)
                wake = self._backlog < self._max_backlog or self._error is not None
            if wake:
                self._loop.call_soon_threadsafe(self._room.set)

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    async def put(self, chunk: bytes | memoryview) -> None:
        self._raise()
        with self._lock:
            self._queue.append(chunk)
            self._backlog += len(chunk)
            if self._backlog >= self._max_backlog:
                self._room.clear()
            start, self._running = not self._running, True
        if start:
            self._drain = asyncio.ensure_future(asyncio.to_thread(self._run))
        await self._room.wait()
        self._raise()

    async def join(self) -> None:
        """Returns once every queued chunk is written (raising the first error)."""
        while self._drain is not None:
            await asyncio.wait([self._drain])  # never cancels the drain: the file must outlive its writes
            with self._lock:
                if not self._running:
                    break
        self._raise()

    async def abandon(self) -> None:
        """Drops what is queued and waits for a write in progress to finish, even if cancelled again:
        the caller aborts the writer next, and its file must outlive every write."""
        with self._lock:
            self._backlog -= sum(len(c) for c in self._queue)
            self._queue.clear()
        while self._drain is not None and not self._drain.done():
            try:
                await asyncio.wait([self._drain])
            except asyncio.CancelledError:
                continue  # the caller re-raises its own error once the drain is over


async def write_chunks(writer: BlobWriter, chunks: AsyncIterator[bytes | memoryview]) -> BlobInfo:
    """Writes every chunk, then commits. Errors from the writer surface at a later chunk or at the end;
    the caller aborts the writer (``with writer:``) on any error."""
    serial = _SerialWrites(writer, _WRITE_BACKLOG_BYTES)
    try:
        async for chunk in chunks:
            await serial.put(chunk)
        await serial.join()
    except BaseException:
        await serial.abandon()  # the writer's fd must outlive its last write
        raise
    return await asyncio.to_thread(writer.commit)


def _next_batch(frames: Iterator[T], n: int) -> list[T]:
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == n:
            break
    return batch


async def read_frames(reader: BlobReader, chunk_bytes: int, encode: Callable[[memoryview], T]) -> AsyncIterator[T]:
    """``encode(piece)`` for each piece of the blob (see :meth:`BlobReader.frames`), produced in a thread a
    few at a time: the next batch is read and encoded while the current one is sent."""
    frames = reader.frames(chunk_bytes, encode)
    try:
        ahead = asyncio.ensure_future(asyncio.to_thread(_next_batch, frames, 1))  # the first one, soonest
        while batch := await ahead:
            ahead = asyncio.ensure_future(asyncio.to_thread(_next_batch, frames, _READ_AHEAD_CHUNKS))
            for frame in batch:
                yield frame
    finally:
        if not ahead.done():
            await asyncio.wait([ahead])  # the reader must outlive the thread still reading it
        if hasattr(frames, "close"):
            frames.close()  # a backend's mapping is released now, not when the generator is collected
