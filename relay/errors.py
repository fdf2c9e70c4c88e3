"""Relay errors.

Every class carries the gRPC status it maps to (``code``); :func:`status_of` and
:func:`error_from_status` are the one place that translates between the two, on the server and in
the client.

    RelayError                     INTERNAL       root; anything unexpected
    ├── InvalidRequestError        INVALID_ARGUMENT   malformed header, bad task id, missing field
    │   ├── InvalidSlotError       INVALID_ARGUMENT   slot name outside the allowed syntax (path traversal...)
    │   └── ContentMismatchError   INVALID_ARGUMENT   bytes do not match the declared sha256 or size
    ├── AuthenticationError        UNAUTHENTICATED    bad signature, stale timestamp, replayed nonce
    ├── PermissionDeniedError      PERMISSION_DENIED  no grant, bad/expired grant, slot not in the grant
    ├── BlobNotFoundError          NOT_FOUND          nothing stored at (task_id, slot)
    ├── BlobExistsError            ALREADY_EXISTS     the slot was already written (slots are write-once)
    ├── ResourceLimitError         RESOURCE_EXHAUSTED blob larger than max_blob_bytes, nonce cache full
    │   └── StorageFullError       RESOURCE_EXHAUSTED the relay's disk is full (reason relay_full): try later
    └── RelayUnavailableError      UNAVAILABLE        (client side) the relay cannot be reached; retryable

Each class also has a stable `reason`, sent in the ``helium-reason`` trailing metadata and read back by
the client, so that a full disk and a blob too large (both RESOURCE_EXHAUSTED) are told apart without
parsing messages. `status` is `code` under the name the coordinator's error interceptor reads, so a relay
error raised inside a coordinator RPC (a task's input written to a full relay) keeps its status.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AuthenticationError",
    "BlobExistsError",
    "BlobNotFoundError",
    "ContentMismatchError",
    "InvalidRequestError",
    "InvalidSlotError",
    "PermissionDeniedError",
    "RelayError",
    "RelayUnavailableError",
    "ResourceLimitError",
    "StorageFullError",
    "error_from_status",
    "status_of",
]


class RelayError(Exception):
    """Root of every relay error."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "relay_error"
    retryable: bool = False

    @property
    def status(self) -> grpc.StatusCode:
        return self.code


class InvalidRequestError(RelayError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_args"


class InvalidSlotError(InvalidRequestError):
    pass


class ContentMismatchError(InvalidRequestError):
    pass


class AuthenticationError(RelayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "bad_signature"


class PermissionDeniedError(RelayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class BlobNotFoundError(RelayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class BlobExistsError(RelayError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "already_exists"


class ResourceLimitError(RelayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "resource_limit"


class StorageFullError(ResourceLimitError):
    """The relay has no room for the blob now; a later write may succeed (expired blobs are swept)."""

    reason = "relay_full"
    retryable = True


class RelayUnavailableError(RelayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"
    retryable = True


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message a servicer answers for `exc`; anything not a RelayError is INTERNAL
    with a generic message (the traceback is logged by the caller, never sent)."""
    if isinstance(exc, RelayError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal relay error"


_BY_CODE: dict[grpc.StatusCode, type[RelayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: BlobNotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: BlobExistsError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceLimitError,
    grpc.StatusCode.UNAVAILABLE: RelayUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: RelayUnavailableError,
}


_BY_REASON: dict[str, type[RelayError]] = {StorageFullError.reason: StorageFullError}


def error_from_status(code: grpc.StatusCode, details: str | None, reason: str = "") -> RelayError:
    """The client-side error for a status (and ``helium-reason``) the relay answered."""
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code, RelayError)
    return cls(f"{code.name}: {details or ''}".rstrip(": "))
