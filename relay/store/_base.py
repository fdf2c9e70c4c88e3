"""The blob store contract: write-once blobs addressed by (task_id, slot), each kept with its sha256."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from relay.errors import InvalidRequestError

__all__ = ["BlobInfo", "BlobReader", "BlobStore", "BlobWriter", "parse_sha256"]

T = TypeVar("T")


def parse_sha256(value: bytes | str, field: str = "sha256") -> bytes:
    """32 raw bytes from raw bytes or 64 hex digits (optional 0x); InvalidRequestError names `field`."""
    if isinstance(value, bytes | bytearray):
        if len(value) != 32:
            raise InvalidRequestError(f"{field} must be 32 bytes, got {len(value)}")
        return bytes(value)
    text = value.removeprefix("0x") if isinstance(value, str) else ""
    if len(text) != 64:
        raise InvalidRequestError(f"{field} must be 64 hex digits, got {value!r:.80}")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise InvalidRequestError(f"{field} must be 64 hex digits, got {value!r:.80}") from None


@dataclass(frozen=True)
class BlobInfo:
    """What is stored at one slot: canonical task id and slot, sha256 (32 bytes) and size in bytes."""

    task_id: str
    slot: str
    sha256: bytes
    size: int

    @property
    def sha256_hex(self) -> str:
        return self.sha256.hex()


class BlobWriter(ABC):
    """One pending write. Nothing is visible at the slot until :meth:`commit` succeeds.

    Use as a context manager: leaving the block without a successful commit aborts the write.
    """

    @abstractmethod
    def write(self, chunk: bytes) -> None:
        """Appends `chunk`. Raises ResourceLimitError past the store's max_blob_bytes and
        ContentMismatchError past the declared size; the write is then aborted (nothing is left)."""

    @abstractmethod
    def commit(self) -> BlobInfo:
        """Checks the bytes against the declared size and sha256 (ContentMismatchError otherwise), makes them
        durable and publishes them atomically. BlobExistsError if the slot was written meanwhile. On any
        error nothing is left behind."""

    @abstractmethod
    def abort(self) -> None:
        """Discards the pending bytes. Idempotent; a no-op after commit."""

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.abort()


class BlobReader(ABC):
    """An open, stored blob: :attr:`info` and its bytes, streamed in chunks."""

    info: BlobInfo

    @abstractmethod
    def chunks(self, chunk_bytes: int) -> Iterator[bytes]:
        """The blob's bytes in pieces of at most `chunk_bytes` (the last one may be shorter)."""

    def frames(self, chunk_bytes: int, encode: Callable[[memoryview], T]) -> Iterator[T]:
        """``encode(piece)`` for each piece of :meth:`chunks`. A piece is valid only during its call
        (a backend may hand out views of its own buffers, so `encode` copies what it keeps)."""
        for chunk in self.chunks(chunk_bytes):
            with memoryview(chunk) as piece:
                yield encode(piece)

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class BlobStore(ABC):
    """Write-once blobs addressed by (task_id, slot).

    Contract (every implementation):
    - task_id is ``0x`` + 64 hex digits (or 32 raw bytes); slot follows :func:`relay.store.canonical_slot`.
      Anything else raises InvalidRequestError / InvalidSlotError naming the value, before touching storage.
    - A slot is written at most once: a second write raises BlobExistsError (gRPC ALREADY_EXISTS), even if
      its bytes are identical. Concurrent writers of one slot: exactly one wins.
    - A write declares its sha256 and size up front. A declared size above ``max_blob_bytes`` raises
      ResourceLimitError before anything is stored; streamed bytes are checked against both limits as
      they arrive. Bytes that do not match the declared size or sha256 are refused (ContentMismatchError).
    - A refused or aborted write leaves nothing behind (no partial blob, no temp file).
    - A committed write is durable and atomic: readers see either nothing or the whole blob.
    - Reads of a missing slot raise BlobNotFoundError.
    - A write that does not fit the storage raises StorageFullError (RESOURCE_EXHAUSTED, reason relay_full):
      up front when the declared size exceeds the free space, or when the disk fills up meanwhile.
    - Blobs are kept for a retention period (:meth:`sweep`), longer when their task is pinned (:meth:`pin_task`).
    - Methods are blocking; from an event loop call them through ``asyncio.to_thread`` (chunk writes of
      a streaming writer are cheap enough to call inline).
    """

    max_blob_bytes: int

    @abstractmethod
    def begin_write(self, task_id: str | bytes, slot: str, sha256: bytes | str, size: int) -> BlobWriter:
        """Starts a write of `size` bytes hashing to `sha256`. Raises InvalidRequestError/InvalidSlotError,
        ResourceLimitError (size > max_blob_bytes) or BlobExistsError before anything is stored."""

    @abstractmethod
    def open_read(self, task_id: str | bytes, slot: str) -> BlobReader:
        """Opens a stored blob for streaming. BlobNotFoundError if the slot is empty."""

    @abstractmethod
    def stat(self, task_id: str | bytes, slot: str) -> BlobInfo:
        """The info of a stored blob. BlobNotFoundError if the slot is empty."""

    @abstractmethod
    def exists(self, task_id: str | bytes, slot: str) -> bool: ...

    @abstractmethod
    def list_slots(self, task_id: str | bytes) -> list[str]:
        """The written slots of a task, sorted; empty if none."""

    @abstractmethod
    def delete_task(self, task_id: str | bytes) -> int:
        """Removes every blob of a task (retention/cleanup by the owner, never via the RPC). Returns the count."""

    @abstractmethod
    def sweep(self, retention_s: float, now: float | None = None) -> int:
        """Removes the blobs written more than `retention_s` ago, except those of a task pinned past `now`
        (default: the current time); pins that ran out go too. Returns how many blobs were removed."""

    @abstractmethod
    def pin_task(self, task_id: str | bytes, until: float) -> float:
        """Keeps every blob of a task, however old, until the unix time `until` (slash evidence); a later pin
        extends an earlier one, never shortens it. Durable when it returns; returns the pin in force."""

    @abstractmethod
    def pinned_until(self, task_id: str | bytes) -> float:
        """The unix time a task's blobs are pinned until; 0 when it is not pinned."""

    def close(self) -> None:
        """Releases background resources; the store is not used afterwards."""
        return None

    # --- plain in-process API (the coordinator puts task inputs with these, no gRPC) --------------------

    def put_bytes(self, task_id: str | bytes, slot: str, data: bytes) -> BlobInfo:
        """Stores `data` at (task_id, slot) in one call; same rules as a streamed write."""
        with self.begin_write(task_id, slot, hashlib.sha256(data).digest(), len(data)) as writer:
            writer.write(data)
            return writer.commit()

    def get_bytes(self, task_id: str | bytes, slot: str) -> bytes:
        """The whole blob at (task_id, slot). BlobNotFoundError if empty."""
        with self.open_read(task_id, slot) as reader:
            return b"".join(reader.chunks(max(reader.info.size, 1)))
