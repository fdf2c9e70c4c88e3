"""The GPT task definition: load it from the task JSON, check every field, fill the defaults.

The definition *is* `helium.v1.GptTask`; its JSON form is that message's JSON
mapping with snake_case names (`json_format.ParseDict` accepts them; emit with
`preserving_proto_field_name=True`). Only `model` and `messages` are required.

Defaults: `seed` 0, `dtype` "auto", `quantize_bits` unset, `max_new_tokens` 256;
every other generation field left unset takes the model's own
`generation_config` (the executor applies it, since only it has the model).

Everything here is cheap and needs no model: the coordinator calls
`load_gpt_task` + `validate_gpt_task` when a task is created, and the worker
calls them again before it runs one. The checks that need the model (the prompt
fits the context, the model exists) are the executor's.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from google.protobuf import json_format

from helium import boundedjson
from helium.tasks import TaskArgsError, check_model_id
from helium.tasks._shape import check_shape
from helium.v1 import gpt_pb2

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "DTYPES",
    "MAX_NEW_TOKENS",
    "QUANTIZE_BITS",
    "ROLES",
    "generation_overrides",
    "gpt_task_to_dict",
    "load_gpt_task",
    "validate_gpt_task",
    "with_defaults",
]

DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS = 32768
MAX_BEAMS = 16
MAX_RETURN_SEQUENCES = 16
MAX_MESSAGES = 4096
MAX_STOP_STRINGS = 16
MAX_STOP_STRING_CHARS = 256
MAX_TOOLS = 128
ROLES = ("system", "user", "assistant", "tool")
DTYPES = ("auto", "float16", "bfloat16", "float32")
QUANTIZE_BITS = (4, 8)

_PARSE_FIELD = re.compile(r"Failed to parse (\w+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')
_AT_PATH = re.compile(r" at GptTask\.([\w.\[\]]+?)\.?$")


def load_gpt_task(doc: dict | str | bytes) -> gpt_pb2.GptTask:
    """Parse the task JSON (a dict or its text) into a `GptTask`; a malformed field raises `TaskArgsError`.

    This checks the shape only (types, unknown fields); call `validate_gpt_task` for the bounds.
    """
    if isinstance(doc, bytes | str):
        try:
            doc = boundedjson.loads(doc, what="gpt task")
        except boundedjson.BoundedJsonError as e:
            raise TaskArgsError("gpt", f"gpt: {e}") from None
    if not isinstance(doc, dict):
        raise TaskArgsError("gpt", f"gpt: task must be a JSON object, got {type(doc).__name__}")
    doc = copy.deepcopy(doc)
    check_shape(doc, gpt_pb2.GptTask.DESCRIPTOR)  # JSON types first: ParseDict takes true for 1, "0.5" for 0.5
    try:
        return json_format.ParseDict(doc, gpt_pb2.GptTask())
    except json_format.ParseError as e:
        raise TaskArgsError(*_describe_parse_error(str(e))) from None


def gpt_task_to_dict(task: gpt_pb2.GptTask) -> dict:
    """The task's JSON form (snake_case names), as applications write it."""
    return json_format.MessageToDict(task, preserving_proto_field_name=True)


def validate_gpt_task(task: gpt_pb2.GptTask, *, local_model_dirs: bool = False) -> None:
    """Check every field against its bound; raises `TaskArgsError` naming the field and the bound.

    `model` must be a hub id ("owner/name"): a path would make workers load from their own disk (and tell
    the creator what exists there). Only a caller running its own models on its own machine (the
    executor's direct API, in tests and benches) passes `local_model_dirs=True`."""
    if not task.model.strip():
        raise TaskArgsError("model", "model is required (a Hugging Face model id like 'owner/name')")
    if len(task.model) > 1024:
        raise TaskArgsError("model", f"model must be at most 1024 characters, got {len(task.model)}")
    if not local_model_dirs:
        check_model_id("model", task.model)
    if task.dtype not in ("", *DTYPES):
        raise TaskArgsError("dtype", f"dtype must be one of {', '.join(DTYPES)}, got {task.dtype!r}")
    if task.HasField("quantize_bits") and task.quantize_bits not in QUANTIZE_BITS:
        raise TaskArgsError("quantize_bits", f"quantize_bits must be 4, 8 or null, got {task.quantize_bits}")
    _validate_messages(task)
    _validate_tools(task)
    _validate_generation(task.generation_config)


