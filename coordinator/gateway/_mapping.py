"""OpenAI chat-completion parameters onto the GPT task definition (and back, for error names).

Sampling policy: `temperature == 0` means greedy decoding (`do_sample=false`);
any other sampling knob (temperature > 0, top_p, top_k, min_p) or `n > 1` turns
sampling on; with none of them the model's own generation_config decides.
`n > 1` with `temperature == 0` is refused (greedy decoding has one answer).
Without `seed`, each request draws a fresh random seed (so regenerating gives a new answer) and the answer
reports the seed it used (`helium.seed`, `system_fingerprint`), so it can be reproduced.
Every parameter is honoured or refused with a 400 naming it; none is silently dropped.
"""

from __future__ import annotations

import secrets
from typing import Any

from google.protobuf import json_format

from coordinator.gateway.errors import InvalidRequestError
from coordinator.gateway.protocol import ChatCompletionRequest, ChatMessage
from helium.tasks import TaskArgsError
from helium.v1 import gpt_pb2, task_pb2

__all__ = ["chat_request_to_args", "fresh_seed", "parse_fee", "refuse_unknown", "request_param_of"]

# The largest seed drawn for a request without one (SD tasks bound seeds to 2^31 - 1).
_SEED_BOUND = 2**31

# Task-definition field -> the request parameter a user wrote.
_PARAM_OF_FIELD = {
    "generation_config.max_new_tokens": "max_completion_tokens",
    "generation_config.num_return_sequences": "n",
    "generation_config.stop_strings": "stop",
    "generation_config.temperature": "temperature",
    "generation_config.top_p": "top_p",
    "generation_config.top_k": "top_k",
    "generation_config.min_p": "min_p",
    "generation_config.repetition_penalty": "repetition_penalty",
    "generation_config.do_sample": "temperature",
}


def request_param_of(field: str) -> str:
    """The request parameter behind a task-definition field name (`generation_config.top_p` -> `top_p`)."""
    field = field.removeprefix("args.").removeprefix("gpt.")
    for key, param in _PARAM_OF_FIELD.items():
        if field == key or field.startswith(key + "["):
            return param
    return field


def _content_text(msg: ChatMessage, i: int) -> str:
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return msg.content
    parts = []
    for j, part in enumerate(msg.content):
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequestError(
                f"messages[{i}].content[{j}]: only text content parts are supported, got {part.get('type')!r}",
                param=f"messages[{i}].content[{j}]",
            )
        parts.append(part["text"])
    return "".join(parts)


def _message(msg: ChatMessage, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "system" if msg.role == "developer" else msg.role,
                           "content": _content_text(msg, i)}
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": tc.id, "type": "function", "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
            for tc in msg.tool_calls
        ]
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    if msg.name:
        out["name"] = msg.name
    return out


def fresh_seed() -> int:
    return secrets.randbelow(_SEED_BOUND)


def refuse_unknown(req) -> None:
    """400 naming the first top-level field the request model does not know."""
    for name in (req.model_extra or {}):
        raise InvalidRequestError(f"unknown parameter: {name!r} is not supported by this gateway", param=name,
                                  code="unknown_parameter")


def _refuse_unsupported(req: ChatCompletionRequest) -> None:
    refuse_unknown(req)
    if req.logit_bias:
        raise InvalidRequestError("logit_bias is not supported", param="logit_bias")
    if req.parallel_tool_calls is False:
        raise InvalidRequestError("parallel_tool_calls=false is not supported: the model may call several tools "
                                  "in one turn", param="parallel_tool_calls")
    if req.reasoning_effort is not None:
        raise InvalidRequestError("reasoning_effort is not supported (the models served do not reason in steps)",
                                  param="reasoning_effort")
    if req.modalities not in (None, ["text"]):
        raise InvalidRequestError(f"modalities must be ['text'], got {req.modalities!r}", param="modalities")
    if req.store:
        raise InvalidRequestError("store=true is not supported: the gateway keeps no completions for later use",
                                  param="store")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value not in (None, 0, 0.0):
            raise InvalidRequestError(f"{name} is not supported (use repetition_penalty), got {value}", param=name)
    if req.logprobs:
        raise InvalidRequestError("logprobs is not supported", param="logprobs")
    if req.response_format and req.response_format.get("type", "text") != "text":
        raise InvalidRequestError(
            f"response_format.type must be 'text', got {req.response_format.get('type')!r}", param="response_format"
        )
    if req.tool_choice not in (None, "auto", "none"):
        raise InvalidRequestError("tool_choice must be 'auto' or 'none'", param="tool_choice")
    if req.n is not None and req.n < 1:
        raise InvalidRequestError(f"n must be >= 1, got {req.n}", param="n")
    if req.seed is not None and req.seed < 0:
        raise InvalidRequestError(f"seed must be >= 0, got {req.seed}", param="seed")
    if req.max_tokens is not None and req.max_completion_tokens is not None and req.max_tokens != req.max_completion_tokens:
        raise InvalidRequestError("give max_tokens or max_completion_tokens, not both", param="max_tokens")


