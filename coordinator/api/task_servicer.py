"""TaskService: the applications' gRPC door. Thin: bind context, convert, call the service."""

from __future__ import annotations

import asyncio

import structlog

from coordinator.api.read_access import ADMIN, ReadAccess
from coordinator.domain import serde
from coordinator.domain.models import Assignment, Task, TaskState, TaskType
from coordinator.errors import CoordinatorError, InvalidArgument, NotFound
from coordinator.service.dispatcher import Dispatcher
from coordinator.service.events import DeltaEvent
from coordinator.service.intake import NewTask, TaskIntake
from helium.v1 import task_pb2, task_pb2_grpc

__all__ = ["TaskServicer"]

# The most tasks one CreateTasks call may carry.
MAX_BATCH = 1000

# WatchTask ends once the task has its outcome.
_FINAL = (TaskState.VALIDATED, TaskState.SETTLED, TaskState.ABORTED, TaskState.CANCELLED)


def _new_task(request: task_pb2.CreateTaskRequest) -> NewTask:
    return NewTask(request.args, request.creator, request.nonce, request.fee, request.deadline, request.signature,
                   request.stream_deltas)


def _task_id(value: str) -> str:
    v = value.lower()
    if len(v) != 66 or not v.startswith("0x") or any(c not in "0123456789abcdef" for c in v[2:]):
        raise InvalidArgument(f"task_id must be 0x followed by 64 hex digits, got {value!r}", "task_id")
    return v


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(self, intake: TaskIntake, dispatcher: Dispatcher, coordinator_address: str, min_fee: int,
                 admin_token: str = "") -> None:
        self.intake = intake
        self.dispatcher = dispatcher
        self.coordinator_address = coordinator_address
        self.min_fee = min_fee
        self.access = ReadAccess(lambda: dispatcher.domain, admin_token, dispatcher.clock)

    def _reader(self, request, context) -> tuple[str, str]:
        """(task id, reader): the creator that signed this read, or ADMIN; refused before any lookup."""
        task_id = _task_id(request.task_id)
        structlog.contextvars.bind_contextvars(task_id=task_id)
        return task_id, self.access.reader(task_id, request.timestamp, request.signature,
                                           context.invocation_metadata())

    def _read(self, task_id: str, reader: str) -> tuple[Task, list[Assignment]]:
        try:
            task, assigns = self.dispatcher.get(task_id)
        except NotFound:
            if reader == ADMIN:
                raise
            raise self.access.denied(task_id, reader) from None
        return self.access.check(task_id, task, reader), assigns

    async def CreateTask(self, request, context):
        task, _ = await self.intake.create(_new_task(request))
        structlog.contextvars.bind_contextvars(task_id=task.task_id)
        return self._created(task, request)

    async def CreateTasks(self, request, context):
        if len(request.tasks) > MAX_BATCH:
            raise InvalidArgument(f"tasks: at most {MAX_BATCH} per call, got {len(request.tasks)}", "tasks")
        outcomes = await self.intake.create_many([_new_task(r) for r in request.tasks])
        resp = task_pb2.CreateTasksResponse()
        for req, outcome in zip(request.tasks, outcomes, strict=True):
            if isinstance(outcome, CoordinatorError):
                resp.outcomes.add(code=outcome.status.value[0], message=str(outcome))
            else:
                resp.outcomes.add(created=self._created(outcome[0], req))
        return resp

    def _created(self, task: Task, request) -> task_pb2.CreateTaskResponse:
        serde.remember_args_wire(task.args, request.args)  # its assignments reuse the creator's proto
        resp = task_pb2.CreateTaskResponse(task_id=task.task_id)
        if task.type == TaskType.SD:
            resp.grant.CopyFrom(serde.grant_to_pb(self.dispatcher.grant(task.task_id, task.creator, ("*",), ())))
        return resp

    async def GetTask(self, request, context):
        task, assigns = self._read(*self._reader(request, context))
        pb = serde.task_to_pb(task, assigns)
        pb.reason = pb.reason or self.intake.waiting_reason(task)  # a queued task says what it waits for
        return task_pb2.GetTaskResponse(task=pb)

    async def WatchTask(self, request, context):
        task_id, reader = self._reader(request, context)
        events = self.dispatcher.events
        queue = events.subscribe(task_id)
        try:
            task, assigns = self._read(task_id, reader)
            yield task_pb2.WatchTaskResponse(task=serde.task_to_pb(task, assigns))
            sent = -1  # the last delta seq sent: replayed ones are not sent twice
            if request.include_deltas:
                for event in self.dispatcher.buffered_deltas(task_id):
                    yield self._delta(event)
                    sent = event.seq
            while task.state not in _FINAL:
                remaining = context.time_remaining()
                timeout = None if remaining is None else max(0.0, remaining)
                event = await asyncio.wait_for(queue.get(), timeout=timeout)
                if isinstance(event, DeltaEvent):
                    if request.include_deltas and event.seq > sent:
                        yield self._delta(event)
                        sent = event.seq
                    continue
                task, assigns = self.dispatcher.get(task_id)
                yield task_pb2.WatchTaskResponse(task=serde.task_to_pb(task, assigns))
        finally:
            events.unsubscribe(task_id, queue)

    @staticmethod
    def _delta(event: DeltaEvent) -> task_pb2.WatchTaskResponse:
        return task_pb2.WatchTaskResponse(delta=task_pb2.TokenDelta(
            task_id=event.task_id, node=event.node, seq=event.seq, chunk_json=event.chunk_json))  # fmt: skip

    async def CancelTask(self, request, context):
        task = self.intake.cancel(_task_id(request.task_id), request.signature, stop_running=request.stop_running)
        return task_pb2.CancelTaskResponse(task=serde.task_to_pb(task, []))

    async def ListModels(self, request, context):
        resp = task_pb2.ListModelsResponse()
        for info in self.dispatcher.available_models():
            resp.models.append(task_pb2.ModelInfo(
                model=info["model"], type=serde.TASK_TYPE_TO_PB[info["type"]],
                cards=[serde.card_to_pb(c) for c in info["cards"]], nodes=info["nodes"],
                loaded_nodes=info["loaded_nodes"]))  # fmt: skip
        return resp

    async def GetNetworkInfo(self, request, context):
        from helium import __version__

        d = self.dispatcher.domain
        return task_pb2.GetNetworkInfoResponse(
            chain_id=d.chain_id, verifying_contract=d.verifying_contract, coordinator=self.coordinator_address,
            min_fee=str(self.min_fee), version=__version__,
        )  # fmt: skip
