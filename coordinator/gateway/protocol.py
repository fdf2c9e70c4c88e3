"""OpenAI-compatible wire models of the gateway (requests and the objects it builds).

Only shapes live here: no defaults that mean policy, no calls. Unknown
top-level request fields are kept (`model_extra`) and refused with a 400 that
names them (`_mapping`), as are known OpenAI fields whose meaning Helium cannot
honour: a parameter is either honoured or refused, never silently dropped.
Nested objects (messages, tools) stay lenient: clients echo back fields of
earlier answers there (`refusal`, `annotations`) that change nothing. Helium's own knobs come in through the
OpenAI client's `extra_body`: `dtype`, `quantize_bits`, `top_k`, `min_p`,
`repetition_penalty`, `fee` (wei, a decimal string or integer).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatCompletionRequest",
    "ChatMessage",
    "ErrorBody",
    "ErrorResponse",
    "FunctionCall",
    "HeliumInfo",
    "ImageGenerationRequest",
    "ModelCard",
    "ModelList",
    "StreamOptions",
    "Tool",
    "ToolCall",
]


class _Lenient(BaseModel):
    # Lenient about extra fields, strict about types: `true` is not 1, "5" is not 5 (issue #14 item 7).
    model_config = ConfigDict(extra="allow", strict=True)


class FunctionCall(_Lenient):
    name: str
    arguments: str = ""


class ToolCall(_Lenient):
    id: str = ""
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    # A string, or OpenAI content parts ([{"type": "text", "text": ...}]); None for a tool-call turn.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class StreamOptions(_Lenient):
    include_usage: bool | None = None


class ChatCompletionRequest(_Lenient):
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    response_format: dict[str, Any] | None = None
    # Refused unless they ask for what Helium does anyway (_mapping names each).
    logit_bias: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    store: bool | None = None
    # An end-user id for abuse tracking: accepted, changes nothing in the answer.
    user: str | None = None
    # Helium extra body.
    dtype: Literal["float16", "bfloat16", "float32", "auto"] | None = None
    quantize_bits: int | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    fee: int | str | None = None


class ImageGenerationRequest(_Lenient):
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(default=1, ge=1, le=16)
    size: str = "512x512"
    response_format: Literal["b64_json", "url"] = "b64_json"
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    # Helium extra body (the SD task's own fields).
    negative_prompt: str | None = None
    steps: int | None = None
    seed: int | None = None
    cfg: float | None = None
    scheduler: str | None = None
    dtype: Literal["float16", "bfloat16", "float32", "auto"] | None = None
    fee: int | str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "helium"
    # Helium: the task type, the cards of the nodes that serve it, and how many nodes.
    type: str = "gpt"
    types: list[str] = Field(default_factory=list)
    cards: list[dict[str, Any]] = Field(default_factory=list)
    nodes: int = 0
    loaded_nodes: int = 0


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class HeliumInfo(BaseModel):
    """The `helium` field on the final object of every answer: which task, and how it was verified."""

    task_id: str
    nodes: list[str]
    validation: str
    settlement_tx: str = ""
    streamed_by: str = ""


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
