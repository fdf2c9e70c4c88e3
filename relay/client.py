"""RelayClient: Put and Get blobs over gRPC, signed with the caller's key, chunked, with deadlines."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import grpc
import structlog
from eth_account.signers.local import LocalAccount
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from chain.signing import Domain
from helium.v1 import relay_pb2, task_pb2
from relay import _wire
from relay._malloc import tune_malloc
from relay.auth import GET, PUT, build_auth
from relay.config import DEFAULT_CHUNK_BYTES
from relay.errors import ContentMismatchError, InvalidRequestError, RelayError, error_from_status
from relay.store import canonical_task_id
from relay.store._hashing import BackgroundHash

__all__ = ["RelayClient"]

log = structlog.get_logger("relay.client")

_HASH_INLINE_BYTES = 1 << 20  # hash larger blobs off the event loop
_PREENCODE_BYTES = 8 << 20  # a Put encodes up to this much of its chunks while the blob is hashed


def _reason(exc: grpc.aio.AioRpcError) -> str:
    """The relay's ``helium-reason`` trailing metadata, "" when it sent none."""
    for key, value in exc.trailing_metadata() or ():
        if key == "helium-reason":
            return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


def _is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, _Unavailable)


class _Unavailable(Exception):
    def __init__(self, error: RelayError) -> None:
        self.error = error


def _start_sha256(data: bytes | memoryview) -> asyncio.Future[bytes]:
    """The sha256 of `data`: a large blob is hashed on a worker thread, started now."""
    loop = asyncio.get_running_loop()
    if len(data) <= _HASH_INLINE_BYTES:
        done = loop.create_future()
        done.set_result(hashlib.sha256(data).digest())
        return done
    return loop.run_in_executor(None, lambda: hashlib.sha256(data).digest())


