"""Worker errors.

    WorkerError
    ├── ExecutorError            an assignment failed; `kind` is reported to the coordinator
    │   ├── InvalidArgsError     a property of the task's args: it cannot be run as written, on any node
    │   │                        (ERROR_KIND_INVALID_ARGS: a signed vote; two of them abort the task, fee paid)
    │   ├── OutOfMemoryError     a resource error, never a wrong result (ERROR_KIND_OUT_OF_MEMORY)
    │   │   └── ModelNotFoundError  this node cannot get the model (hub, network, disk): node-side, never a vote
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


class OutOfMemoryError(ExecutorError):
    kind = worker_pb2.ERROR_KIND_OUT_OF_MEMORY


class ModelNotFoundError(OutOfMemoryError):
    """The node cannot get the model: hub down, network, disk, or a model it does not hold. Whether a model
    exists is no property of the args this node can prove, so it is reported as a node-side resource failure
    (like out-of-memory: a QoS timeout, no slash, the task goes to another node), never as an invalid-args vote."""

    def __init__(self, model: str, detail: str = "") -> None:
        super().__init__(f"model not found: {model}" + (f" ({detail})" if detail else ""))
        self.model = model


class ExecutionCrashError(ExecutorError):
    kind = worker_pb2.ERROR_KIND_CRASH


class ConnectError(WorkerError):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
