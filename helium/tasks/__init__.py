"""Task definitions on top of the `helium.v1` contracts.

`TaskArgs` (one of GptTask, SdTask) is the task schema. This package loads it
from the task JSON applications send, validates every field (errors name the
field and the bound), and gives the canonical bytes that the task id and the
creator's signature commit to.

Canonical args: the TaskArgs message's JSON mapping with proto field names,
keys sorted, no whitespace, UTF-8 (`canonical_args`). `args_hash` is its
keccak256.
"""

from __future__ import annotations

import json

from eth_utils import keccak
from google.protobuf import json_format

from helium.v1 import task_pb2

__all__ = ["TaskArgsError", "args_hash", "canonical_args", "task_type_of"]


class TaskArgsError(ValueError):
    """A task definition that breaks the schema. The message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if not message.startswith(field) else message)
        self.field = field


def canonical_args(args: task_pb2.TaskArgs) -> bytes:
    doc = json_format.MessageToDict(args, preserving_proto_field_name=True)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def args_hash(args: task_pb2.TaskArgs) -> bytes:
    return keccak(canonical_args(args))


def task_type_of(args: task_pb2.TaskArgs) -> int:
    kind = args.WhichOneof("kind")
    if kind == "gpt":
        return task_pb2.TASK_TYPE_GPT
    if kind == "sd":
        return task_pb2.TASK_TYPE_SD
    raise TaskArgsError("args", "exactly one task kind (gpt or sd) is required")
