"""A small creator client for the TaskService: sign a task, submit it, follow it.

Used by `helium task`, the tests and the benchmarks; applications that do not
want to hold a key use the OpenAI-compatible gateway instead.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
from eth_account.signers.local import LocalAccount

from chain import signing
from helium.tasks import args_hash
from helium.v1 import task_pb2, task_pb2_grpc

__all__ = ["FINAL_STATES", "TaskClient", "load_task_file"]

FINAL_STATES = (
    task_pb2.TASK_STATE_VALIDATED,
    task_pb2.TASK_STATE_SETTLED,
    task_pb2.TASK_STATE_ABORTED,
    task_pb2.TASK_STATE_CANCELLED,
)


def load_task_file(doc: dict) -> task_pb2.TaskArgs:
    """A task JSON document -> TaskArgs. Accepts {"gpt": {...}} / {"sd": {...}} / {"type": "gpt", "args": {...}},
    or a bare GPT definition (has "messages") or SD definition (has "prompt")."""
    from helium.tasks.gpt import load_gpt_task
    from helium.tasks.sd import load_sd_task

    args = task_pb2.TaskArgs()
    if "type" in doc and "args" in doc:
        doc = {str(doc["type"]).lower(): doc["args"]}
    if "gpt" in doc:
        args.gpt.CopyFrom(load_gpt_task(doc["gpt"]))
    elif "sd" in doc:
        args.sd.CopyFrom(load_sd_task(doc["sd"]))
    elif "messages" in doc:
        args.gpt.CopyFrom(load_gpt_task(doc))
    elif "prompt" in doc:
        args.sd.CopyFrom(load_sd_task(doc))
    else:
        from helium.tasks import TaskArgsError

        raise TaskArgsError("task", "cannot tell the task type: expected gpt/sd, messages (GPT) or prompt (SD)")
    return args


class TaskClient:
    def __init__(self, channel: grpc.aio.Channel, key: LocalAccount, *, rpc_timeout: float = 30.0) -> None:
        self.stub = task_pb2_grpc.TaskServiceStub(channel)
        self.key = key
        self.rpc_timeout = rpc_timeout
        self._domain: signing.Domain | None = None
        self._last_nonce = 0

    async def domain(self) -> signing.Domain:
        if self._domain is None:
            info = await self.stub.GetNetworkInfo(task_pb2.GetNetworkInfoRequest(), timeout=self.rpc_timeout)
            self._domain = signing.Domain(info.chain_id, info.verifying_contract)
        return self._domain

    def next_nonce(self) -> int:
        """Unique per key without local state: microseconds since the epoch, strictly increasing."""
        self._last_nonce = max(self._last_nonce + 1, time.time_ns() // 1000)
        return self._last_nonce

    async def build(self, args: task_pb2.TaskArgs, fee: int, *, nonce: int | None = None,
                    deadline: int | None = None) -> task_pb2.CreateTaskRequest:  # fmt: skip
        nonce = self.next_nonce() if nonce is None else nonce
        deadline = int(time.time()) + 3600 if deadline is None else deadline
        ahash = args_hash(args)
        tid = signing.compute_task_id(self.key.address, nonce, ahash)
        sig = signing.sign_task(self.key, await self.domain(), tid, ahash, fee, nonce, deadline)
        return task_pb2.CreateTaskRequest(args=args, creator=self.key.address, nonce=nonce, fee=str(fee),
                                          deadline=deadline, signature=sig)  # fmt: skip

    async def submit(self, args: task_pb2.TaskArgs, fee: int, **kw) -> str:
        req = await self.build(args, fee, **kw)
        resp = await self.stub.CreateTask(req, timeout=self.rpc_timeout)
        return resp.task_id

    async def create_many(self, reqs: list[task_pb2.CreateTaskRequest]) -> list[task_pb2.CreateTaskOutcome]:
        """Sends signed requests in one CreateTasks call; one outcome each, in order (code 0: created)."""
        resp = await self.stub.CreateTasks(task_pb2.CreateTasksRequest(tasks=reqs), timeout=self.rpc_timeout)
        return list(resp.outcomes)

    async def read_proof(self, task_id: str) -> dict:
        """`timestamp` and `signature` fields that prove this key created the task (GetTask, WatchTask)."""
        now = int(time.time())
        sig = signing.sign_task_read(self.key, await self.domain(), bytes.fromhex(task_id.removeprefix("0x")), now)
        return {"timestamp": now, "signature": sig}

    async def get(self, task_id: str) -> task_pb2.Task:
        """The task, read as its creator (this client's key)."""
        req = task_pb2.GetTaskRequest(task_id=task_id, **await self._proof(task_id))
        resp = await self.stub.GetTask(req, timeout=self.rpc_timeout)
        return resp.task

    async def _proof(self, task_id: str) -> dict:
        try:
            return await self.read_proof(task_id)
        except ValueError:  # not hex: the coordinator names the field
            return {}

    async def watch(self, task_id: str, *, timeout: float, include_deltas: bool = False
                    ) -> AsyncIterator[task_pb2.WatchTaskResponse]:  # fmt: skip
        req = task_pb2.WatchTaskRequest(task_id=task_id, include_deltas=include_deltas, **await self._proof(task_id))
        call = self.stub.WatchTask(req, timeout=timeout)
        async for event in call:
            yield event

    async def wait(self, task_id: str, *, timeout: float = 900.0,
                   states=FINAL_STATES) -> task_pb2.Task:  # fmt: skip
        """Follows the task until it reaches one of `states` (default: its outcome)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"task {task_id} not done within {timeout:.0f} s (last state "
                                   f"{task_pb2.TaskState.Name(last.state) if last else 'unknown'})")  # fmt: skip
            try:
                async for ev in self.watch(task_id, timeout=remaining):
                    if ev.HasField("task"):
                        last = ev.task
                        if last.state in states:
                            return last
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise
            # The watch ends at the outcome; poll for later states (SETTLED) with a short pause.
            last = await self.get(task_id)
            if last.state in states:
                return last
            import asyncio

            await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
