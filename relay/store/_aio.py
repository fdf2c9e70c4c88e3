"""Async adapters between a stream of chunks and a blocking BlobWriter/BlobReader.

Disk work (write + sha256, reads) runs in threads, pipelined with the network: chunk i+1 is received
while chunk i is written and hashed, and the next few chunks of a Get are read and encoded while the
current ones are sent (hashlib and file I/O release the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

from relay.store._base import BlobInfo, BlobReader, BlobWriter, T

__all__ = ["read_frames", "write_chunks"]

_READ_AHEAD_CHUNKS = 4


async def write_chunks(writer: BlobWriter, chunks: AsyncIterator[bytes]) -> BlobInfo:
    """Writes every chunk, then commits. Errors from the writer surface at the next chunk or at the end;
    the caller aborts the writer (``with writer:``) on any error."""
    pending: asyncio.Future | None = None
    try:
        async for chunk in chunks:
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(writer.write, chunk))
        if pending is not None:
            await pending
            pending = None
        return await asyncio.to_thread(writer.commit)
    finally:
        if pending is not None and not pending.done():
            await asyncio.wait([pending])  # the writer's fd must outlive its last write


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
        ahead = asyncio.ensure_future(asyncio.to_thread(_next_batch, frames, _READ_AHEAD_CHUNKS))
        while batch := await ahead:
            ahead = asyncio.ensure_future(asyncio.to_thread(_next_batch, frames, _READ_AHEAD_CHUNKS))
            for frame in batch:
                yield frame
    finally:
        if not ahead.done():
            await asyncio.wait([ahead])  # the reader must outlive the thread still reading it
        if hasattr(frames, "close"):
            frames.close()  # a backend's mapping is released now, not when the generator is collected
