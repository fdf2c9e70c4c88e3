"""The gateway's first gate: a request body is bounded in size and JSON nesting before anything parses it.

FastAPI parses a body (and pydantic walks it) before a route runs and before the API key is
checked, so the bound must sit in front of the router: a pure ASGI middleware. It reads the body
(refusing with 413 once it passes `max_bytes`, or at once when Content-Length says so), checks the
nesting depth and the UTF-8 of a JSON body with `helium.boundedjson` (400), and replays the bytes
to the app. Errors are OpenAI-shaped, like every other gateway error.
"""

from __future__ import annotations

import json

from helium.boundedjson import DEFAULT_MAX_DEPTH, JsonTooDeep, check_depth

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyLimitMiddleware"]

# A task's arguments are bounded at 1 MiB by default (coordinator.max_task_bytes); a chat body a few
# times that is refused here, before it is held in memory whole.
DEFAULT_MAX_BODY_BYTES = 4 << 20

# A body over the limit is still read, up to this many times the limit, before the 413 (and dropped).
_DRAIN_FACTOR = 4
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyLimitMiddleware:
    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY_BYTES, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length", b"").strip()
        too_large = f"request body is larger than {self.max_bytes} bytes"
        if length and not length.isdigit():
            await _refuse(send, 400, "invalid_content_length", "content-length is not a number")
            return
        if length and int(length) > self.max_bytes * _DRAIN_FACTOR:
            await _refuse(send, 413, "body_too_large", too_large)  # not worth reading: the connection closes
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_bytes:
                # Read (and drop) a little more so that an ordinary client, still sending, hears the 413.
                if not more or size > self.max_bytes * _DRAIN_FACTOR:
                    await _refuse(send, 413, "body_too_large", too_large)
                    return
                chunks.clear()
                continue
            chunks.append(chunk)
        body = b"".join(chunks)
        content_type = headers.get(b"content-type", b"").lower()
        if not content_type or b"json" in content_type:  # what FastAPI would hand to json.loads
            try:
                check_depth(body, self.max_depth, "request body")
            except JsonTooDeep as e:
                await _refuse(send, 400, "body_too_deep", str(e))
                return
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as e:
                await _refuse(send, 400, "invalid_json", f"request body is not valid UTF-8 (byte {e.start})")
                return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse(send, status: int, code: str, message: str) -> None:
    payload = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                    "code": code}}).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})
