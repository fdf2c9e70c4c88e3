"""sha256 of a stream of chunks, computed on a thread pool behind the writes.

A streamed write hands each chunk to :class:`BackgroundHash` and goes on writing: hashing (the
slowest step per byte) overlaps the disk writes and the network, and the digest is awaited once, at
commit, where it also overlaps the final fsync. Chunks are hashed strictly in order. A pool thread is
held only while chunks are waiting (a slow writer holds none), and the backlog is bounded: `feed`
blocks while more than `max_backlog` bytes are waiting.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from concurrent.futures import Executor

__all__ = ["BackgroundHash"]


class BackgroundHash:
    def __init__(self, pool: Executor, max_backlog: int, inline_below: int = 0) -> None:
        """`inline_below`: a chunk smaller than this, fed while nothing is queued, is hashed in the
        caller's thread (a pool round trip costs more than hashing a few KiB)."""
        self._pool, self._max_backlog, self._inline_below = pool, max_backlog, inline_below
        self._h = hashlib.sha256()
        self._queue: collections.deque[bytes | memoryview] = collections.deque()
        self._backlog = 0
        self._running = False
        self._error: BaseException | None = None
        self._cv = threading.Condition()

    def feed(self, chunk: bytes | memoryview) -> None:
        """Queues `chunk` (kept by reference: it must not change) after the chunks fed before. One feeder
        thread at a time."""
        with self._cv:
            self._cv.wait_for(lambda: self._backlog < self._max_backlog or self._error is not None)
            self._raise_error()
            inline = not self._running and len(chunk) < self._inline_below  # not running: nothing queued
            start_drain = False
            if not inline:
                self._queue.append(chunk)
                self._backlog += len(chunk)
                start_drain, self._running = not self._running, True
        if inline:
            self._h.update(chunk)
        elif start_drain:
            try:
                self._pool.submit(self._drain)
            except BaseException as exc:  # pool shut down: nothing will drain the queue
                with self._cv:
                    self._running, self._error = False, exc
                    self._cv.notify_all()
                raise

    def _drain(self) -> None:
        while True:
            with self._cv:
                if not self._queue or self._error is not None:
                    self._running = False
                    self._cv.notify_all()
                    return
                chunk = self._queue.popleft()
            try:
                self._h.update(chunk)  # releases the GIL for large chunks
            except BaseException as exc:
                with self._cv:
                    self._error = exc
            with self._cv:
                self._backlog -= len(chunk)
                self._cv.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def digest(self) -> bytes:
        """The sha256 of every chunk fed, once all of them are hashed."""
        with self._cv:
            self._cv.wait_for(lambda: not self._running)
            self._raise_error()
            assert not self._queue
            return self._h.digest()

    def discard(self) -> None:
        """Drops the chunks not hashed yet and waits until no pool thread is hashing (idempotent)."""
        with self._cv:
            self._backlog -= sum(len(c) for c in self._queue)
            self._queue.clear()
            self._cv.wait_for(lambda: not self._running)
