"""From generated token ids to the ChatGPT-style response and the result hash.

Both backends hand over, per choice, the raw generated token ids (pad tokens
after the end included or not) and nothing else; everything below is computed
from those ids the same way, so the result hash means the same on every backend.

Ending a choice (`finish_sequence`): the ids are cut right after the first
end-of-sequence token (kept: it was generated) or right after the first token
whose decoded prefix contains a stop string (kept as well); the finish reason is
then ``stop``; a choice that ran to `max_new_tokens` without either is
``length``. The text is the decoded ids (special tokens skipped), cut where the
first stop string begins.

Tool calls: with tools in the task, every Hermes/Qwen ``<tool_call>{"name":
..., "arguments": {...}}</tool_call>`` block in the text becomes an OpenAI
tool call (arguments re-encoded as a JSON string, id derived from the task id so
that it is the same on every node); the content is the text before the first
block (None when empty), and the finish reason becomes ``tool_calls``.

Result hash: `helium.tasks.results.gpt_result_hash` (32 bytes, what nodes sign and compare). It covers
the token ids, the finish reasons and the returned text (content and tool calls) of every choice, never
the response `id`, `created`, `usage` or the model name. Each choice of the response carries its
`token_ids`, so the coordinator recomputes the hash from the output it returns.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from helium.tasks.results import gpt_result_hash

__all__ = [
    "Choice",
    "RawChoice",
    "StreamEmitter",
    "build_response",
    "finish_sequence",
    "make_choice",
    "parse_tool_calls",
    "response_id",
    "result_hash",
]

TOOL_CALL_OPEN = "<tool_call>"
_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)

Decode = Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class RawChoice:
    """A choice as the backend produced it: ids cut at the end, and stop/length."""

    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" or "length"


@dataclass(frozen=True)
class Choice:
    index: int
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop", "length" or "tool_calls"
    content: str | None
    tool_calls: tuple[dict, ...] = field(default=())


def finish_sequence(ids: Sequence[int], *, eos_ids: frozenset[int], stop_strings: Sequence[str],
                    decode: Decode, max_new_tokens: int) -> tuple[RawChoice, str]:
    """Cut one choice's raw ids where it ended; returns the choice and its text (cut at the stop string)."""
    ids = [int(t) for t in ids]
    end = len(ids)
    reason = "length"
    for i, t in enumerate(ids):
        if t in eos_ids:
            end, reason = i + 1, "stop"
            break
    if stop_strings:
        text = decode(ids[:end])
        if any(s in text for s in stop_strings):
            # Smallest prefix whose text holds a stop string (prefix texts only grow).
            lo, hi = 1, end
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in decode(ids[:mid]) for s in stop_strings):
                    hi = mid
                else:
                    lo = mid + 1
            end, reason = lo, "stop"
    if reason == "length" and end < max_new_tokens:
        # Shorter than asked without an end token: only pad after an end we could not see.
        reason = "stop"
    kept = tuple(ids[:end])
    return RawChoice(kept, reason), cut_at_stop(decode(kept), stop_strings)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def parse_tool_calls(text: str, *, id_prefix: str) -> tuple[str | None, tuple[dict, ...]]:
    """Split text into (content, OpenAI tool_calls) using the Hermes/Qwen `<tool_call>` convention.

    A block that is not a JSON object with a string `name` is left in the content, unparsed.
    """
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:
        return (text or None), ()
    calls = []
    for m in _TOOL_CALL.finditer(text, start):
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            return (text or None), ()
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return (text or None), ()
        args = obj.get("arguments", obj.get("parameters", {}))
        calls.append({
            "id": f"call_{hashlib.sha256(f'{id_prefix}:{len(calls)}'.encode()).hexdigest()[:24]}",
            "type": "function",
            "function": {"name": obj["name"],
                         "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)},
        })
    content = text[:start].rstrip()
    return (content or None), tuple(calls)


def make_choice(index: int, raw: RawChoice, text: str, *, tools: bool, id_prefix: str) -> Choice:
    if tools:
        content, calls = parse_tool_calls(text, id_prefix=f"{id_prefix}:{index}")
        if calls:
            return Choice(index, raw.token_ids, "tool_calls", content, calls)
    return Choice(index, raw.token_ids, raw.finish_reason, text)


def result_hash(choices: Sequence[Choice]) -> bytes:
    """The 32-byte result hash over token ids, finish reasons and text (helium.tasks.results)."""
    return gpt_result_hash(choices)


def response_id(task_id: str) -> str:
    """`chatcmpl-<first 24 hex digits of the task id>`: the same on every node."""
    digits = task_id[2:] if task_id.startswith(("0x", "0X")) else task_id
    return "chatcmpl-" + (re.sub(r"[^0-9A-Za-z]", "", digits)[:24] or "task")


def build_response(*, task_id: str, model: str, created: int, prompt_tokens: int,
                   choices: Sequence[Choice]) -> dict:
    """The `chat.completion` document."""
    completion = sum(len(c.token_ids) for c in choices)
    out_choices = []
    for c in sorted(choices, key=lambda c: c.index):
        message: dict = {"role": "assistant", "content": c.content}
        if c.tool_calls:
            message["tool_calls"] = [dict(tc) for tc in c.tool_calls]
        out_choices.append({"index": c.index, "message": message, "finish_reason": c.finish_reason,
                            "token_ids": list(c.token_ids)})
    return {
        "id": response_id(task_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": out_choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                  "total_tokens": prompt_tokens + completion},
    }


class StreamEmitter:
    """Turns growing token ids into `chat.completion.chunk` dicts whose content deltas add up to the final content.

    While generating, a choice's text is emitted only up to a point that cannot
    change: a trailing partial UTF-8 character, trailing whitespace, and any
    suffix that could begin a stop string (or `<tool_call>` when tools are in
    play) are held back; nothing is emitted past a stop string, an end token or
    a tool call. `finish()` then emits the rest of the final content, and the
    last chunk of each choice carries its finish reason (and its tool calls).
    """

    def __init__(self, *, send: Callable[[dict], None], task_id: str, model: str, created: int, n: int,
                 decode: Decode, eos_ids: frozenset[int], stop_strings: Sequence[str], tools: bool) -> None:
        self._send, self._decode, self._eos = send, decode, eos_ids
        self._base = {"id": response_id(task_id), "object": "chat.completion.chunk", "created": created,
                      "model": model}
        self._sentinels = tuple(stop_strings) + ((TOOL_CALL_OPEN,) if tools else ())
        self._stops = tuple(stop_strings)
        self._emitted = [""] * n
        self._started = [False] * n
        self._done = [False] * n

    def update(self, index: int, ids: Sequence[int]) -> None:
        if self._done[index]:
            return
        ids = list(ids)
        for i, t in enumerate(ids):
            if t in self._eos:
                ids, self._done[index] = ids[:i], True
                break
        text = self._decode(ids)
        safe = text
        for s in self._sentinels:
            at = safe.find(s)
            if at >= 0:
                safe, self._done[index] = safe[:at], True
        if not self._done[index]:
            safe = _hold_back(safe, self._sentinels)
        safe = safe.rstrip()
        self._emit(index, safe)

    def finish(self, choices: Sequence[Choice]) -> None:
        for c in sorted(choices, key=lambda c: c.index):
            final = c.content or ""
            if final.startswith(self._emitted[c.index]):
                self._emit(c.index, final)
            elif not self._started[c.index]:
                self._chunk(c.index, {"role": "assistant", "content": ""})
            delta: dict = {}
            if c.tool_calls:
                delta["tool_calls"] = [{"index": i, **tc} for i, tc in enumerate(c.tool_calls)]
            self._chunk(c.index, delta, c.finish_reason)

    def _emit(self, index: int, text: str) -> None:
        done = self._emitted[index]
        if not text.startswith(done) or len(text) == len(done):
            return
        delta = {"content": text[len(done):]}
        if not self._started[index]:
            delta = {"role": "assistant", **delta}
            self._started[index] = True
        self._emitted[index] = text
        self._chunk(index, delta)

    def _chunk(self, index: int, delta: dict, finish_reason: str | None = None) -> None:
        self._started[index] = True
        self._send({**self._base, "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]})


def _hold_back(text: str, sentinels: Sequence[str]) -> str:
    text = text.rstrip("\ufffd")
    keep = len(text)
    for s in sentinels:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                keep = min(keep, len(text) - k)
                break
    return text[:keep]
