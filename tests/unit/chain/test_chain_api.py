"""The public face of chain/ that the coordinator and `helium dev` are wired to."""

from __future__ import annotations

import inspect

import chain.client
import chain.devchain
import chain.errors
import chain.models
import chain.signing


def test_public_names() -> None:
    assert chain.client.__all__ == ["ChainClient", "http_provider", "lean_web3"]
    assert chain.devchain.__all__ == ["DEFAULT_EVM", "DEV_CHAIN_ID", "EVMS", "DevChain", "DevKeys"]
    assert set(chain.errors.__all__) == {
        "ChainError", "ChainTimeout", "ChainUnavailable", "ContractRevert", "DevChainError", "InvalidChainInput",
        "RpcRefused", "SettlementRejected", "TransactionReverted",
    }  # fmt: skip
    assert {"SignedResult", "TaskSettlement", "SlashEvidence", "EvidenceResult", "SlashKind", "ClientSettings",
            "ContractAddresses"} <= set(chain.models.__all__)  # fmt: skip
    assert {"INVALID_ARGS_HASH", "sd_result_hash", "task_digest", "result_digest", "compact_signature"} <= set(
        chain.signing.__all__
    )


def test_every_error_has_one_root_and_a_status() -> None:
    for name in chain.errors.__all__:
        cls = getattr(chain.errors, name)
        assert issubclass(cls, chain.errors.ChainError) and cls.status is not None


def test_client_surface() -> None:
    methods = {n for n, _ in inspect.getmembers(chain.client.ChainClient, inspect.iscoroutinefunction)}
    assert {
        "stake_of", "min_stake", "deposit_of", "credit_of", "settle", "wait_receipt", "is_settled", "settled_flags",
        "find_settled", "kick_out", "slash", "stats", "events", "deposit", "stake", "withdraw_credit",
        "withdraw_stake", "withdraw_deposit", "request_unstake", "request_deposit_withdrawal", "connect", "create",
    } <= methods  # fmt: skip
