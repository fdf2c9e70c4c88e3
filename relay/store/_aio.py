"""Async adapters between a stream of chunks and a blocking BlobWriter/BlobReader.

Disk work (write + sha256, reads) runs in a thread, pipelined one chunk deep with the network: chunk
i+1 is received while chunk i is written and hashed (hashlib and file I/O release the GIL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from relay.store._base import BlobInfo, BlobReader, BlobWriter

__all__ = ["read_chunks", "write_chunks"]

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


def _read_batch(it, n: int) -> list[bytes]:
    batch = []
    for chunk in it:
        batch.append(chunk)
        if len(batch) == n:
            break
    return batch


async def read_chunks(reader: BlobReader, chunk_bytes: int) -> AsyncIterator[bytes]:
    """The blob's bytes in chunks of `chunk_bytes`, read a few chunks per thread hop."""
    it = reader.chunks(chunk_bytes)
    while batch := await asyncio.to_thread(_read_batch, it, _READ_AHEAD_CHUNKS):
        for chunk in batch:
            yield chunk
