"""The pure parts of the response: ending a choice, tool-call parsing, the result hash, streaming deltas."""

from __future__ import annotations

import hashlib
import json
import struct

from worker.executors.gpt import (
    HASH_DOMAIN,
    Choice,
    build_response,
    parse_tool_calls,
    response_id,
    result_hash,
)
from worker.executors.gpt._response import StreamEmitter, finish_sequence, make_choice

VOCAB = {i: ch for i, ch in enumerate("abcdefghij#! \n")}
EOS = 99


def decode(ids):
    return "".join(VOCAB.get(i, "") for i in ids)


def enc(text):
    inv = {v: k for k, v in VOCAB.items()}
    return [inv[c] for c in text]


def test_finish_reasons_and_cuts():
    raw, text = finish_sequence(enc("abc") + [EOS, 7, 7], eos_ids=frozenset({EOS}), stop_strings=(), decode=decode,
                                max_new_tokens=6)
    assert raw.token_ids == tuple(enc("abc") + [EOS]) and raw.finish_reason == "stop" and text == "abc"
    raw, text = finish_sequence(enc("abc##de"), eos_ids=frozenset({EOS}), stop_strings=("##",), decode=decode,
                                max_new_tokens=7)
    assert raw.token_ids == tuple(enc("abc##")) and raw.finish_reason == "stop" and text == "abc"
    raw, text = finish_sequence(enc("abcdef"), eos_ids=frozenset({EOS}), stop_strings=("zz",), decode=decode,
                                max_new_tokens=6)
    assert raw.finish_reason == "length" and text == "abcdef" and len(raw.token_ids) == 6


def test_tool_calls_parse_into_openai_shape():
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' \
           '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    content, calls = parse_tool_calls(text, id_prefix="t")
    assert content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_") and calls[0]["id"] != calls[1]["id"]
    # Deterministic ids: every node derives the same.
    assert parse_tool_calls(text, id_prefix="t") == (content, calls)


def test_malformed_tool_call_stays_text():
    for text in ("<tool_call>{not json}</tool_call>", '<tool_call>{"arguments": {}}</tool_call>', "plain"):
        assert parse_tool_calls(text, id_prefix="t") == (text, ())


def test_make_choice_only_parses_with_tools():
    text = '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>'
    from worker.executors.gpt._response import RawChoice

    raw = RawChoice((1, 2), "stop")
    with_tools = make_choice(0, raw, text, tools=True, id_prefix="t")
    assert with_tools.finish_reason == "tool_calls" and with_tools.content is None and len(with_tools.tool_calls) == 1
    assert make_choice(0, raw, text, tools=False, id_prefix="t").content == text


def _s(text: str) -> bytes:
    return struct.pack(">I", len(text.encode())) + text.encode()


def test_result_hash_is_the_documented_encoding_and_ignores_id_and_time():
    choices = [Choice(1, (5, 6), "length", "x"), Choice(0, (1, 2, 3), "stop", "y")]
    expected = hashlib.sha256(
        HASH_DOMAIN + struct.pack(">I", 2)
        + _s("stop") + struct.pack(">IIII", 3, 1, 2, 3) + _s("y") + _s("[]")
        + _s("length") + struct.pack(">III", 2, 5, 6) + _s("x") + _s("[]")).digest()
    assert HASH_DOMAIN == b"helium.gpt.result.v2"
    assert result_hash(choices) == expected and len(expected) == 32
    # The returned text is bound too (issue #13: altered text under honest token ids must not verify).
    assert result_hash([Choice(0, (1, 2, 3), "stop", "other"), Choice(1, (5, 6), "length", "x")]) != expected
    assert result_hash([Choice(0, (1, 2, 3), "stop", "y"), Choice(1, (5, 6), "length", None)]) != expected
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert result_hash([Choice(0, (1, 2, 3), "stop", "y", (call,)), choices[0]]) != expected
    assert result_hash([Choice(0, (1, 2, 3), "length", "y"), Choice(1, (5, 6), "length", "x")]) != expected
    assert result_hash([Choice(0, (1, 2, 4), "stop", "y"), Choice(1, (5, 6), "length", "x")]) != expected
    a = build_response(task_id="0xabc", model="m", created=1, prompt_tokens=3, choices=choices)
    b = build_response(task_id="0xabc", model="m", created=2, prompt_tokens=3, choices=choices)
    assert a["id"] == b["id"] == response_id("0xabc") == "chatcmpl-abc"
    assert a["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert [c["index"] for c in a["choices"]] == [0, 1] and a["object"] == "chat.completion"
    assert [c["token_ids"] for c in a["choices"]] == [[1, 2, 3], [5, 6]]


def test_the_hash_is_recomputable_from_the_returned_output():
    from helium.tasks.results import gpt_output_problem

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}
    choices = [Choice(0, (1, 2, 3), "tool_calls", None, (call,)), Choice(1, (5, 6), "length", "näive")]
    doc = build_response(task_id="0xabc", model="m", created=1, prompt_tokens=3, choices=choices)
    honest = result_hash(choices)
    out = json.dumps(doc, ensure_ascii=False).encode()
    assert gpt_output_problem(out, honest) == ""
    altered = json.loads(out)
    altered["choices"][1]["message"]["content"] = "BUY CHEAP PILLS"
    assert "do not hash" in gpt_output_problem(json.dumps(altered).encode(), honest)
    altered = json.loads(out)
    altered["choices"][0]["message"]["tool_calls"][0]["function"]["name"] = "rm"
    assert "do not hash" in gpt_output_problem(json.dumps(altered).encode(), honest)
    assert "do not hash" in gpt_output_problem(out, b"\x01" * 32)
    del altered["choices"][0]["token_ids"]
    assert "token_ids" in gpt_output_problem(json.dumps(altered).encode(), honest)
    assert "not JSON" in gpt_output_problem(b"\xff{", honest)


def test_stream_holds_back_what_could_still_change():
    sent = []
    em = StreamEmitter(send=sent.append, task_id="0x1", model="m", created=0, n=1, decode=decode,
                       eos_ids=frozenset({EOS}), stop_strings=("##",), tools=False)
    ids = enc("ab #c#d##e")
    for k in range(1, len(ids) + 1):
        em.update(0, ids[:k])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in sent)
    assert streamed == "ab #c#d"
    raw, text = finish_sequence(ids, eos_ids=frozenset({EOS}), stop_strings=("##",), decode=decode, max_new_tokens=20)
    em.finish([make_choice(0, raw, text, tools=False, id_prefix="x")])
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in sent) == text == "ab #c#d"
    assert sent[0]["choices"][0]["delta"]["role"] == "assistant" and sent[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-1" for c in sent)
