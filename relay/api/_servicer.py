"""RelayService over grpc.aio: parse, authenticate, hand the bytes to the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import structlog

from helium.v1 import relay_pb2, relay_pb2_grpc
from relay import _wire
from relay.api._translate import translate_errors
from relay.auth import GET, PUT, ZERO_HASH, RelayAuthenticator
from relay.errors import InvalidRequestError
from relay.store import BlobStore, canonical_slot, canonical_task_id, parse_sha256
from relay.store._aio import read_frames, write_chunks

__all__ = ["RelayServicer"]

log = structlog.get_logger("relay.api")


async def _chunks(requests: AsyncIterator[relay_pb2.PutRequest | memoryview]) -> AsyncIterator[bytes | memoryview]:
    async for req in requests:
        if isinstance(req, memoryview):  # the fast path of relay._wire
            yield req
        elif req.WhichOneof("part") == "chunk":
            yield req.chunk
        else:
            raise InvalidRequestError("after the header every PutRequest must be a chunk")


class RelayServicer(relay_pb2_grpc.RelayServiceServicer):
    """Thin: each RPC validates the names, checks the auth, then streams to or from the store.

    Register it with :func:`relay.server.add_relay_to_server`: chunks travel as raw buffers through the
    (de)serializers of :mod:`relay._wire`, not as generated messages.
    """

    def __init__(self, store: BlobStore, authenticator: RelayAuthenticator, chunk_bytes: int,
                 on_bytes=None) -> None:  # fmt: skip
        # Called as on_bytes(direction, n) after each stored/served blob (metrics), when given.
        self.on_bytes = on_bytes
        self._store = store
        self._auth = authenticator
        self._chunk_bytes = chunk_bytes

    def close(self) -> None:
        """Releases the authenticator's nonce file; the servicer serves nothing afterwards."""
        self._auth.close()

    @translate_errors
    async def Put(
        self, request_iterator: AsyncIterator[relay_pb2.PutRequest | memoryview], context: grpc.aio.ServicerContext
    ) -> relay_pb2.PutResponse:
        first = await anext(aiter(request_iterator), None)
        if not isinstance(first, relay_pb2.PutRequest) or first.WhichOneof("part") != "header":
            raise InvalidRequestError("the first PutRequest must be a header")
        h = first.header
        task_id, slot = canonical_task_id(h.task_id), canonical_slot(h.slot)
        digest = parse_sha256(h.sha256, "header.sha256")
        caller = self._auth.verify(PUT, task_id, h.slot, digest, h.auth if h.HasField("auth") else None)
        with self._store.begin_write(task_id, slot, digest, h.size) as writer:
            info = await write_chunks(writer, _chunks(request_iterator))
        log.info("relay_put", task_id=task_id, slot=slot, node=caller.address, size=info.size)
        if self.on_bytes is not None:
            self.on_bytes("in", info.size)
        return relay_pb2.PutResponse(sha256=info.sha256_hex, size=info.size)

    @translate_errors
    async def Get(
        self, request: relay_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[relay_pb2.GetResponse | _wire.Encoded]:
        task_id, slot = canonical_task_id(request.task_id), canonical_slot(request.slot)
        auth = request.auth if request.HasField("auth") else None
        caller = self._auth.verify(GET, task_id, request.slot, ZERO_HASH, auth)
        reader = await asyncio.to_thread(self._store.open_read, task_id, slot)
        frames = read_frames(reader, self._chunk_bytes, _wire.encoded_chunk)
        with reader:
            async with contextlib.aclosing(frames):  # closed before the reader, also when the call is cancelled
                first = asyncio.ensure_future(anext(frames, None))  # read while the info goes out
                try:
                    info = reader.info
                    yield relay_pb2.GetResponse(info=relay_pb2.BlobInfo(sha256=info.sha256_hex, size=info.size))
                    frame = await first
                finally:
                    if not first.done():
                        await asyncio.wait([first])  # the generator is closed only once it is idle
                    if not first.cancelled():
                        first.exception()  # retrieved: raised above when it mattered
                if frame is not None:
                    yield frame
                    async for frame in frames:
                        yield frame  # GetResponse{chunk}, already encoded off the loop (relay._wire)
        log.info("relay_get", task_id=task_id, slot=slot, node=caller.address, size=info.size)
        if self.on_bytes is not None:
            self.on_bytes("out", info.size)