class RelayClient:
    """Talks to a relay (bundled in the coordinator or standalone) as the owner of `key`.

    The channel should allow messages of chunk_bytes (the gRPC default of 4 MiB fits the default
    1 MiB chunks); a channel opened for the relay alone should use :func:`relay.config.grpc_options`
    (large HTTP/2 frames and window: bulk transfers are not paced by flow control). Large blobs are
    hashed on worker threads, and constructing a client tunes the process's allocator for blob-sized
    buffers (:mod:`relay._malloc`). Each call has a deadline of `timeout`; a relay
    that is UNAVAILABLE is retried up to `attempts` times with jittered backoff, each attempt freshly
    signed. Errors are the classes of :mod:`relay.errors`, mapped from the relay's status.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        key: LocalAccount | bytes,
        domain: Domain,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout: timedelta = timedelta(seconds=120),
        attempts: int = 3,
    ) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be > 0, got {chunk_bytes}")
        tune_malloc()  # process-wide: blob buffers are reused, not faulted in afresh per blob (relay._malloc)
        self._put = channel.stream_unary(
            "/helium.v1.RelayService/Put",
            request_serializer=_wire.encode_put_request,
            response_deserializer=relay_pb2.PutResponse.FromString,
        )
        self._get = channel.unary_stream(
            "/helium.v1.RelayService/Get",
            request_serializer=relay_pb2.GetRequest.SerializeToString,
            response_deserializer=_wire.decode_get_response,
        )
        self._key, self._domain = key, domain
        self._chunk_bytes = chunk_bytes
        self._timeout = timeout.total_seconds()
        self._attempts = attempts

    async def _retrying(self, call):
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(initial=0.2, max=2.0),
            retry=retry_if_exception(_is_unavailable),
            reraise=True,
        ):
            with attempt:
                try:
                    return await call()
                except grpc.aio.AioRpcError as exc:
                    error = error_from_status(exc.code(), exc.details(), _reason(exc))
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        raise _Unavailable(error) from None
                    raise error from None
        raise AssertionError("unreachable")

    async def _call(self, call):
        try:
            return await self._retrying(call)
        except _Unavailable as exc:
            raise exc.error from None

    async def put(
        self, task_id: str | bytes, slot: str, data: bytes, grant: task_pb2.RelayGrant | None = None
    ) -> str:
        """Stores `data` at (task_id, slot); returns its sha256 hex. The slot must be empty (write-once)."""
        tid = canonical_task_id(task_id)
        # While the blob is hashed (on a thread) the call is opened and the first chunks are encoded here;
        # the header, signed over the hash, is still the first message: the relay sees hash and size first.
        hashing = _start_sha256(data)
        view = memoryview(data)
        step = self._chunk_bytes
        ready = min(len(view), _PREENCODE_BYTES) // step * step
        head = [_wire.encoded_chunk(view[off : off + step]) for off in range(0, ready, step)]

        async def requests(failed: list[BaseException]) -> AsyncIterator[relay_pb2.PutRequest | _wire.Encoded | memoryview]:
            try:
                digest = await asyncio.shield(hashing)  # a retried attempt awaits the same hash
                auth = build_auth(self._key, self._domain, PUT, tid, slot, digest, grant)
            except Exception as exc:  # gRPC would only cancel the call: keep the cause for the caller
                failed.append(exc)
                return
            header = relay_pb2.PutHeader(task_id=tid, slot=slot, sha256=digest.hex(), size=len(data), auth=auth)
            yield relay_pb2.PutRequest(header=header)
            for frame in head:
                yield frame
            for off in range(ready, len(view), step):
                yield view[off : off + step]  # encoded as PutRequest{chunk} by relay._wire

        async def call() -> relay_pb2.PutResponse:
            failed: list[BaseException] = []
            try:
                return await self._put(requests(failed), timeout=self._timeout)
            finally:
                if failed:
                    raise failed[0]

        try:
            response = await self._call(call)
        finally:
            if not hashing.done():
                hashing.cancel()
        digest = hashing.result()
        if response.sha256 != digest.hex() or response.size != len(data):
            raise ContentMismatchError(
                f"relay stored {response.size} bytes with sha256 {response.sha256} for slot {slot!r}, "
                f"sent {len(data)} bytes with sha256 {digest.hex()}"
            )
        return response.sha256

    async def get(self, task_id: str | bytes, slot: str, grant: task_pb2.RelayGrant | None = None) -> bytes:
        """The blob at (task_id, slot), checked against the size and sha256 the relay declares."""
        tid = canonical_task_id(task_id)

        async def call() -> bytes:
            auth = build_auth(self._key, self._domain, GET, tid, slot, grant=grant)
            stream = self._get(relay_pb2.GetRequest(task_id=tid, slot=slot, auth=auth), timeout=self._timeout)
            try:
                return await _receive(stream, slot)
            finally:
                stream.cancel()  # a no-op once the stream has ended

        return await self._call(call)


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """Hashes Gets of large blobs; a thread is held only while received chunks wait to be hashed."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="relay-client-hash")
        return _pool


async def _receive(stream, slot: str) -> bytes:
    """Reads BlobInfo then the chunks of one Get, checking the bytes against the declared size and sha256."""
    first = await stream.read()
    if not isinstance(first, relay_pb2.GetResponse) or first.WhichOneof("part") != "info":
        raise InvalidRequestError(f"relay answered Get of slot {slot!r} without BlobInfo first")
    size = first.info.size
    parts: list[bytes | memoryview] = []
    got = 0
    # A large blob is hashed on a pool thread while the loop keeps receiving (hashlib releases the GIL);
    # the chunks are kept in `parts` anyway, so the backlog needs no bound of its own.
    inline = 0 if size >= _HASH_INLINE_BYTES else size + 1
    hasher = BackgroundHash(_hash_pool(), max_backlog=size + 1, inline_below=inline)
    try:
        while (msg := await stream.read()) is not grpc.aio.EOF:
            chunk = msg if isinstance(msg, memoryview) else msg.chunk
            got += len(chunk)
            if got > size:
                raise ContentMismatchError(f"relay sent more than the declared {size} bytes for slot {slot!r}")
            hasher.feed(chunk)  # never blocks here: the backlog bound is the declared size
            parts.append(chunk)
        if got != size:
            raise ContentMismatchError(f"relay sent {got} bytes for slot {slot!r}, declared {size}")
        data = b"".join(parts)  # while the last chunks are hashed
        digest = (await asyncio.to_thread(hasher.digest) if inline == 0 else hasher.digest()).hex()
    except BaseException:
        hasher.discard()
        raise
    if digest != first.info.sha256:
        raise ContentMismatchError(
            f"bytes of slot {slot!r} do not match the relay's sha256 {first.info.sha256} (got {digest})"
        )
    return data