def with_defaults(task: gpt_pb2.GptTask) -> gpt_pb2.GptTask:
    """A copy with the definition-level defaults filled in: seed 0, dtype "auto", max_new_tokens 256."""
    out = gpt_pb2.GptTask()
    out.CopyFrom(task)
    if not out.HasField("seed"):
        out.seed = 0
    if not out.dtype:
        out.dtype = "auto"
    if not out.generation_config.HasField("max_new_tokens"):
        out.generation_config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    return out


def generation_overrides(task: gpt_pb2.GptTask) -> dict[str, Any]:
    """The generation fields the task sets (plus the max_new_tokens default), for `generate(**...)`.

    Unset fields are absent, so the model's own generation_config supplies them.
    """
    gc = task.generation_config
    out: dict[str, Any] = {"max_new_tokens": DEFAULT_MAX_NEW_TOKENS}
    for name in ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p",
                 "num_beams", "repetition_penalty", "num_return_sequences"):
        if gc.HasField(name):
            out[name] = getattr(gc, name)
    if gc.stop_strings:
        out["stop_strings"] = list(gc.stop_strings)
    return out


def _validate_messages(task: gpt_pb2.GptTask) -> None:
    if not task.messages:
        raise TaskArgsError("messages", "messages must hold at least one message")
    if len(task.messages) > MAX_MESSAGES:
        raise TaskArgsError("messages", f"messages must hold at most {MAX_MESSAGES} messages, got {len(task.messages)}")
    for i, m in enumerate(task.messages):
        where = f"messages[{i}]"
        if m.role not in ROLES:
            raise TaskArgsError(f"{where}.role", f"{where}.role must be one of {', '.join(ROLES)}, got {m.role!r}")
        if m.role == "tool" and not m.tool_call_id:
            raise TaskArgsError(f"{where}.tool_call_id", f"{where}.tool_call_id is required for a tool message")
        if m.tool_calls and m.role != "assistant":
            raise TaskArgsError(f"{where}.tool_calls", f"{where}.tool_calls is only allowed on assistant messages")
        if m.role != "assistant" and not m.content and m.role != "tool":
            raise TaskArgsError(f"{where}.content", f"{where}.content must not be empty for a {m.role} message")
        for j, call in enumerate(m.tool_calls):
            cw = f"{where}.tool_calls[{j}]"
            if call.type not in ("", "function"):
                raise TaskArgsError(f"{cw}.type", f"{cw}.type must be \"function\", got {call.type!r}")
            if not call.function.name:
                raise TaskArgsError(f"{cw}.function.name", f"{cw}.function.name is required")
            try:
                json.loads(call.function.arguments or "{}")
            except ValueError:
                raise TaskArgsError(f"{cw}.function.arguments",
                                    f"{cw}.function.arguments must be a JSON-encoded string") from None


def _validate_tools(task: gpt_pb2.GptTask) -> None:
    if len(task.tools) > MAX_TOOLS:
        raise TaskArgsError("tools", f"tools must hold at most {MAX_TOOLS} tools, got {len(task.tools)}")
    for i, tool in enumerate(task.tools):
        doc = json_format.MessageToDict(tool)
        where = f"tools[{i}]"
        if doc.get("type", "function") != "function":
            raise TaskArgsError(f"{where}.type", f"{where}.type must be \"function\", got {doc.get('type')!r}")
        fn = doc.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise TaskArgsError(f"{where}.function.name", f"{where}.function.name is required")
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            raise TaskArgsError(f"{where}.function.parameters", f"{where}.function.parameters must be an object")


