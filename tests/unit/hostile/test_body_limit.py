"""The gateway's body gate on its own (issue #14 item 1): bodies streamed in chunks, lying or missing
Content-Length, and content types it leaves alone. The app behind it records what reached it."""

from __future__ import annotations

import json

import pytest

from coordinator.gateway._body_limit import BodyLimitMiddleware


async def _call(chunks: list[bytes], headers: dict[str, str], *, max_bytes: int = 100) -> tuple[int, dict, list]:
    reached: list[bytes] = []

    async def app(scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        reached.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions",
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    await BodyLimitMiddleware(app, max_bytes=max_bytes, max_depth=8)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body or b"{}"), reached


async def test_a_chunked_body_past_the_limit_is_413_and_never_reaches_the_app():
    status, body, reached = await _call([b"[" + b" " * 60, b" " * 60, b"]"], {"content-type": "application/json"})
    assert status == 413 and body["error"]["code"] == "body_too_large" and reached == []


@pytest.mark.parametrize(("length", "status", "code"), [("1000000", 413, "body_too_large"),
                                                        ("12abc", 400, "invalid_content_length")])
async def test_content_length_is_checked_before_reading(length, status, code):
    got, body, reached = await _call([b"{}"], {"content-type": "application/json", "content-length": length})
    assert (got, body["error"]["code"], reached) == (status, code, [])


async def test_deep_json_is_400_and_a_legal_body_is_replayed_whole():
    status, body, reached = await _call([b"[" * 9, b"]" * 9], {})  # no content type: FastAPI would parse it
    assert status == 400 and body["error"]["code"] == "body_too_deep" and reached == []
    status, _, reached = await _call([b'{"a": ', b'[[["[[[[[[[[[["]]]}'], {"content-type": "application/json"})
    assert status == 200 and reached == [b'{"a": [[["[[[[[[[[[["]]]}']


async def test_non_utf8_json_is_400_but_other_content_types_pass():
    status, body, _ = await _call([b'{"model": "\xff"}'], {"content-type": "application/json; charset=utf-8"})
    assert status == 400 and body["error"]["code"] == "invalid_json"
    status, _, reached = await _call([b"[" * 50 + b"\xff"], {"content-type": "application/octet-stream"})
    assert status == 200 and reached == [b"[" * 50 + b"\xff"]
