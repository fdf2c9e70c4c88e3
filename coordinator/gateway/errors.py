"""Gateway errors, and the one map from coordinator gRPC statuses to HTTP.

Every class carries the HTTP status and the OpenAI error `type`/`code` it is
answered with (`{"error": {"message", "type", "param", "code"}}`).

    GatewayError                   500 server_error         root; anything unexpected
    ├── InvalidRequestError        400 invalid_request_error  a bad parameter; `param` names it
    ├── AuthenticationError        401 invalid_api_key      missing, unknown or revoked API key
    ├── PaymentRequiredError       402 insufficient_quota   deposit or the key's spending limit cannot cover the fee
    ├── PermissionDeniedError      403 invalid_signature    an image URL without a valid, unexpired signature
    ├── NotFoundError              404 not_found            unknown task (or another key's), model_not_found
    ├── RateLimitError             429 rate_limit_exceeded  the key's rate limit, or the coordinator's queue is full
    ├── TaskFailedError            502 task_failed          the task was aborted (no quorum, invalid args by majority)
    ├── NotImplementedFeatureError 501 not_implemented      a route whose task type is not served yet
    ├── ServiceUnavailableError    503 service_unavailable  no node can serve the model, coordinator unreachable
    ├── GatewayTimeoutError        504 timeout              no validated answer before the request timeout
    └── StreamVerificationError    (SSE error event)        streamed tokens are not the validated answer

`error_from_rpc` is the only place that reads a coordinator status (and its
`helium-reason` trailing metadata) and decides the HTTP answer.
"""

from __future__ import annotations

from typing import Any

import grpc

__all__ = [
    "AuthenticationError",
    "GatewayError",
    "GatewayTimeoutError",
    "InvalidRequestError",
    "NotFoundError",
    "NotImplementedFeatureError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServiceUnavailableError",
    "StreamVerificationError",
    "TaskFailedError",
    "error_from_rpc",
]


class GatewayError(Exception):
    """Root of every gateway error."""

    status: int = 500
    type: str = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(GatewayError):
    status, type, code = 400, "invalid_request_error", "invalid_value"


class AuthenticationError(GatewayError):
    status, type, code = 401, "invalid_request_error", "invalid_api_key"


class PaymentRequiredError(GatewayError):
    status, type, code = 402, "insufficient_quota", "insufficient_deposit"


class PermissionDeniedError(GatewayError):
    status, type, code = 403, "invalid_request_error", "invalid_signature"


class NotFoundError(GatewayError):
    status, type, code = 404, "invalid_request_error", "not_found"


class RateLimitError(GatewayError):
    status, type, code = 429, "rate_limit_exceeded", "rate_limit_exceeded"


class NotImplementedFeatureError(GatewayError):
    status, type, code = 501, "invalid_request_error", "not_implemented"


class TaskFailedError(GatewayError):
    status, type, code = 502, "server_error", "task_aborted"


class ServiceUnavailableError(GatewayError):
    status, type, code = 503, "service_unavailable", "no_capable_nodes"


class GatewayTimeoutError(GatewayError):
    status, type, code = 504, "server_error", "timeout"


class StreamVerificationError(GatewayError):
    status, type, code = 502, "verification_error", "stream_not_validated"


# helium-reason -> (error class, OpenAI code). Reasons the coordinator documents; anything else falls
# back on the gRPC status code below.
_REASONS: dict[str, tuple[type[GatewayError], str]] = {
    "invalid_args": (InvalidRequestError, "invalid_value"),
    "bad_signature": (ServiceUnavailableError, "gateway_signature_rejected"),
    "insufficient_deposit": (PaymentRequiredError, "insufficient_deposit"),
    "no_capable_nodes": (ServiceUnavailableError, "no_capable_nodes"),
    "queue_full": (RateLimitError, "queue_full"),
    "not_found": (NotFoundError, "not_found"),
    "wrong_state": (InvalidRequestError, "wrong_state"),
    "permission_denied": (ServiceUnavailableError, "coordinator_permission_denied"),
}

_CODES: dict[grpc.StatusCode, tuple[type[GatewayError], str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (InvalidRequestError, "invalid_value"),
    grpc.StatusCode.NOT_FOUND: (NotFoundError, "not_found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (RateLimitError, "queue_full"),
    grpc.StatusCode.FAILED_PRECONDITION: (ServiceUnavailableError, "no_capable_nodes"),
    grpc.StatusCode.UNAVAILABLE: (ServiceUnavailableError, "coordinator_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (GatewayTimeoutError, "coordinator_timeout"),
    # The gateway's own signature or admin token was refused: the operator must fix it, not the user.
    grpc.StatusCode.UNAUTHENTICATED: (ServiceUnavailableError, "gateway_signature_rejected"),
    grpc.StatusCode.PERMISSION_DENIED: (ServiceUnavailableError, "coordinator_permission_denied"),
}


def _reason_of(exc: grpc.RpcError) -> str:
    try:
        for key, value in exc.trailing_metadata() or ():
            if key == "helium-reason":
                return value.decode() if isinstance(value, bytes) else str(value)
    except Exception:  # an error raised before any metadata arrived has none
        return ""
    return ""


def _param_of(message: str) -> str | None:
    # Coordinator messages name the field first: "generation_config.top_p must be in (0, 1], got 1.5"
    # or "messages[0].role: ...". Strip a leading "gpt." (the TaskArgs oneof) so it names the request field.
    head = message.split(" ", 1)[0].rstrip(":")
    if not head or not any(ch.isalpha() for ch in head) or "=" in head:
        return None
    from coordinator.gateway._mapping import request_param_of  # the mapping imports this module

    return request_param_of(head)


def error_from_rpc(exc: grpc.RpcError) -> GatewayError:
    """Translates a failed coordinator RPC into the gateway error the HTTP client sees."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(code)
    reason = _reason_of(exc)
    cls, oa_code = _REASONS.get(reason) or _CODES.get(code) or (GatewayError, "internal_error")
    param = _param_of(details) if cls is InvalidRequestError else None
    if cls is RateLimitError:
        return cls(f"coordinator queue is full: {details}", code=oa_code, headers={"retry-after": "1"})
    return cls(details, code=oa_code, param=param)
