"""The GPT executor: one JSON task definition for any Hugging Face causal LM, run deterministically.

Public face: `GptExecutor` (the `worker.executors.base.Executor` for task_type
"gpt"), plus the pure helpers the rest of the system may reuse: `result_hash`
(what nodes sign and compare), `parse_tool_calls` (Hermes/Qwen `<tool_call>`
blocks → OpenAI tool_calls) and `render_prompt` (chat template or the plain fallback).
"""

from helium.tasks.results import GPT_HASH_DOMAIN as HASH_DOMAIN
from worker.executors.gpt._executor import BACKENDS, GptExecutor, GptRun
from worker.executors.gpt._prompt import plain_prompt, render_prompt
from worker.executors.gpt._response import (
    Choice,
    build_response,
    parse_tool_calls,
    response_id,
    result_hash,
)

__all__ = [
    "BACKENDS",
    "HASH_DOMAIN",
    "Choice",
    "GptExecutor",
    "GptRun",
    "build_response",
    "parse_tool_calls",
    "plain_prompt",
    "render_prompt",
    "response_id",
    "result_hash",
]