def _generation_config(req: ChatCompletionRequest) -> dict[str, Any]:
    gc: dict[str, Any] = {}
    max_new = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    if max_new is not None:
        if max_new < 1:
            param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            raise InvalidRequestError(f"{param} must be >= 1, got {max_new}", param=param)
        gc["max_new_tokens"] = max_new
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        value = getattr(req, name)
        if value is not None:
            gc[name] = value
    n = req.n or 1
    greedy = req.temperature is not None and req.temperature == 0
    if greedy:
        gc.pop("temperature")
        gc["do_sample"] = False
        if n > 1:
            raise InvalidRequestError("n > 1 needs sampling: temperature must be > 0", param="n")
    elif n > 1 or any(k in gc for k in ("temperature", "top_p", "top_k", "min_p")):
        gc["do_sample"] = True
    if n > 1:
        gc["num_return_sequences"] = n
    if req.stop is not None:
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop)
        if stops:
            gc["stop_strings"] = stops
    return gc


def chat_task_document(req: ChatCompletionRequest) -> dict[str, Any]:
    """The GPT task JSON (the GptTask JSON mapping) for one chat-completion request."""
    _refuse_unsupported(req)
    doc: dict[str, Any] = {"model": req.model, "messages": [_message(m, i) for i, m in enumerate(req.messages)]}
    if req.tools and req.tool_choice != "none":
        doc["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
    gc = _generation_config(req)
    if gc:
        doc["generation_config"] = gc
    doc["seed"] = req.seed if req.seed is not None else fresh_seed()
    if req.dtype is not None:
        doc["dtype"] = req.dtype
    if req.quantize_bits is not None:
        doc["quantize_bits"] = req.quantize_bits
    return doc


def _load_gpt(doc: dict[str, Any]) -> gpt_pb2.GptTask:
    try:
        from helium.tasks import gpt as gpt_tasks  # the GPT task framework, when present
    except ImportError:
        gpt_tasks = None
    if gpt_tasks is not None and hasattr(gpt_tasks, "load_gpt_task"):
        task = gpt_tasks.load_gpt_task(doc)
        if hasattr(gpt_tasks, "validate_gpt_task"):
            gpt_tasks.validate_gpt_task(task)
        return task
    try:
        return json_format.ParseDict(doc, gpt_pb2.GptTask())
    except json_format.ParseError as exc:
        raise TaskArgsError("args", str(exc)) from exc


def chat_request_to_args(req: ChatCompletionRequest) -> task_pb2.TaskArgs:
    """Maps and validates; a bad value is an `InvalidRequestError` naming the request parameter."""
    doc = chat_task_document(req)
    try:
        task = _load_gpt(doc)
    except TaskArgsError as exc:
        param = request_param_of(exc.field)
        raise InvalidRequestError(str(exc), param=param) from exc
    return task_pb2.TaskArgs(gpt=task)


def parse_fee(raw: int | str | None, default: int, min_fee: int) -> int:
    """The fee in wei: the request's `fee` (extra body) or the gateway default, never below the network's."""
    if raw is None:
        return max(default, min_fee)
    # An integer or a decimal string, below 2^256 (the signed Task's uint256); never a boolean or a float.
    digits = raw.strip() if isinstance(raw, str) else None
    if isinstance(raw, bool) or not (isinstance(raw, int) or (digits and digits.isascii() and digits.isdigit())):
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
        raise InvalidRequestError(f"fee must be an integer number of wei, got {shown}", param="fee")
    fee = int(raw) if digits is None else int(digits) if len(digits) <= 78 else 1 << 256
    if not 0 <= fee < 1 << 256:
        raise InvalidRequestError(f"fee must be in [0, 2^256) wei, got {str(raw)[:90]}", param="fee")
    if fee < min_fee:
        raise InvalidRequestError(f"fee must be >= the network's min_fee {min_fee} wei, got {fee}", param="fee")
    return fee
