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
import re

from eth_utils import keccak
from google.protobuf import json_format

from helium.v1 import task_pb2

__all__ = ["TaskArgsError", "args_hash", "canonical_args", "check_model_id", "is_model_id", "task_type_of"]

# A Hugging Face hub id: "name" or "owner/name", each part letters, digits, '-', '_', '.', starting and
# ending with a letter, digit or '_', at most 96 characters, no "--" or ".." (the hub's own rules).
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}")


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


def is_model_id(name: str) -> bool:
    """Whether `name` is a hub model id. A path ("/etc", "../x", "./m", "a/b/c") never is."""
    return bool(_HUB_ID.fullmatch(name)) and "--" not in name and ".." not in name


def check_model_id(field: str, name: str) -> None:
    """A task names its models by hub id, never by a path on the worker's disk; else `TaskArgsError`."""
    if not is_model_id(name):
        shown = repr(name) if len(name) <= 100 else repr(name[:97] + "...")
        raise TaskArgsError(field, f"{field} must be a model id like 'owner/name' (a Hugging Face hub id, never a "
                                   f"local path), got {shown}")
