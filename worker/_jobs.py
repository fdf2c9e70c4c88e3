"""The node's work: one assignment at a time, executed in a thread, delivered through an outbox.

`JobRunner` turns each `WorkAssignment` into a `Job` for the executor of its
task type, runs it off the event loop, stores its blobs in the relay, signs the
result hash, and keeps the Result (or ErrorReport) in `outbox` until the
coordinator acknowledges it: on disk, written before it is sent (worker._outbox),
so a restarted worker sends it again. The session re-sends the outbox after every
reconnect; a cancelled assignment sends nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from chain import signing
from helium.tasks import TaskArgsError
from helium.v1 import card_pb2, task_pb2, worker_pb2
from worker import metrics
from worker._outbox import ResultOutbox, outbox_path
from worker.errors import ConnectError, ExecutionCrashError, ExecutorError
from worker.executors.base import Executor, Job, Outcome
from worker.models import require_hub_model

if TYPE_CHECKING:
    from worker.session import WorkerNode

__all__ = ["INVALID_ARGS_HASH", "JobRunner"]

# The result hash an invalid-args verdict is signed over: keccak(b"helium:invalid-args").
INVALID_ARGS_HASH: bytes = signing.INVALID_ARGS_HASH

_TASK_TYPES = {"gpt": task_pb2.TASK_TYPE_GPT, "sd": task_pb2.TASK_TYPE_SD}
_CANCELLED_MEMORY = 4096


_OUTCOMES = {
    worker_pb2.ERROR_KIND_INVALID_ARGS: "invalid_args",
    worker_pb2.ERROR_KIND_OUT_OF_MEMORY: "out_of_memory",
    worker_pb2.ERROR_KIND_CRASH: "crash",
}


def _type_name(a: worker_pb2.WorkAssignment) -> str:
    return {task_pb2.TASK_TYPE_GPT: "gpt", task_pb2.TASK_TYPE_SD: "sd"}.get(a.type, "unknown")


class _Flag:
    """A one-way cancel flag the executor's thread polls (a plain attribute: set and read atomically
    under the interpreter lock, and far cheaper to make per task than a threading.Event)."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass
class _Running:
    assignment: worker_pb2.WorkAssignment
    cancel: _Flag = field(default_factory=_Flag)
    seq: int = 0
    model: str = ""

    @property
    def id(self) -> str:
        return self.assignment.assignment_id


def _task_id_bytes(task_id: str) -> bytes:
    raw = bytes.fromhex(task_id.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"task_id must be 32 bytes of hex, got {task_id!r}")
    return raw


def _relay_full(exc: BaseException) -> bool:
    """The relay has no room now (relay.errors.StorageFullError, told by its reason): not the node's fault."""
    return getattr(exc, "reason", None) == "relay_full"


def _relay_retryable(exc: BaseException) -> bool:
    if _relay_full(exc):
        return False  # waited for by _put_when_room, on a longer clock
    if isinstance(exc, ConnectError):
        return exc.retryable
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    return bool(getattr(exc, "retryable", False))


