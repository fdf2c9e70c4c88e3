"""Server interceptors: log context, admin credential, and the ONE place where
errors become gRPC statuses.

A `CoordinatorError` (or a relay error carrying `.status`) becomes its status with
its message and a `helium-reason` trailing metadata entry; a request that does not
parse becomes INVALID_ARGUMENT. Anything else becomes
INTERNAL with a generic message; its traceback is logged, never sent.
"""

from __future__ import annotations

import hmac
import inspect

import grpc
import structlog
from grpc import aio

from coordinator.errors import CoordinatorError, InvalidArgument, PermissionDenied, Unauthenticated

__all__ = ["AdminAuthInterceptor", "ErrorInterceptor", "translate"]

log = structlog.get_logger("coordinator.api")


async def translate(exc: BaseException, context: aio.ServicerContext) -> None:
    """Aborts the RPC with the status `exc` maps to."""
    status = getattr(exc, "status", None)
    if isinstance(exc, CoordinatorError) or isinstance(status, grpc.StatusCode):
        reason = getattr(exc, "reason", "error")
        context.set_trailing_metadata((("helium-reason", reason),))
        await context.abort(status, str(exc))
    log.exception("rpc_internal_error", exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the coordinator log")


class _Undecodable:
    """What a request that does not parse (corrupt, too deep, bad UTF-8) becomes, so that the handler's
    wrapper refuses it with INVALID_ARGUMENT instead of gRPC answering UNKNOWN with the exception's class."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def refusal(self) -> InvalidArgument:
        detail = str(self.error).rsplit(": ", 1)[-1] or type(self.error).__name__
        return InvalidArgument(f"request: not a valid protobuf message ({detail})", "request")


def _tolerant(deserializer):
    if deserializer is None:
        return None

    def deserialize(data):
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, or a custom deserializer's error
            return _Undecodable(exc)

    return deserialize


async def _checked(requests):
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.refusal()
        yield request


def _wrap_unary(fn, rpc: str, durable, streaming: bool = False):
    async def handler(request, context):
        structlog.contextvars.bind_contextvars(rpc=rpc, peer=context.peer())
        try:
            if streaming:
                request = _checked(request)
            elif isinstance(request, _Undecodable):
                raise request.refusal()
            response = await fn(request, context)
            if durable is not None:
                await durable()  # what the answer reports is committed before the caller hears of it
            return response
        except aio.AbortError:
            raise
        except Exception as exc:
            await translate(exc, context)
        finally:
            structlog.contextvars.unbind_contextvars("rpc", "peer", "task_id", "node")

    return handler


def _wrap_stream(fn, rpc: str, streaming: bool = False):
    async def handler(request, context):
        structlog.contextvars.bind_contextvars(rpc=rpc, peer=context.peer())
        try:
            if streaming:
                request = _checked(request)
            elif isinstance(request, _Undecodable):
                raise request.refusal()
            result = fn(request, context)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result
        except aio.AbortError:
            raise
        except Exception as exc:
            await translate(exc, context)
        finally:
            structlog.contextvars.unbind_contextvars("rpc", "peer", "task_id", "node")

    return handler


class ErrorInterceptor(aio.ServerInterceptor):
    """`durable`: an async callable that returns once the store's writes are committed (group commit);
    every unary answer waits for it."""

    def __init__(self, durable=None) -> None:
        self.durable = durable

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(("/grpc.health", "/grpc.reflection")):
            return handler
        rpc = handler_call_details.method
        # The request is bounded in size (grpc.max_receive_message_length) and protobuf nesting (upb's depth
        # limit, 100) before it is parsed; what fails to parse is refused as INVALID_ARGUMENT.
        deserialize = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, rpc, self.durable), deserialize, handler.response_serializer
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, rpc), deserialize, handler.response_serializer
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, rpc, self.durable, True), deserialize, handler.response_serializer
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _wrap_stream(handler.stream_stream, rpc, True), deserialize, handler.response_serializer
            )
        return handler


class AdminAuthInterceptor(aio.ServerInterceptor):
    """Every `helium.v1.AdminService` call needs `authorization: Bearer <admin token>`."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith("/helium.v1.AdminService/"):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        ok = given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), self._token)
        if ok:
            return handler
        err = (Unauthenticated("authorization: missing admin credential") if not given
               else PermissionDenied("authorization: wrong admin credential"))  # fmt: skip

        async def deny(request, context):
            await translate(err, context)

        return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
