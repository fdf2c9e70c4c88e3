"""Worker errors.

    WorkerError
    ├── ExecutorError            an assignment failed; `kind` is reported to the coordinator
    │   ├── InvalidArgsError     the task cannot be run as written (ERROR_KIND_INVALID_ARGS)
    │   │   └── ModelNotFoundError
    │   ├── OutOfMemoryError     a resource error, never a wrong result (ERROR_KIND_OUT_OF_MEMORY)
    │   └── ExecutionCrashError  the model or library crashed (ERROR_KIND_CRASH)
    └── ConnectError             the coordinator cannot be reached or refused the node; `retryable` says
                                 whether reconnecting can help
"""

from __future__ import annotations

from helium.v1 import worker_pb2

__all__ = [
    "ConnectError",
    "ExecutionCrashError",
    "ExecutorError",
    "InvalidArgsError",
    "ModelNotFoundError",
    "OutOfMemoryError",
    "WorkerError",
]


class WorkerError(Exception):
    """Root of every worker error."""


class ExecutorError(WorkerError):
    kind: int = worker_pb2.ERROR_KIND_CRASH


class InvalidArgsError(ExecutorError):
    kind = worker_pb2.ERROR_KIND_INVALID_ARGS


class ModelNotFoundError(InvalidArgsError):
    def __init__(self, model: str, detail: str = "") -> None:
        super().__init__(f"model not found: {model}" + (f" ({detail})" if detail else ""))
        self.model = model


class OutOfMemoryError(ExecutorError):
    kind = worker_pb2.ERROR_KIND_OUT_OF_MEMORY


class ExecutionCrashError(ExecutorError):
    kind = worker_pb2.ERROR_KIND_CRASH


class ConnectError(WorkerError):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
