"""The one small interface every executor implements.

The worker session turns a `WorkAssignment` proto into a `Job` at once; an
executor sees only the typed task definition (`helium.v1` GptTask / SdTask, which
*is* the task schema) and returns an `Outcome`. It raises one of the
`worker.errors` exceptions, whose kind (invalid args / out of memory / crash) the
session reports to the coordinator.

Executors are synchronous: they run in a worker thread of the session, one job
at a time per node, so GPU code never blocks the stream's event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from google.protobuf.message import Message

__all__ = ["Capabilities", "Executor", "Job", "Outcome", "OutputBlob"]


@dataclass(frozen=True)
class Job:
    """One assignment, as the executor sees it."""

    task_id: str
    assignment_id: str
    # helium.v1.GptTask or helium.v1.SdTask.
    spec: Message
    # Called with each chat.completion.chunk dict when streaming is asked for; None otherwise.
    on_delta: Callable[[dict], None] | None = None
    # Set by the session when the assignment is cancelled; executors check it between steps.
    is_cancelled: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class OutputBlob:
    """A blob the session stores in the relay under the node's result slot
    (`result/<address>` + `/` + suffix, or exactly `result/<address>` when suffix is empty)."""

    suffix: str
    data: bytes
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class Outcome:
    """What an executor returns: the bytes the node signs over, and the output."""

    # 32 bytes; the value that is signed and compared between nodes.
    result_hash: bytes
    # The response document (GPT: chat.completion JSON; SD: image manifest JSON).
    output: bytes
    blobs: tuple[OutputBlob, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    steps: int = 0
    # SD: one 64-bit pHash per image, in order.
    phashes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Capabilities:
    """What a node advertises so the scheduler never sends it a task it cannot run."""

    task_type: str  # "gpt" or "sd"
    backends: tuple[str, ...]
    dtypes: tuple[str, ...]
    quantize_bits: tuple[int, ...] = ()
    loaded_models: tuple[str, ...] = ()
    cached_models: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Executor(Protocol):
    task_type: str  # "gpt" or "sd"

    def capabilities(self) -> Capabilities: ...

    def run(self, job: Job) -> Outcome: ...

    def close(self) -> None: ...