class JobRunner:
    def __init__(self, node: WorkerNode, executors: list[Executor] | tuple[Executor, ...]) -> None:
        self.node = node
        self.executors: dict[str, Executor] = {}
        for ex in executors:
            if ex.task_type not in _TASK_TYPES:
                raise ValueError(f"executor task_type must be gpt or sd, got {ex.task_type!r}")
            if ex.task_type in self.executors:
                raise ValueError(f"two executors for task_type {ex.task_type!r} on one node")
            self.executors[ex.task_type] = ex
        # assignment_id -> the Result or ErrorReport waiting for its Ack, oldest first (journaled on disk).
        cfg = node.config
        self.outbox = ResultOutbox(outbox_path(cfg.data_dir, node.address) if cfg.durable_results else None)
        self._sending: set[asyncio.Task] = set()
        self.started = False
        self.completed = 0
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._current: _Running | None = None
        self._queue: asyncio.Queue[worker_pb2.WorkAssignment] | None = None
        self._queued: OrderedDict[str, None] = OrderedDict()  # ids waiting in _queue, in order
        self._delivered: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loaded: tuple[str, ...] = ()
        self._free_vram = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self.started:
            return
        self.started = True
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._delivered = asyncio.Event()
        try:
            self.outbox.load()  # results a previous run left unacknowledged: sent once the node registers
        except OSError as exc:
            self.node.log.error("outbox_unreadable", path=str(self.outbox.path), error=str(exc))
        if not self.outbox:
            self._delivered.set()
        self._task = asyncio.create_task(self._work_loop(), name=f"jobs-{self.node.address}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sending:
            await asyncio.wait(set(self._sending))
        await self.outbox.close()

    def quiet(self) -> bool:
        """Nothing running, queued or waiting for an ack."""
        return self._current is None and (self._queue is None or self._queue.empty()) and not self.outbox

    async def idle(self) -> None:
        """Returns once no assignment is running or queued."""
        if self._queue is not None:
            await self._queue.join()

    async def delivered(self) -> None:
        """Returns once every Result and ErrorReport has been acknowledged."""
        if self._delivered is not None:
            await self._delivered.wait()

    # --- what the node advertises ---------------------------------------------------------------

    def node_info(self) -> worker_pb2.NodeInfo:
        """NodeInfo from the executors' capabilities and the device; runs in a thread (it may scan caches)."""
        node, profile = self.node, self.node.profile
        backends: set[str] = set()
        dtypes: set[str] = set()
        quant: set[int] = set()
        loaded: set[str] = set()
        cached: set[str] = set()
        types = []
        for task_type, ex in sorted(self.executors.items()):
            caps = ex.capabilities()
            types.append(_TASK_TYPES[task_type])
            backends.update(caps.backends)
            dtypes.update(caps.dtypes)
            quant.update(caps.quantize_bits)
            loaded.update(caps.loaded_models)
            cached.update(caps.cached_models)
        self._loaded = tuple(sorted(loaded))
        self._free_vram = profile.free_vram_bytes()
        return worker_pb2.NodeInfo(
            address=node.address,
            card=card_pb2.Card(name=profile.card_name, vram_bytes=profile.vram_bytes),
            free_vram_bytes=self._free_vram,
            backends=sorted(backends),
            loaded_models=self._loaded,
            cached_models=sorted(cached),
            worker_version=node.worker_version,
            task_types=types,
            dtypes=sorted(dtypes),
            quantize_bits=sorted(quant),
            device=profile.device,
            max_assignments=node.config.max_assignments,
        )

    def _refresh(self) -> None:
        """Re-reads what is loaded and the free memory after a job (in the job's thread)."""
        try:
            loaded = {m for ex in self.executors.values() for m in ex.capabilities().loaded_models}
            self._loaded = tuple(sorted(loaded))
        except Exception as exc:  # stale capabilities must not turn a good result into a crash
            self.node.log.warning("capabilities_failed", error=str(exc))
        self._free_vram = self.node.profile.free_vram_bytes()

    def heartbeat(self) -> worker_pb2.Heartbeat:
        return worker_pb2.Heartbeat(free_vram_bytes=self._free_vram, loaded_models=self._loaded,
                                    running_assignments=self.running_ids())

    def running_ids(self) -> list[str]:
        ids = [self._current.id] if self._current is not None else []
        ids.extend(self._queued)
        return ids

    # --- messages from the coordinator ----------------------------------------------------------

    def assign(self, a: worker_pb2.WorkAssignment) -> None:
        assert self._queue is not None
        log = self.node.log.bind(task_id=a.task_id, assignment_id=a.assignment_id)
        if a.assignment_id in self.outbox or a.assignment_id in self.running_ids():
            log.info("assignment_duplicate")  # sent again after a reconnect: it is in hand already
            return
        if self.node.draining:
            log.warning("assignment_while_draining")
        log.info("assignment_received", type=task_pb2.TaskType.Name(a.type), queued=self._queue.qsize())
        self._queued[a.assignment_id] = None
        self._queue.put_nowait(a)

    def acked(self, assignment_id: str) -> None:
        if self.outbox.ack(assignment_id):
            self.node.log.debug("result_acked", assignment_id=assignment_id)
        if not self.outbox and self._delivered is not None:
            self._delivered.set()

    def cancel(self, assignment_id: str, reason: str = "") -> None:
        self.node.log.info("assignment_cancelled", assignment_id=assignment_id, reason=reason)
        self._cancelled[assignment_id] = None
        while len(self._cancelled) > _CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        self._queued.pop(assignment_id, None)
        if self._current is not None and self._current.id == assignment_id:
            self._current.cancel.set()
        self.acked(assignment_id)  # whatever was waiting for it is no longer wanted

    def cancel_all(self) -> None:
        if self._current is not None:
            self._current.cancel.set()
        if self._queue is not None:
            while not self._queue.empty():
                self._cancelled[self._queue.get_nowait().assignment_id] = None
                self._queue.task_done()
        self._queued.clear()

    # --- execution ------------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        assert self._queue is not None
        while True:
            a = await self._queue.get()
            self._queued.pop(a.assignment_id, None)
            try:
                if a.assignment_id not in self._cancelled:
                    await self._execute(a)
            except Exception:  # never let one assignment kill the node
                self.node.log.exception("assignment_failed_internally", assignment_id=a.assignment_id)
            finally:
                self._queue.task_done()

    async def _execute(self, a: worker_pb2.WorkAssignment) -> None:
        log = self.node.log.bind(task_id=a.task_id, assignment_id=a.assignment_id)
        running = _Running(a)
        self._current = running
        assert self._loop is not None
        started_timer = self._loop.call_later(self.node.config.started_report_after.total_seconds(),
                                              self._report_started, a.assignment_id)  # fmt: skip
        deadline_timer = self._deadline_timer(running)
        t0 = time.monotonic()
        try:
            outcome = await self._run_executor(running)
            exec_us = int((time.monotonic() - t0) * 1_000_000)
            exec_ms = exec_us // 1000
            if running.cancel.is_set():
                log.info("assignment_dropped", why="cancelled")
                metrics.record_assignment(self.node.address, _type_name(a), "cancelled")
                return
            msg = await self._result(a, outcome, exec_us, running.cancel.is_set)
            log.info("task_executed", exec_ms=exec_ms, result_hash="0x" + outcome.result_hash.hex())
            metrics.observe_task(self.node.address, _type_name(a), running.model, exec_ms / 1000,
                                 completion_tokens=outcome.completion_tokens, images=outcome.images)
            metrics.record_assignment(self.node.address, _type_name(a), "submitted")
        except (ExecutorError, TaskArgsError) as exc:
            if running.cancel.is_set():
                log.info("assignment_dropped", why="cancelled")
                return
            kind = getattr(exc, "kind", worker_pb2.ERROR_KIND_INVALID_ARGS)
            log.warning("task_failed", kind=worker_pb2.ErrorKind.Name(kind), error=str(exc))
            metrics.record_assignment(self.node.address, _type_name(a), _OUTCOMES.get(kind, "crash"))
            msg = self._error(a, kind, str(exc))
        except Exception as exc:  # a bug in an executor or the relay is a crash, never a verdict
            if running.cancel.is_set():
                return
            log.exception("task_crashed", error=str(exc))
            metrics.record_assignment(self.node.address, _type_name(a), "crash")
            msg = self._error(a, worker_pb2.ERROR_KIND_CRASH, f"{type(exc).__name__}: {exc}")
        finally:
            started_timer.cancel()
            if deadline_timer is not None:
                deadline_timer.cancel()
            self._current = None
            self.completed += 1
        self._deliver(a.assignment_id, msg)

    def _report_started(self, assignment_id: str) -> None:
        self.node.send(worker_pb2.ConnectRequest(started=worker_pb2.Started(assignment_id=assignment_id)))

    def _deliver(self, assignment_id: str, msg: worker_pb2.ConnectRequest) -> None:
        if assignment_id in self._cancelled:
            return
        assert self._delivered is not None
        self._delivered.clear()
        # Written to disk first, then sent; the next assignment starts meanwhile.
        task = asyncio.create_task(self._persist_and_send(assignment_id, msg))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _persist_and_send(self, assignment_id: str, msg: worker_pb2.ConnectRequest) -> None:
        await self.outbox.put(assignment_id, msg)
        if assignment_id in self.outbox:  # not cancelled meanwhile
            self.node.send(msg)

    def _deadline_timer(self, running: _Running) -> asyncio.TimerHandle | None:
        deadline_ms = running.assignment.deadline_ms
        if deadline_ms <= 0 or self._loop is None:
            return None
        delay = max(0.0, deadline_ms / 1000 - time.time())

        def expire() -> None:
            self.node.log.warning("assignment_deadline_passed", assignment_id=running.id)
            running.cancel.set()

        return self._loop.call_later(delay, expire)

    async def _run_executor(self, running: _Running) -> Outcome:
        a = running.assignment
        args = a.args
        if args.WhichOneof("kind") is None:  # too large to inline: the canonical JSON is in the relay
            raw = await self._relay_call("get", a, "input")
            args = json_format.Parse(raw, task_pb2.TaskArgs())
        kind = args.WhichOneof("kind")
        executor = self.executors.get(kind or "")
        if executor is None:
            raise ExecutionCrashError(f"no {kind or 'unknown'} executor on this node")
        spec = getattr(args, kind)
        running.model = spec.model if kind == "gpt" else spec.base_model.name
        if kind == "gpt":
            require_hub_model(spec.model)  # from the network: never a path on this machine
        on_delta = self._delta_sink(running) if a.stream_deltas else None
        job = Job(task_id=a.task_id, assignment_id=a.assignment_id, spec=spec,
                  on_delta=on_delta, is_cancelled=running.cancel.is_set)

        def work() -> Outcome:
            try:
                return executor.run(job)
            finally:
                self._refresh()

        # A test double that never blocks may say so (`inline = True`) and skip the thread hop.
        outcome = work() if getattr(executor, "inline", False) else await asyncio.to_thread(work)
        if len(outcome.result_hash) != 32:
            raise ExecutionCrashError(f"executor returned a {len(outcome.result_hash)}-byte result_hash, not 32")
        return outcome

    def _delta_sink(self, running: _Running):
        loop = self._loop
        assert loop is not None

        def emit(chunk: dict) -> None:
            if running.cancel.is_set():
                return
            seq, running.seq = running.seq, running.seq + 1
            delta = task_pb2.TokenDelta(task_id=running.assignment.task_id, node=self.node.address, seq=seq,
                                        chunk_json=json.dumps(chunk, separators=(",", ":")))
            self.node.send(worker_pb2.ConnectRequest(delta=delta))

        loop_thread = threading.get_ident()

        def sink(chunk: dict) -> None:
            if threading.get_ident() == loop_thread:  # an inline executor: keep order with the Result
                emit(chunk)
            else:
                loop.call_soon_threadsafe(emit, chunk)

        return sink

    async def _relay_call(self, method: str, a: worker_pb2.WorkAssignment, slot: str, data: bytes = b""):
        grant = a.grant if a.HasField("grant") else None
        retrying = AsyncRetrying(stop=stop_after_attempt(3), wait=wait_random_exponential(multiplier=0.2, max=2.0),
                                 retry=retry_if_exception(_relay_retryable), reraise=True)
        timeout = self.node.config.rpc_timeout.total_seconds()
        async for attempt in retrying:
            with attempt:
                relay = await self.node.relay()
                if method == "get":
                    got = await asyncio.wait_for(relay.get(a.task_id, slot, grant=grant), timeout)
                    metrics.record_relay_bytes(self.node.address, "in", len(got))
                    return got
                try:
                    stored = await asyncio.wait_for(relay.put(a.task_id, slot, data, grant=grant), timeout)
                    metrics.record_relay_bytes(self.node.address, "out", len(data))
                    return stored
                except Exception as exc:
                    if type(exc).__name__ != "BlobExistsError":
                        raise
                    # Stored by an earlier attempt whose answer was lost; slots are write-once.
                    self.node.log.info("relay_slot_exists", task_id=a.task_id, slot=slot)
                    return None
        raise AssertionError("unreachable")

    async def _put_when_room(self, a: worker_pb2.WorkAssignment, slot: str, data: bytes, cancelled) -> None:
        """Stores an output; while the relay is full, waits (backing off) and tries again until the
        assignment is cancelled or its deadline passes. The node keeps the assignment meanwhile (its
        heartbeats hold the lease), so a full relay never counts against it: the task completes once
        there is room, or the coordinator aborts it at its deadline, no fee taken and no node blamed."""
        wait = self.node.config.relay_full_retry_initial.total_seconds()
        while True:
            try:
                await self._relay_call("put", a, slot, data)
                return
            except Exception as exc:
                if not _relay_full(exc) or cancelled():
                    raise
                self.node.log.warning("relay_full_waiting", task_id=a.task_id, slot=slot, retry_in_s=round(wait, 2),
                                      error=str(exc))  # fmt: skip
            until = time.monotonic() + wait
            while time.monotonic() < until and not cancelled():
                await asyncio.sleep(min(0.25, until - time.monotonic()))
            if cancelled():
                raise ExecutionCrashError(f"relay full: output {slot!r} not stored before the assignment ended")
            wait = min(wait * 2, self.node.config.relay_full_retry_max.total_seconds())

    async def _result(self, a: worker_pb2.WorkAssignment, outcome: Outcome, exec_us: int,
                      cancelled=lambda: False) -> worker_pb2.ConnectRequest:  # fmt: skip
        node = self.node
        base = f"result/{node.address}"
        slots = []
        for blob in outcome.blobs:
            slot = f"{base}/{blob.suffix}" if blob.suffix else base
            await self._put_when_room(a, slot, blob.data, cancelled)
            slots.append(slot)
        inline = outcome.output
        gpt = a.type == task_pb2.TASK_TYPE_GPT
        limit = node.config.max_inline_gpt_output_bytes if gpt else node.config.max_inline_output_bytes
        if len(inline) > limit:
            await self._put_when_room(a, f"{base}/output", inline, cancelled)
            slots.append(f"{base}/output")
            inline = b""
        assert node.domain is not None
        signature = signing.sign_result(node.key, node.domain, _task_id_bytes(a.task_id), outcome.result_hash)
        stats = worker_pb2.ExecStats(prompt_tokens=outcome.prompt_tokens, completion_tokens=outcome.completion_tokens,
                                     images=outcome.images, steps=outcome.steps, exec_ms=exec_us // 1000,
                                     exec_us=exec_us)
        result = worker_pb2.Result(assignment_id=a.assignment_id, task_id=a.task_id, result_hash=outcome.result_hash,
                                   signature=signature, inline_output=inline, output_slots=slots, stats=stats,
                                   phashes=list(outcome.phashes))
        return worker_pb2.ConnectRequest(result=result)

    def _error(self, a: worker_pb2.WorkAssignment, kind: int, message: str) -> worker_pb2.ConnectRequest:
        node = self.node
        signature = b""
        if kind == worker_pb2.ERROR_KIND_INVALID_ARGS and node.domain is not None:
            signature = signing.sign_result(node.key, node.domain, _task_id_bytes(a.task_id), INVALID_ARGS_HASH)
        report = worker_pb2.ErrorReport(assignment_id=a.assignment_id, task_id=a.task_id, kind=kind,
                                        message=message[:4000], signature=signature)
        return worker_pb2.ConnectRequest(error=report)