def _validate_generation(gc: gpt_pb2.GenerationConfig) -> None:
    p = "generation_config"

    def finite(name: str) -> float:
        value = getattr(gc, name)
        if not math.isfinite(value):
            raise TaskArgsError(f"{p}.{name}", f"{p}.{name} must be a finite number, got {value}")
        return value

    if gc.HasField("max_new_tokens") and not 1 <= gc.max_new_tokens <= MAX_NEW_TOKENS:
        raise TaskArgsError(f"{p}.max_new_tokens",
                            f"{p}.max_new_tokens must be in [1, {MAX_NEW_TOKENS}], got {gc.max_new_tokens}")
    if gc.HasField("temperature") and finite("temperature") < 0:
        raise TaskArgsError(f"{p}.temperature", f"{p}.temperature must be >= 0, got {gc.temperature}")
    if gc.HasField("top_p") and not 0 < finite("top_p") <= 1:
        raise TaskArgsError(f"{p}.top_p", f"{p}.top_p must be in (0, 1], got {gc.top_p}")
    if gc.HasField("top_k") and gc.top_k > 1_000_000:
        raise TaskArgsError(f"{p}.top_k", f"{p}.top_k must be in [0, 1000000], got {gc.top_k}")
    if gc.HasField("min_p") and not 0 <= finite("min_p") <= 1:
        raise TaskArgsError(f"{p}.min_p", f"{p}.min_p must be in [0, 1], got {gc.min_p}")
    if gc.HasField("typical_p") and not 0 < finite("typical_p") <= 1:
        raise TaskArgsError(f"{p}.typical_p", f"{p}.typical_p must be in (0, 1], got {gc.typical_p}")
    if gc.HasField("repetition_penalty") and not finite("repetition_penalty") > 0:
        raise TaskArgsError(f"{p}.repetition_penalty",
                            f"{p}.repetition_penalty must be > 0, got {gc.repetition_penalty}")
    beams = gc.num_beams if gc.HasField("num_beams") else 1
    if gc.HasField("num_beams") and not 1 <= beams <= MAX_BEAMS:
        raise TaskArgsError(f"{p}.num_beams", f"{p}.num_beams must be in [1, {MAX_BEAMS}], got {beams}")
    if gc.HasField("num_return_sequences"):
        n = gc.num_return_sequences
        if not 1 <= n <= MAX_RETURN_SEQUENCES:
            raise TaskArgsError(f"{p}.num_return_sequences",
                                f"{p}.num_return_sequences must be in [1, {MAX_RETURN_SEQUENCES}], got {n}")
        if beams > 1 and n > beams:
            raise TaskArgsError(f"{p}.num_return_sequences",
                                f"{p}.num_return_sequences must be <= num_beams ({beams}) when beams are used, got {n}")
    if len(gc.stop_strings) > MAX_STOP_STRINGS:
        raise TaskArgsError(f"{p}.stop_strings",
                            f"{p}.stop_strings must hold at most {MAX_STOP_STRINGS} strings, got {len(gc.stop_strings)}")
    for i, s in enumerate(gc.stop_strings):
        if not s or len(s) > MAX_STOP_STRING_CHARS:
            raise TaskArgsError(f"{p}.stop_strings[{i}]",
                                f"{p}.stop_strings[{i}] must be 1 to {MAX_STOP_STRING_CHARS} characters, got {len(s)}")


def _describe_parse_error(text: str) -> tuple[str, str]:
    path = _PARSE_FIELD.findall(text)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        path.append(unknown.group(1))
        field = ".".join(path)
        return field, f"{field} is not a field of the GPT task"
    at = _AT_PATH.search(text.strip())
    field = at.group(1) if at else (".".join(path) or "gpt")
    detail = text.rsplit(": ", 1)[-1].split(" at ", 1)[0].rstrip(".")
    return field, f"{field} is malformed: {detail}"
