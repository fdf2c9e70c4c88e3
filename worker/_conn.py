"""One registered stream to the coordinator, and how its ending status is read.

A status the coordinator means as a refusal (bad signature, no stake, bad
request) is not retryable; anything else (UNAVAILABLE, a dropped connection,
a clean end while the coordinator restarts) is.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from helium.v1 import worker_pb2
from worker.errors import ConnectError

__all__ = ["Conn", "status_error", "status_error_from"]

# Refusals the coordinator means: reconnecting cannot help.
_FATAL_CODES = {
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.UNIMPLEMENTED,
}


class Conn:
    """One registered stream: a single writer drains `queue` so writes never overlap."""

    def __init__(self, call: Any, channel: grpc.aio.Channel, relay_channel: grpc.aio.Channel | None) -> None:
        self.call = call
        self.channel = channel
        self.relay_channel = relay_channel
        self.queue: asyncio.Queue[worker_pb2.ConnectRequest | None] = asyncio.Queue()
        self.relay: Any = None
        # The coordinator reads ConnectRequest batches (its Registered says so).
        self.batches = False

    def send(self, msg: worker_pb2.ConnectRequest) -> None:
        self.queue.put_nowait(msg)

    async def write_loop(self) -> None:
        """Writes in order; what is queued together goes as one batch when the coordinator reads them."""
        while True:
            msg = await self.queue.get()
            batch = [msg] if msg is not None else []
            while msg is not None and self.batches and not self.queue.empty():
                msg = self.queue.get_nowait()
                if msg is not None:
                    batch.append(msg)
            try:
                if len(batch) > 1:
                    await self.call.write(worker_pb2.ConnectRequest(batch=worker_pb2.ConnectRequestBatch(messages=batch)))
                elif batch:
                    await self.call.write(batch[0])
                if msg is None:
                    await self.call.done_writing()
                    return
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
                return  # the stream is gone; the reader sees why


def status_error_from(code: grpc.StatusCode, details: str | None, during: str) -> ConnectError:
    retryable = code not in _FATAL_CODES
    return ConnectError(f"coordinator ended the {during} with {code.name}: {details or 'no details'}",
                        retryable=retryable)


def status_error(exc: grpc.aio.AioRpcError, during: str) -> ConnectError:
    return status_error_from(exc.code(), exc.details(), during)
