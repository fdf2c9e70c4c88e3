"""Coordinator errors. Each class carries the gRPC status it maps to and a stable
machine-readable `reason`, sent to clients in the `helium-reason` trailing metadata
(the gateway maps reasons to HTTP statuses).

    CoordinatorError                    INTERNAL
    ├── InvalidArgument                 INVALID_ARGUMENT      invalid_args
    ├── Unauthenticated                 UNAUTHENTICATED       bad_signature
    ├── PermissionDenied                PERMISSION_DENIED     permission_denied
    │   └── NotStaked                                         not_staked
    ├── NotFound                        NOT_FOUND             not_found
    ├── AlreadyExists                   ALREADY_EXISTS        already_exists
    ├── FailedPrecondition              FAILED_PRECONDITION   wrong_state
    │   ├── InsufficientDeposit                               insufficient_deposit
    │   └── NoCapableNodes                                    no_capable_nodes
    ├── ResourceExhausted               RESOURCE_EXHAUSTED    queue_full
    │   └── StorageFull                                       disk_full     (retryable)
    └── Unavailable                     UNAVAILABLE           unavailable   (retryable)
"""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExists",
    "CoordinatorError",
    "FailedPrecondition",
    "InsufficientDeposit",
    "InvalidArgument",
    "NoCapableNodes",
    "NotFound",
    "NotStaked",
    "PermissionDenied",
    "ResourceExhausted",
    "StorageFull",
    "Unauthenticated",
    "Unavailable",
]


class CoordinatorError(Exception):
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"
    retryable: bool = False


class InvalidArgument(CoordinatorError):
    status = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid_args"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthenticated(CoordinatorError):
    status = grpc.StatusCode.UNAUTHENTICATED
    reason = "bad_signature"


class PermissionDenied(CoordinatorError):
    status = grpc.StatusCode.PERMISSION_DENIED
    reason = "permission_denied"


class NotStaked(PermissionDenied):
    reason = "not_staked"


class NotFound(CoordinatorError):
    status = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class AlreadyExists(CoordinatorError):
    status = grpc.StatusCode.ALREADY_EXISTS
    reason = "already_exists"


class FailedPrecondition(CoordinatorError):
    status = grpc.StatusCode.FAILED_PRECONDITION
    reason = "wrong_state"


class InsufficientDeposit(FailedPrecondition):
    reason = "insufficient_deposit"


class NoCapableNodes(FailedPrecondition):
    reason = "no_capable_nodes"


class ResourceExhausted(CoordinatorError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "queue_full"


class StorageFull(ResourceExhausted):
    """The coordinator's disk is full: nothing of the refused request was stored; retry once space returns."""

    reason = "disk_full"
    retryable = True


class Unavailable(CoordinatorError):
    status = grpc.StatusCode.UNAVAILABLE
    reason = "unavailable"
    retryable = True
