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
    └── RelayUnavailableError      UNAVAILABLE        (client side) the relay cannot be reached; retryable
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
    "error_from_status",
    "status_of",
]


class RelayError(Exception):
    """Root of every relay error."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retryable: bool = False


class InvalidRequestError(RelayError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidSlotError(InvalidRequestError):
    pass


class ContentMismatchError(InvalidRequestError):
    pass


class AuthenticationError(RelayError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RelayError):
    code = grpc.StatusCode.PERMISSION_DENIED


class BlobNotFoundError(RelayError):
    code = grpc.StatusCode.NOT_FOUND


class BlobExistsError(RelayError):
    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceLimitError(RelayError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class RelayUnavailableError(RelayError):
    code = grpc.StatusCode.UNAVAILABLE
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


def error_from_status(code: grpc.StatusCode, details: str | None) -> RelayError:
    """The client-side error for a status the relay answered."""
    cls = _BY_CODE.get(code, RelayError)
    return cls(f"{code.name}: {details or ''}".rstrip(": "))
