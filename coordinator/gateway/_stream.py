"""Verified streaming: forward the first node's tokens, finish only with the validated answer.

Which behaviour, and why. The gateway forwards the deltas of the first node to
stream (the coordinator's WatchTask deltas), minus their `finish_reason` and
`usage`, while the other two nodes run. Nothing that ends the answer is sent
before the task is VALIDATED. Then, per choice, what the client has already
received must be a prefix of the validated (majority) content:

- if it is, the gateway sends the rest of the validated answer (often nothing;
  more when the streaming node was slower than the quorum, or lost its lease),
  then the final chunk with `finish_reason` and the `helium` field, then
  `data: [DONE]`. The client then holds exactly the validated answer, token for
  token, whether or not the streaming node's own result was among the matching
  ones, and it never waits for the slow node once two others agree;
- if it is not (the streaming node lied, or was wrong), the stream ends with an
  error event `data: {"error": {..., "type": "verification_error"}}` and no
  `[DONE]`. Deltas already sent cannot be taken back, and appending the
  majority's text after a wrong prefix would give the client a blend of both;
  so the client is told plainly that what it saw was not validated (the
  official `openai` client raises `APIError`), with the task id in the message
  so that the validated answer can be read at `GET /v1/tasks/{task_id}`.

Deltas from any node other than the first streamer, duplicates, and everything
after a gap in `seq` (or from a watch that began after seq 0) are not
forwarded: the validated answer fills the rest.
This module is pure logic over dicts; `serving` feeds it the events.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from coordinator.gateway.errors import StreamVerificationError

__all__ = ["StreamVerifier"]


@dataclass
class _ChoiceState:
    content: str = ""
    role_sent: bool = False
    # tool-call index -> {"id", "name", "arguments"} as streamed so far
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)


class StreamVerifier:
    """Turns WatchTask events into the chat.completion.chunk objects the client receives."""

    def __init__(self, *, task_id: str, model: str, created: int | None = None,
                 system_fingerprint: str | None = None) -> None:
        self.task_id = task_id
        self.model = model
        self.system_fingerprint = system_fingerprint
        self.chunk_id = "chatcmpl-" + task_id.removeprefix("0x")[:32]
        self.created = int(time.time()) if created is None else created
        self.streamer: str = ""
        self.frozen = False
        self._last_seq: int | None = None
        self._choices: dict[int, _ChoiceState] = {}

    # --- deltas -----------------------------------------------------------------------------------

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        fp = {"system_fingerprint": self.system_fingerprint} if self.system_fingerprint else {}
        return {"id": self.chunk_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, **fp, "choices": choices, **extra}

    def on_delta(self, node: str, seq: int, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to forward now for one node delta (finish_reason and usage withheld)."""
        if self.frozen:
            return []
        if not self.streamer:
            self.streamer = node
        if node != self.streamer:
            return []
        if self._last_seq is not None and seq <= self._last_seq:
            return []
        if seq != (0 if self._last_seq is None else self._last_seq + 1):
            self.frozen = True  # a lost delta (or the watch began late): the validated answer supplies the rest
            return []
        self._last_seq = seq
        out = []
        for choice in chunk.get("choices") or ():
            delta = self._forward_delta(int(choice.get("index", 0)), choice.get("delta") or {})
            if delta:
                out.append({"index": int(choice.get("index", 0)), "delta": delta, "finish_reason": None})
        return [self._chunk(out)] if out else []

    def _forward_delta(self, index: int, delta: dict[str, Any]) -> dict[str, Any]:
        st = self._choices.setdefault(index, _ChoiceState())
        out: dict[str, Any] = {}
        if not st.role_sent:
            out["role"] = "assistant"
            st.role_sent = True
        if delta.get("content"):
            st.content += delta["content"]
            out["content"] = delta["content"]
        calls = []
        for tc in delta.get("tool_calls") or ():
            k = int(tc.get("index", 0))
            acc = st.tool_calls.setdefault(k, {"id": "", "name": "", "arguments": ""})
            fn = tc.get("function") or {}
            acc["id"] = acc["id"] or tc.get("id") or ""
            acc["name"] += fn.get("name") or ""
            acc["arguments"] += fn.get("arguments") or ""
            calls.append(tc)
        if calls:
            out["tool_calls"] = calls
        return out

    # --- the validated answer ---------------------------------------------------------------------

    def on_validated(self, output: dict[str, Any], helium: dict[str, Any],
                     include_usage: bool = False) -> list[dict[str, Any]]:
        """The remaining chunks and the final chunk; raises StreamVerificationError when the streamed
        tokens are not a prefix of the validated answer."""
        choices = {int(c.get("index", i)): c for i, c in enumerate(output.get("choices") or ())}
        for index in self._choices:
            if index not in choices:
                self._fail(f"choice {index} was streamed but the validated answer has no such choice")
        rest, final = [], []
        for index in sorted(choices):
            msg = choices[index].get("message") or {}
            st = self._choices.get(index, _ChoiceState())
            delta = self._remainder(index, st, msg)
            if delta:
                rest.append({"index": index, "delta": delta, "finish_reason": None})
            final.append({"index": index, "delta": {}, "finish_reason": choices[index].get("finish_reason") or "stop"})
        out = [self._chunk([c]) for c in rest]
        out.append(self._chunk(final, helium=helium))
        if include_usage and output.get("usage"):
            out.append(self._chunk([], usage=output["usage"]))
        return out

    def _remainder(self, index: int, st: _ChoiceState, msg: dict[str, Any]) -> dict[str, Any]:
        content = msg.get("content") or ""
        if not content.startswith(st.content):
            self._fail(f"choice {index}: the streamed text is not the validated text")
        delta: dict[str, Any] = {}
        if not st.role_sent:
            delta["role"] = "assistant"
        if content[len(st.content):]:
            delta["content"] = content[len(st.content):]
        validated_calls = msg.get("tool_calls") or []
        calls = []
        for k in st.tool_calls:
            if k >= len(validated_calls):
                self._fail(f"choice {index}: tool call {k} was streamed but not validated")
        for k, vc in enumerate(validated_calls):
            fn = vc.get("function") or {}
            got = st.tool_calls.get(k, {"id": "", "name": "", "arguments": ""})
            name, args = fn.get("name") or "", fn.get("arguments") or ""
            if got["name"] and got["name"] != name or not args.startswith(got["arguments"]):
                self._fail(f"choice {index}: streamed tool call {k} is not the validated one")
            part: dict[str, Any] = {"index": k}
            if not got["name"]:
                part.update(id=vc.get("id", ""), type="function")
                part["function"] = {"name": name, "arguments": args}
            elif args[len(got["arguments"]):]:
                part["function"] = {"arguments": args[len(got["arguments"]):]}
            else:
                continue
            calls.append(part)
        if calls:
            delta["tool_calls"] = calls
        return delta

    def _fail(self, why: str) -> None:
        raise StreamVerificationError(
            f"task {self.task_id}: {why}; the streamed tokens from node {self.streamer or '?'} were not "
            f"validated by the quorum. The validated answer is at GET /v1/tasks/{self.task_id}."
        )

    def error_chunk(self, exc: Exception) -> dict[str, Any]:
        body = exc.body()["error"] if hasattr(exc, "body") else {
            "message": str(exc), "type": "server_error", "param": None, "code": "internal_error"}
        return {"error": {**body, "task_id": self.task_id}}
