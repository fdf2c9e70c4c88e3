"""Errors of the chain package. Each carries the gRPC status a servicer maps it to.

```
ChainError                      the root: anything the chain client or the dev chain raises
├── ChainUnavailable            the RPC endpoint failed after bounded retries (UNAVAILABLE, retryable)
├── ChainTimeout                a receipt or an RPC did not come back before its deadline (DEADLINE_EXCEEDED, retryable)
├── InvalidChainInput           a batch item or argument is malformed before anything is sent (INVALID_ARGUMENT)
├── RpcRefused                  the endpoint answered a JSON-RPC error that is not a revert: a transaction
│                               refused (funds, fee, nonce after one resync), a bad request (FAILED_PRECONDITION)
├── ContractRevert              a call reverted (preflight eth_call, or a mined transaction with status 0);
│   │                           carries the decoded custom error: `error` (name) and `args` (dict)
│   ├── SettlementRejected      a settle batch reverted on one item: `task_id` (and `node`) name it
│   └── TransactionReverted     a transaction was mined but reverted: `tx_hash`
└── DevChainError               the embedded chain's data directory is unusable (INTERNAL)
```
"""

from __future__ import annotations

from typing import Any

import grpc

__all__ = [
    "ChainError",
    "ChainTimeout",
    "ChainUnavailable",
    "ContractRevert",
    "DevChainError",
    "InvalidChainInput",
    "RpcRefused",
    "SettlementRejected",
    "TransactionReverted",
]


class ChainError(Exception):
    """Root of every error of the chain package."""

    status = grpc.StatusCode.INTERNAL
    retryable = False


class ChainUnavailable(ChainError):
    status = grpc.StatusCode.UNAVAILABLE
    retryable = True


class ChainTimeout(ChainError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED
    retryable = True


class InvalidChainInput(ChainError, ValueError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class RpcRefused(ChainError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class ContractRevert(ChainError):
    """A contract call reverted with a decoded custom error (`error` is its name, or "" when unknown)."""

    status = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, *, error: str = "", args: dict[str, Any] | None = None, data: bytes = b"") -> None:
        super().__init__(message)
        self.error = error
        self.args_dict = dict(args or {})
        self.data = data


class SettlementRejected(ContractRevert):
    """A settlement batch was refused because of one item: `task_id` (of a task or of slash evidence) and
    `node`, each None when the contract's error does not name it."""

    def __init__(self, message: str, *, task_id: bytes | None, node: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.task_id = task_id
        self.node = node


class TransactionReverted(ContractRevert):
    def __init__(self, message: str, *, tx_hash: bytes, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.tx_hash = tx_hash


class DevChainError(ChainError):
    status = grpc.StatusCode.INTERNAL
