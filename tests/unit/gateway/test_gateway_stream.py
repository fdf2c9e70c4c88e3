"""The verified-stream rule against scripted event sequences (no network)."""

from __future__ import annotations

import pytest
from gateway_fakes import deltas_for

from coordinator.gateway._stream import StreamVerifier
from coordinator.gateway.errors import StreamVerificationError

HELIUM = {"task_id": "0xabc", "nodes": ["n1", "n2"], "validation": "quorum 2/3"}


def _answer(*texts: str) -> dict:
    return {"model": "tiny", "choices": [
        {"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
        for i, t in enumerate(texts)], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}


def _feed(v: StreamVerifier, deltas: list[dict], node: str = "n1", start: int = 0) -> list[dict]:
    out = []
    for seq, d in enumerate(deltas, start):
        out += v.on_delta(node, seq, d)
    return out


def _text(chunks: list[dict], index: int = 0) -> str:
    return "".join(c["delta"].get("content") or "" for ch in chunks for c in ch["choices"] if c["index"] == index)


def test_honest_stream_finishes_after_validation_with_the_helium_field():
    answer = _answer("hello there, world")
    v = StreamVerifier(task_id="0xabc", model="tiny")
    sent = _feed(v, deltas_for(answer))
    assert _text(sent) == "hello there, world"
    assert all(c["finish_reason"] is None for ch in sent for c in ch["choices"])  # nothing final before validation
    assert sent[0]["choices"][0]["delta"]["role"] == "assistant"
    final = v.on_validated(answer, HELIUM, include_usage=True)
    assert _text(final) == ""  # nothing left to send
    assert final[-2]["choices"][0]["finish_reason"] == "stop" and final[-2]["helium"] == HELIUM
    assert final[-1]["usage"]["total_tokens"] == 3 and final[-1]["choices"] == []
    assert {ch["id"] for ch in sent + final} == {v.chunk_id}


def test_a_lying_streamer_ends_with_an_error_never_with_the_lie():
    answer = _answer("the validated answer")
    v = StreamVerifier(task_id="0xabc", model="tiny")
    sent = _feed(v, deltas_for(answer, lie=True))
    assert _text(sent).startswith("LIE")
    with pytest.raises(StreamVerificationError) as err:
        v.on_validated(answer, HELIUM)
    chunk = v.error_chunk(err.value)
    assert chunk["error"]["type"] == "verification_error" and chunk["error"]["task_id"] == "0xabc"


def test_a_slow_streamer_is_completed_with_the_majoritys_tokens():
    answer = _answer("a long validated answer")
    v = StreamVerifier(task_id="0xabc", model="tiny")
    deltas = deltas_for(answer)
    sent = _feed(v, deltas[:3])
    final = v.on_validated(answer, HELIUM)
    assert _text(sent) + _text(final) == "a long validated answer"


def test_no_deltas_at_all_sends_the_whole_validated_answer():
    answer = _answer("x", "y")
    v = StreamVerifier(task_id="0xabc", model="tiny")
    final = v.on_validated(answer, HELIUM)
    assert _text(final, 0) == "x" and _text(final, 1) == "y"
    assert final[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["finish_reason"] for c in final[-1]["choices"]] == ["stop", "stop"]


def test_other_nodes_duplicates_and_gaps_are_not_forwarded():
    answer = _answer("abcdefghijklmnop")
    deltas = deltas_for(answer)
    v = StreamVerifier(task_id="0xabc", model="tiny")
    sent = _feed(v, deltas[:2])
    assert v.streamer == "n1"
    assert _feed(v, deltas[2:3], node="n2", start=2) == []  # another node
    assert v.on_delta("n1", 1, deltas[1]) == []  # duplicate
    assert v.on_delta("n1", 5, deltas[5]) == []  # gap: frozen from here
    assert v.on_delta("n1", 2, deltas[2]) == []
    final = v.on_validated(answer, HELIUM)
    assert _text(sent) + _text(final) == "abcdefghijklmnop"


def test_a_watch_that_began_late_forwards_nothing_and_sends_the_validated_answer():
    answer = _answer("the whole validated answer")
    v = StreamVerifier(task_id="0xabc", model="tiny")
    assert _feed(v, deltas_for(answer)[3:], start=3) == []
    final = v.on_validated(answer, HELIUM)
    assert _text(final) == "the whole validated answer"


def test_n2_choices_are_checked_each():
    answer = _answer("first", "second")
    v = StreamVerifier(task_id="0xabc", model="tiny")
    sent = _feed(v, deltas_for(answer))
    assert _text(sent, 0) == "first" and _text(sent, 1) == "second"
    v.on_validated(answer, HELIUM)
    bad = StreamVerifier(task_id="0xabc", model="tiny")
    _feed(bad, deltas_for(_answer("first", "other")))
    with pytest.raises(StreamVerificationError):
        bad.on_validated(answer, HELIUM)


def test_a_streamed_choice_missing_from_the_validated_answer_fails():
    v = StreamVerifier(task_id="0xabc", model="tiny")
    _feed(v, deltas_for(_answer("a", "b")))
    with pytest.raises(StreamVerificationError):
        v.on_validated(_answer("a"), HELIUM)


def _tool_answer(args: str) -> dict:
    return {"model": "tiny", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c0", "type": "function", "function": {"name": "weather", "arguments": args}}]}}]}


def test_tool_calls_stream_and_verify():
    answer = _tool_answer('{"city": "Oslo"}')
    v = StreamVerifier(task_id="0xabc", model="tiny")
    sent = _feed(v, deltas_for(answer))
    calls = [tc for ch in sent for c in ch["choices"] for tc in c["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "weather"
    final = v.on_validated(answer, HELIUM)
    assert final[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # validated tool call never streamed: sent whole at the end
    v2 = StreamVerifier(task_id="0xabc", model="tiny")
    rest = v2.on_validated(answer, HELIUM)
    assert rest[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"city": "Oslo"}'
    # a streamed call with other arguments is refused
    v3 = StreamVerifier(task_id="0xabc", model="tiny")
    _feed(v3, deltas_for(_tool_answer('{"city": "Rome"}')))
    with pytest.raises(StreamVerificationError):
        v3.on_validated(answer, HELIUM)
