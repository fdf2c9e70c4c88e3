"""Turning the task's messages (and tools) into prompt token ids.

With a chat template: the model's own template, through
`tokenizer.apply_chat_template(messages, tools=..., add_generation_prompt=True)`,
then tokenized without adding special tokens again (templates write their own).
Assistant tool calls reach the template with their arguments decoded to an
object, the Hugging Face convention that templates such as Qwen2.5's expect.

Tools reach the template (and the fallback) with every object's keys sorted: the same bytes on every node.

Without a template (base models such as GPT-2), the documented plain fallback::

    [Tools: <one JSON tool per line>]        <- only when tools are given, first
    System: <content>

    User: <content>

    Assistant: <content>[ <tool_call>{"name": ..., "arguments": ...}</tool_call>]

    Tool (<tool_call_id>): <content>

    Assistant:

i.e. each message as ``<Role>: <content>`` separated by a blank line, ending with
``Assistant:`` for the model to continue; tokenized with the tokenizer's own
special tokens (a BOS where the tokenizer adds one).
"""

from __future__ import annotations

import json

from google.protobuf import json_format

from helium.v1 import gpt_pb2
from worker.errors import InvalidArgsError

__all__ = ["message_dicts", "plain_prompt", "render_prompt", "tool_dicts"]

_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}


def message_dicts(task: gpt_pb2.GptTask) -> list[dict]:
    out = []
    for m in task.messages:
        d: dict = {"role": m.role, "content": m.content}
        if m.name:
            d["name"] = m.name
        if m.tool_call_id:
            d["tool_call_id"] = m.tool_call_id
        if m.tool_calls:
            d["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": json.loads(c.function.arguments or "{}")}}
                for c in m.tool_calls
            ]
        out.append(d)
    return out


def tool_dicts(task: gpt_pb2.GptTask) -> list[dict]:
    """The tools as the template sees them, every object's keys sorted. A tool's JSON schema is a protobuf
    Struct, a map whose iteration order is random per process: unsorted, three nodes rendered the same
    tools in different orders, got different prompt tokens and different results (issue #13 item 9)."""
    return [json.loads(json.dumps(json_format.MessageToDict(t), sort_keys=True)) for t in task.tools]


def plain_prompt(messages: list[dict], tools: list[dict]) -> str:
    parts = []
    if tools:
        parts.append("Tools:\n" + "\n".join(json.dumps(t, sort_keys=True) for t in tools))
    for m in messages:
        role = _ROLE_NAMES[m["role"]]
        if m["role"] == "tool":
            role = f"Tool ({m.get('tool_call_id', '')})"
        text = m["content"]
        for c in m.get("tool_calls", ()):
            call = json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
            text += f" <tool_call>{call}</tool_call>"
        parts.append(f"{role}: {text}".rstrip())
    parts.append("Assistant:")
    return "\n\n".join(parts)


def render_prompt(tokenizer, task: gpt_pb2.GptTask) -> list[int]:
    """The prompt token ids for `task` (chat template, or the plain fallback)."""
    messages, tools = message_dicts(task), tool_dicts(task)
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                 add_generation_prompt=True)
        except Exception as e:  # jinja2 TemplateError, or a template's raise_exception()
            raise InvalidArgsError(f"messages: the model's chat template refused them: {e}") from e
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(plain_prompt(messages, tools), add_special_tokens=True)["input_ids"])
