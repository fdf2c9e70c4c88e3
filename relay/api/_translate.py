"""The one place relay errors become gRPC statuses on the server side."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import grpc
import structlog

from relay.errors import status_of

__all__ = ["translate_errors"]

log = structlog.get_logger("relay.api")


async def _abort(context: grpc.aio.ServicerContext, exc: Exception, rpc: str) -> None:
    code, message = status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("relay_internal_error", rpc=rpc, peer=context.peer())
    else:
        log.info("relay_request_refused", rpc=rpc, peer=context.peer(), code=code.name, error=message)
        context.set_trailing_metadata((("helium-reason", getattr(exc, "reason", "relay_error")),))
    await context.abort(code, message)


def translate_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a grpc.aio servicer method (unary or server-streaming) so a RelayError aborts the call
    with its status and message; anything else is INTERNAL, its traceback logged and never sent."""
    rpc = fn.__name__
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def streaming(self, request, context):
            try:
                async for item in fn(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await _abort(context, exc, rpc)

        return streaming

    @functools.wraps(fn)
    async def unary(self, request, context):
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort(context, exc, rpc)

    return unary
