"""Bounded retries of transient RPC failures, and a send whose answer was lost (it landed once)."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from eth_account import Account

from chain.client import ChainClient
from chain.deploy import deploy_contracts
from chain.errors import ChainUnavailable, RpcRefused
from tests.unit.chain.conftest import HARDHAT_KEYS, TEST_DEPLOY, ChainEnv


def _flaky(env: ChainEnv, fail: dict[str, int], lose_answer: set[str] = frozenset()) -> dict[str, int]:
    """Makes the embedded provider fail `fail[method]` times per method (before executing), and lose the
    answer of the first call of each method in `lose_answer` (after executing). Returns call counts."""
    provider = env.w3.provider
    real = provider.make_request
    calls: dict[str, int] = {}

    async def make_request(method, params):
        calls[method] = calls.get(method, 0) + 1
        if fail.get(method, 0) > 0:
            fail[method] -= 1
            raise aiohttp.ClientConnectionError(f"{method}: connection reset")
        response = await real(method, params)
        if method in lose_answer:
            lose_answer.discard(method)
            raise aiohttp.ServerDisconnectedError()
        return response

    provider.make_request = make_request
    provider._request_func_cache = (None, None)
    return calls


async def test_transient_failures_are_retried_then_given_up(embedded_env: ChainEnv) -> None:
    client = embedded_env.client(rpc_attempts=3, rpc_timeout=timedelta(seconds=5))
    calls = _flaky(embedded_env, {"eth_call": 2})
    assert await client.min_stake() == TEST_DEPLOY.min_stake
    assert calls["eth_call"] == 3
    _flaky(embedded_env, {"eth_call": 10})
    with pytest.raises(ChainUnavailable):
        await client.min_stake()


async def test_a_send_whose_answer_was_lost_lands_once(embedded_env: ChainEnv) -> None:
    (node,) = await embedded_env.staked_nodes(1)
    client = embedded_env.client()
    nonce = await embedded_env.w3.eth.get_transaction_count(client.address)
    calls = _flaky(embedded_env, {}, lose_answer={"eth_sendRawTransaction"})
    sender = client.sender_for(None)  # the coordinator's key, as settle and kickOut use it
    tx = await sender.send(node.address, b"", gas=21_000, value=1)
    receipt = await client.wait_receipt(tx)
    assert receipt.status == 1 and calls["eth_sendRawTransaction"] == 2
    assert await embedded_env.w3.eth.get_transaction_count(client.address) == nonce + 1
    tx2 = await sender.send(node.address, b"", gas=21_000, value=2)  # the local nonce stayed right
    assert (await client.wait_receipt(tx2)).status == 1


async def test_connect_by_json_rpc_url(hardhat_url: str) -> None:
    from web3 import AsyncHTTPProvider, AsyncWeb3

    admin, coordinator = Account.from_key(HARDHAT_KEYS[0]), Account.from_key(HARDHAT_KEYS[1])
    w3 = AsyncWeb3(AsyncHTTPProvider(hardhat_url))
    addresses = await deploy_contracts(w3, admin, coordinator.address, TEST_DEPLOY)
    await w3.provider.disconnect()
    client = await ChainClient.connect(hardhat_url, coordinator, addresses)
    try:
        assert client.domain.chain_id == 31337 and client.domain.verifying_contract == addresses.ledger
        assert await client.min_stake() == TEST_DEPLOY.min_stake
        assert (await client.stats()).nodes == 0
    finally:
        await client.close()


async def test_a_refused_transaction_is_a_chain_error(chain_env: ChainEnv) -> None:
    broke = Account.create()
    with pytest.raises(RpcRefused):
        await chain_env.client(broke, preflight=False).deposit(broke, 10**18)
    # the sender's nonce is still usable afterwards
    await chain_env.client(chain_env.faucet).send_value(broke.address, 2 * 10**18)
    client = chain_env.client(broke)
    await client.deposit(broke, 10**18)
    assert await client.deposit_balance(broke.address) == 10**18
