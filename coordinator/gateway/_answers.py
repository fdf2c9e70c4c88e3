"""How the gateway's answers describe a task: the `helium` object, the task summary, the seed it ran with,
the failure of an ended task, the headers, SSE framing, and the in-memory image cache."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from coordinator.gateway.errors import TaskFailedError
from helium.v1 import task_pb2

__all__ = ["DONE_STATES", "FAILED_STATES", "STATE", "TYPE", "ImageCache", "answer_headers", "failed", "fingerprint",
           "helium_field", "public_node", "sse", "task_seed", "task_summary"]

_T = task_pb2
DONE_STATES = (_T.TASK_STATE_VALIDATED, _T.TASK_STATE_SETTLED)
FAILED_STATES = (_T.TASK_STATE_ABORTED, _T.TASK_STATE_CANCELLED)
STATE = {v: k.removeprefix("TASK_STATE_").lower() for k, v in _T.TaskState.items()}
ASTATE = {v: k.removeprefix("ASSIGNMENT_STATE_").lower() for k, v in _T.AssignmentState.items()}
TYPE = {v: k.removeprefix("TASK_TYPE_").lower() for k, v in _T.TaskType.items()}


def task_seed(task: task_pb2.Task) -> int:
    """The seed the task ran with (the request's, or the one the gateway drew for it)."""
    return task.args.gpt.seed if task.args.WhichOneof("kind") == "gpt" else task.args.sd.task_config.seed


def fingerprint(seed: int) -> str:
    """`system_fingerprint` of an answer: the seed it used, so the same request with it gives it again."""
    return f"helium-seed-{seed}"


def helium_field(task: task_pb2.Task, streamed_by: str = "") -> dict[str, Any]:
    """The `helium` object on final answers: which task, which nodes, how it was verified, which seed."""
    return {
        "task_id": task.task_id,
        "seed": task_seed(task),
        "state": STATE.get(task.state, "unspecified"),
        "nodes": list(task.result.nodes),
        "validation": task.result.validation,
        "settlement_tx": task.settlement_tx,
        "streamed_by": streamed_by,
        "assignments": [
            {"node": a.node, "state": ASTATE.get(a.state, "unspecified"), "matched": a.matched,
             "submission_order": a.submission_order}
            for a in task.assignments
        ],
    }


def task_summary(task: task_pb2.Task) -> dict[str, Any]:
    """A task as the pages and `GET /v1/tasks/{id}` show it."""
    model = task.args.gpt.model if task.args.WhichOneof("kind") == "gpt" else task.args.sd.base_model.name
    return {
        "task_id": task.task_id, "type": TYPE.get(task.type, "unspecified"), "model": model,
        "state": STATE.get(task.state, "unspecified"), "fee": task.fee, "creator": task.creator,
        "created_at_ms": task.created_at_ms, "updated_at_ms": task.updated_at_ms, "reason": task.reason,
        **{k: v for k, v in helium_field(task).items() if k not in ("task_id", "state")},
    }


class ImageCache:
    """The last `capacity` images served as URLs, in memory."""

    def __init__(self, capacity: int) -> None:
        from collections import OrderedDict

        self.capacity = capacity
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def put(self, key: str, value: bytes) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, key: str) -> bytes | None:
        return self._items.get(key)


def public_node(node) -> dict[str, Any]:
    """A node as the public network page shows it: how many tasks it runs, never which (ids are private)."""
    out = json_format.MessageToDict(node, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    out["running"] = len(out.pop("running_tasks", None) or ())
    return out


def failed(task: task_pb2.Task) -> TaskFailedError:
    state = STATE.get(task.state, "unspecified")
    return TaskFailedError(f"task {task.task_id} was {state}: {task.reason or 'no reason given'}",
                           code=f"task_{state}")


def answer_headers(task_id: str, validation: str) -> dict[str, str]:
    return {"x-helium-task-id": task_id, "x-helium-validation": validation or "unknown"}


def sse(obj: dict) -> str:
    return "data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n\n"
