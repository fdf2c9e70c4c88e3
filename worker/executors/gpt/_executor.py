"""`GptExecutor`: runs one GPT task (a `helium.v1.GptTask`) and returns the chat.completion and its result hash.

Per task: validate the definition, fix determinism (seed, algorithms) for it,
load the model through the shared cache, render the prompt, generate, cut each
choice where it ended, parse tool calls, build the response and hash the token
ids. Errors leave through one map (`_translate`): invalid definition → InvalidArgsError; a model
that cannot be found → ModelNotFoundError (node-side, like out-of-memory); running out of
memory → OutOfMemoryError (a resource error, never a wrong result); anything
else that breaks inside the model or a library → ExecutionCrashError naming its
kind.

Backends: "transformers" (CPU, CUDA, MPS: the reference) and "vllm" (CUDA,
optional). "auto" resolves to "transformers": the two backends do not promise
the same tokens as each other, and three nodes of one group must agree, so a
node runs vLLM only when its operator asks for it (and advertises it).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import structlog

from helium.tasks import TaskArgsError
from helium.tasks.gpt import validate_gpt_task, with_defaults
from helium.v1 import gpt_pb2
from worker.device import DeviceInfo, detect_device, set_deterministic, supported_dtypes
from worker.errors import (
    ExecutionCrashError,
    ExecutorError,
    InvalidArgsError,
    OutOfMemoryError,
)
from worker.executors.base import Capabilities, Job, Outcome
from worker.executors.gpt._response import (
    Choice,
    StreamEmitter,
    build_response,
    finish_sequence,
    make_choice,
    result_hash,
)
from worker.models import ModelCache

__all__ = ["BACKENDS", "GptExecutor", "GptRun"]

log = structlog.get_logger(__name__)

BACKENDS = ("auto", "transformers", "vllm")
_SHARED_RNG_LOCK = threading.Lock()


@dataclass(frozen=True)
class GptRun:
    outcome: Outcome
    choices: tuple[Choice, ...]
    response: dict
_DEFAULT_BUDGET_FRACTION = 0.8


class GptExecutor:
    """The GPT executor (task_type "gpt"). Synchronous; the session runs one job at a time in a thread."""

    task_type = "gpt"

    def __init__(self, device: DeviceInfo | str | None = None, cache: ModelCache | None = None,
                 backend: str = "auto") -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.device = device if isinstance(device, DeviceInfo) else detect_device(device)
        self.cache = cache or ModelCache(max(1, int(self.device.vram_bytes * _DEFAULT_BUDGET_FRACTION)))
        if backend == "vllm":
            from worker.executors.gpt._vllm import VllmBackend

            self.backend = VllmBackend(self.device, self.cache)
        else:
            from worker.executors.gpt._transformers import TransformersBackend

            self.backend = TransformersBackend(self.device, self.cache)
        log.info("gpt_executor_ready", backend=self.backend.name, device=self.device.torch_device,
                 card=self.device.card_id)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            task_type=self.task_type,
            backends=(self.backend.name,),
            dtypes=self.backend.dtypes() if hasattr(self.backend, "dtypes") else supported_dtypes(
                self.device.torch_device),
            quantize_bits=self.backend.quantize_bits(),
            loaded_models=self.cache.loaded(),
            cached_models=self.cache.cached_on_disk(kind="gpt"),
            extra={"device": self.device.kind, "card": self.device.card, "card_id": self.device.card_id,
                   "vram_bytes": self.device.vram_bytes},
        )

    def run(self, job: Job) -> Outcome:
        return self.execute(job).outcome

    def execute(self, job: Job) -> GptRun:
        """`run`, keeping the parts: the choices (with their token ids) and the response document."""
        spec = job.spec
        if not isinstance(spec, gpt_pb2.GptTask):
            raise InvalidArgsError(f"gpt: expected a helium.v1.GptTask, got {type(spec).__name__}")
        log_ = log.bind(task_id=job.task_id, assignment_id=job.assignment_id, model=spec.model)
        started = time.monotonic()
        with _translate():
            try:
                validate_gpt_task(spec, local_model_dirs=True)  # network tasks are checked in worker._jobs
            except TaskArgsError as e:
                raise InvalidArgsError(str(e)) from e
            task = with_defaults(spec)
            loaded = self.backend.load(task)
            prep = self.backend.prepare(task, loaded)
            created = int(time.time())
            emitter = None
            if job.on_delta is not None:
                emitter = StreamEmitter(send=job.on_delta, task_id=job.task_id, model=task.model, created=created,
                                        n=prep.n, decode=prep.decode, eos_ids=loaded.eos_ids,
                                        stop_strings=prep.stop_strings, tools=bool(task.tools))
            # CPU and MPS sample from the process-wide generator: nodes sharing a process take turns, or
            # their seeds would interleave. A CUDA node seeds and samples on its own GPU's generator.
            cuda = self.device.torch_device.startswith("cuda")
            with contextlib.nullcontext() if cuda else _SHARED_RNG_LOCK:
                set_deterministic(task.seed, self.device.torch_device)
                raw = self.backend.generate(prep, on_step=emitter.update if emitter else None,
                                            is_cancelled=job.is_cancelled)
            if job.is_cancelled():
                raise ExecutionCrashError("cancelled: the assignment was cancelled during generation")
            choices = []
            for i, ids in enumerate(raw):
                rc, text = finish_sequence(ids, eos_ids=loaded.eos_ids, stop_strings=prep.stop_strings,
                                           decode=prep.decode, max_new_tokens=prep.max_new_tokens)
                choices.append(make_choice(i, rc, text, tools=bool(task.tools), id_prefix=job.task_id))
            if emitter is not None:
                emitter.finish(choices)
        response = build_response(task_id=job.task_id, model=task.model, created=created,
                                  prompt_tokens=len(prep.prompt_ids), choices=choices)
        digest = result_hash(choices)
        completion = response["usage"]["completion_tokens"]
        log_.info("gpt_task_done", backend=self.backend.name, choices=len(choices),
                  prompt_tokens=len(prep.prompt_ids), completion_tokens=completion,
                  seconds=round(time.monotonic() - started, 3), result_hash=digest.hex())
        outcome = Outcome(
            result_hash=digest,
            output=json.dumps(response, ensure_ascii=False, separators=(",", ":")).encode(),
            prompt_tokens=len(prep.prompt_ids),
            completion_tokens=completion,
        )
        return GptRun(outcome, tuple(choices), response)

    def close(self) -> None:
        self.cache.clear()
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


@contextmanager
def _translate():
    """The one map from what a backend raises to the worker's error kinds."""
    try:
        yield
    except ExecutorError:
        raise
    except MemoryError as e:
        raise OutOfMemoryError(f"out of host memory: {e}") from e
    except Exception as e:
        if _is_oom(e):
            raise OutOfMemoryError(f"out of device memory: {str(e).splitlines()[0] if str(e) else e!r}") from e
        log.exception("gpt_execution_crashed", kind=type(e).__name__)
        raise ExecutionCrashError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]) from e


def _is_oom(e: BaseException) -> bool:
    try:
        import torch

        if isinstance(e, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    text = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in text.lower() or "MPS backend out of memory" in text)
