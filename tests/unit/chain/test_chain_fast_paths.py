"""The fast paths give what the slow ones give: the inline EVM loop against py-evm's own (same gas, same
result, same revert), eth_abi calldata and event decoding against web3's, and a JSON-RPC receipt read as it
comes (the chain server's wire format) against web3's formatted receipt."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from eth.vm.computation import BaseComputation
from web3._utils.events import get_event_data

from chain._evm_fast import _ORIGINAL
from chain._tx import decode_event, encode_call, receipt_from_json
from chain.devchain import DevChain
from chain.server import _answer_sync
from tests.unit.chain._builders import make_task
from tests.unit.chain.conftest import TEST_DEPLOY, ChainEnv


async def _both_loops(provider, method: str, params: list) -> tuple[dict, dict]:
    fast = await provider.run(_answer_sync, provider, method, params)
    BaseComputation.apply_computation = _ORIGINAL["apply_computation"]
    try:
        slow = await provider.run(_answer_sync, provider, method, params)
    finally:
        BaseComputation.apply_computation = _ORIGINAL["fast_apply_computation"]
    return fast, slow


@pytest.fixture
async def pyevm_env(tmp_path) -> AsyncIterator[ChainEnv]:
    """The embedded chain on the py-evm backend (the one with the inline loop)."""
    dc = await DevChain.open(tmp_path / "devchain", deploy_settings=TEST_DEPLOY, evm="pyevm")
    try:
        yield ChainEnv("pyevm", dc.w3, dc.addresses, dc.chain_id, dc.keys.admin, dc.keys.coordinator, dc.keys.faucet)
    finally:
        await dc.close()


async def test_fast_paths_match_py_evm_and_web3(pyevm_env: ChainEnv) -> None:
    env = pyevm_env
    provider = env.w3.provider
    nodes = await env.staked_nodes(3)
    creator = await env.funded()
    client = env.client(preflight=False)
    await client.deposit(creator, 10**18)
    ts = await client.block_timestamp()
    items = [make_task(env.domain, creator, i, 2500 + i, ts + 3600, nodes) for i in range(3)]
    fn = client.ledger.functions.settle([t.as_abi() for t in items], [])
    data = encode_call(fn)
    assert data == bytes.fromhex(fn._encode_transaction_data()[2:])

    call = {"from": env.coordinator.address, "to": env.addresses.ledger, "data": "0x" + data.hex(), "gas": hex(5_000_000)}
    fast, slow = await _both_loops(provider, "eth_estimateGas", [call, "latest"])
    assert "result" in fast and fast == slow
    bad = make_task(env.domain, creator, 9, 2500, ts + 3600, nodes, creator_signer=nodes[0])  # not the creator's signature
    bad_call = {**call, "data": "0x" + encode_call(client.ledger.functions.settle([bad.as_abi()], [])).hex()}
    fast, slow = await _both_loops(provider, "eth_call", [bad_call, "latest"])
    assert fast.get("error", {}).get("code") == 3 and fast == slow, (fast, slow)

    tx = await client.settle(items)
    raw = await env.w3.eth.get_transaction_receipt(tx)
    assert raw["status"] == 1 and len(raw["logs"]) >= len(items)
    for lg in raw["logs"]:
        entry = client._events.get((lg["address"].lower(), bytes(lg["topics"][0])))
        if entry is None:
            continue
        expected = get_event_data(env.w3.codec, entry[1], lg)
        assert decode_event(env.w3.codec, entry[1], lg) == (expected["event"], dict(expected["args"]))

    wire = await provider.run(_answer_sync, provider, "eth_getTransactionReceipt", ["0x" + tx.hex()])
    got = receipt_from_json(wire["result"])
    for key in ("transactionHash", "blockHash", "blockNumber", "status", "gasUsed", "contractAddress"):
        assert got[key] == raw[key], key
    fields = ("address", "topics", "data", "blockNumber", "transactionHash", "logIndex")
    assert [[lg[f] for f in fields] for lg in got["logs"]] == [[lg[f] for f in fields] for lg in raw["logs"]]
