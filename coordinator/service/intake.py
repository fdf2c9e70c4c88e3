"""Task intake: every check a new task must pass before it is stored.

Order of checks (each refusal changes nothing): request fields (a fee below
2^256), the task's size (`coordinator.max_task_bytes`), its arguments (schema
and bounds), the creator's signature over the task id, that some group of
registered nodes could ever run it (once the network has formed; before, the
task waits with a reason GetTask shows), that the creator's deposit covers this
fee plus its pending fees, and room in the queue. Then the task is
stored durably and queued. No transaction is sent at creation.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass

import structlog
from eth_utils import is_address, keccak, to_checksum_address

from chain import signing
from coordinator.domain.models import Task, TaskState, TaskType
from coordinator.errors import (
    CoordinatorError,
    InsufficientDeposit,
    InvalidArgument,
    NoCapableNodes,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
)
from coordinator.service import hooks
from coordinator.service.dispatcher import Dispatcher
from helium.tasks import TaskArgsError, canonical_args

__all__ = ["IntakeSettings", "NewTask", "TaskIntake"]

log = structlog.get_logger("coordinator.intake")

_DECIMAL = re.compile(r"^[0-9]{1,78}$")


# Fees, nonces and deadlines are uint256 in the signed EIP-712 Task.
_UINT256 = 1 << 256


@dataclass(frozen=True)
class IntakeSettings:
    min_fee_wei: int = 1
    task_timeout_s: float = 15 * 60
    max_sd_pixels: int = 2048 * 2048
    # coordinator.max_task_bytes: the largest canonical args JSON accepted.
    max_task_bytes: int = 1 << 20


@dataclass(frozen=True)
class NewTask:
    """A CreateTask request, already out of its proto (args stay the typed TaskArgs message)."""

    args: object  # helium.v1.TaskArgs
    creator: str
    nonce: int
    fee: str
    deadline: int
    signature: bytes
    stream_deltas: bool = False


def _parse_args(args) -> tuple[TaskType, str, str, int, int]:
    """Validates the typed args; returns (type, model, dtype, quantize_bits, min_vram_bytes)."""
    kind = args.WhichOneof("kind")
    if kind is None:
        raise InvalidArgument("args: exactly one of args.gpt or args.sd is required", "args")
    try:
        if kind == "gpt":
            from helium.tasks.gpt import validate_gpt_task

            validate_gpt_task(args.gpt)
            return (TaskType.GPT, args.gpt.model, args.gpt.dtype or "auto",
                    args.gpt.quantize_bits if args.gpt.HasField("quantize_bits") else 0, 0)  # fmt: skip
        from helium.tasks.sd import estimate_vram_bytes, validate_sd_task

        validate_sd_task(args.sd)
        return TaskType.SD, args.sd.base_model.name, args.sd.dtype or "auto", 0, int(estimate_vram_bytes(args.sd))
    except TaskArgsError as exc:
        raise InvalidArgument(f"args.{kind}.{exc}" if not str(exc).startswith("args") else str(exc),
                              f"args.{kind}.{exc.field}") from exc  # fmt: skip


@functools.lru_cache(maxsize=65536)  # creators send many tasks; the checksum is a keccak each time
def _checksum(address: str) -> str:
    if not is_address(address):
        raise InvalidArgument(f"creator must be a 0x-prefixed 20-byte address, got {address!r}", "creator")
    return to_checksum_address(address)


class TaskIntake:
    def __init__(
        self,
        dispatcher: Dispatcher,
        settings: IntakeSettings,
        deposits: hooks.DepositCheck,
        clock=None,
        input_store=None,
    ) -> None:
        self.dispatcher = dispatcher
        self.settings = settings
        self.deposits = deposits
        self._creator_locks: dict[str, asyncio.Lock] = {}
        self.clock = clock or dispatcher.clock
        # The relay store: args too large to travel inline go to the task's `input` slot.
        self.input_store = input_store
        self._formed = False  # see _network_formed

    async def create(self, req: NewTask) -> tuple[Task, bool]:
        """Returns (task, created) once the task is durable. Re-sending an identical task is idempotent:
        (existing, False)."""
        admitted = await self._admit(req)
        await self.dispatcher.store.durable()  # accepted means stored: answer only after the commit
        return admitted

    async def create_many(self, reqs: list[NewTask]) -> list[tuple[Task, bool] | CoordinatorError]:
        """Each request on its own, as `create` would (a refusal is returned in its place and changes
        nothing); returns once every accepted one is durable, so they share the commits."""
        out: list[tuple[Task, bool] | CoordinatorError] = []
        for req in reqs:
            try:
                out.append(await self._admit(req))
            except CoordinatorError as exc:
                out.append(exc)
        await self.dispatcher.store.durable()
        return out

    async def _admit(self, req: NewTask) -> tuple[Task, bool]:
        """Every check, then the task is stored and queued (committed with the loop turn's writes)."""
        creator = _checksum(req.creator)
        if not _DECIMAL.match(req.fee or ""):
            raise InvalidArgument(f"fee must be a decimal number of wei, got {req.fee!r}", "fee")
        fee = int(req.fee)
        if fee >= _UINT256:
            raise InvalidArgument(f"fee must be below 2^256 wei, got {req.fee}", "fee")
        if fee < max(1, self.settings.min_fee_wei):
            raise InvalidArgument(f"fee must be >= {max(1, self.settings.min_fee_wei)} wei, got {fee}", "fee")
        now = self.clock()
        if req.deadline <= now:
            raise InvalidArgument(f"deadline must be in the future, got {req.deadline} (now {int(now)})", "deadline")
        if len(req.signature) != 65:
            raise Unauthenticated(f"signature must be 65 bytes, got {len(req.signature)}")
        limit = self.settings.max_task_bytes
        if req.args.ByteSize() > limit:  # before validating or encoding it: the wire size is cheap to know
            raise InvalidArgument(f"args: the task is {req.args.ByteSize()} bytes; at most {limit} "
                                  "(coordinator.max_task_bytes) are accepted", "args")  # fmt: skip
        task_type, model, dtype, qbits, min_vram = _parse_args(req.args)
        if not model:
            raise InvalidArgument("model is required", "model")
        canon = canonical_args(req.args)
        if len(canon) > limit:
            raise InvalidArgument(f"args: the task is {len(canon)} bytes as JSON; at most {limit} "
                                  "(coordinator.max_task_bytes) are accepted", "args")  # fmt: skip
        ahash = keccak(canon)  # args_hash(req.args), without a second canonical encoding
        task_id_b = signing.compute_task_id(creator, req.nonce, ahash)
        task_id = "0x" + task_id_b.hex()
        try:
            signer = signing.task_signer(self.dispatcher.domain, task_id_b, ahash, fee, req.nonce, req.deadline,
                                         req.signature)  # fmt: skip
        except signing.SignatureError as exc:
            raise Unauthenticated(f"signature: {exc}") from exc
        if signer != creator:
            raise Unauthenticated(f"signature: recovered signer {signer} is not the creator {creator}")

        existing = self.dispatcher.store.get_task(task_id)
        if existing is not None:  # the caller waits for the commit: it may be this very turn's write
            return existing, False

        now_ms = int(now * 1000)
        task = Task(
            task_id=task_id, type=task_type, state=TaskState.QUEUED, creator=creator, nonce=req.nonce, fee=fee,
            deadline=req.deadline, args=canon, args_hash=ahash, signature=req.signature, model=model, priority=0.0,
            created_ms=now_ms, updated_ms=now_ms,
            expires_ms=now_ms + int(min(self.settings.task_timeout_s, req.deadline - now) * 1000),
            min_vram_bytes=min_vram, dtype=dtype, quantize_bits=qbits, stream_deltas=req.stream_deltas,
        )  # fmt: skip
        task = self._priced(task, now_ms)
        ok, why = self.dispatcher.can_ever_run(task)
        if not ok and self._network_formed():
            raise NoCapableNodes(why)
        if not ok:  # a network still forming queues it: GetTask says what it waits for (waiting_reason)
            log.info("task_waits_for_nodes", task_id=task_id, reason=why)

        lock = self._creator_locks.setdefault(creator, asyncio.Lock())
        async with lock:
            available = await self.deposits.available(creator)
            if available is not None:
                pending = self.dispatcher.store.pending_fees(creator)
                if available - pending < fee:
                    raise InsufficientDeposit(
                        f"fee {fee} wei exceeds the creator's free deposit: {available} deposited, "
                        f"{pending} reserved by pending tasks"
                    )
            if self.input_store is not None and len(canon) > self.dispatcher.settings.inline_args_limit:
                if not self.input_store.exists(task_id, "input"):  # fsynced: off the event loop
                    try:
                        await asyncio.to_thread(self.input_store.put_bytes, task_id, "input", canon)
                    except Exception as exc:  # a full relay refuses this task alone (reason relay_full)
                        if getattr(exc, "reason", "") != "relay_full":
                            raise
                        refused = ResourceExhausted(str(exc))
                        refused.reason = "relay_full"
                        raise refused from exc
            self.dispatcher.enqueue(task)
        return task, True

    def _network_formed(self) -> bool:
        """Whether `group_size` nodes have ever registered. Before that the network is still forming (workers
        starting next to a new coordinator): a task no registered group can run waits in the queue, its
        reason shown by GetTask. After that, such a task is refused (FAILED_PRECONDITION): the network
        has shown what it runs, and an operator adds nodes of a new kind on purpose."""
        if not self._formed:
            self._formed = len(self.dispatcher.store.list_nodes()) >= self.dispatcher.settings.group_size
        return self._formed

    def waiting_reason(self, task: Task) -> str:
        """Why a QUEUED task cannot be dispatched now, in words ("" when it only waits its turn)."""
        if task.state != TaskState.QUEUED:
            return ""
        ok, why = self.dispatcher.can_ever_run(task)
        if not ok:
            return f"waiting for nodes: {why}"
        connected = [hooks.NodeView(s.record) for s in self.dispatcher.nodes.values() if s.connected]
        ok, why = self.dispatcher.selector.can_ever_run(task, connected)
        if not ok:
            return f"waiting for registered nodes to connect: among the connected ones, {why}"
        return ""

    def _priced(self, task: Task, now_ms: int) -> Task:
        from dataclasses import replace

        est = self.dispatcher.pricer.estimate_seconds(task)
        return replace(task, estimate_s=est, priority=self.dispatcher.pricer.priority(replace(task, estimate_s=est),
                                                                                      now_ms))  # fmt: skip

    def cancel(self, task_id: str, signature: bytes, *, stop_running: bool = False) -> Task:
        """`stop_running`: a dispatched task (no validated result yet) is cancelled too, its nodes stopped."""
        task, _ = self.dispatcher.get(task_id)
        try:
            signer = signing.cancel_signer(self.dispatcher.domain, bytes.fromhex(task_id[2:]), signature)
        except (signing.SignatureError, ValueError) as exc:
            raise Unauthenticated(f"signature: {exc}") from exc
        if signer != task.creator:
            raise PermissionDenied(f"only the creator {task.creator} may cancel task {task_id}")
        return self.dispatcher.cancel(task_id, running=stop_running)
