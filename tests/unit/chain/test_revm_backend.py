"""The revm backend against the py-evm one: the same transactions (same keys, same calldata) give the same
gas, status, logs, balances and contract state on both; its state survives a reopen; its JSON-RPC answers
what web3 and the client read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account

from chain.deploy import ETHER
from chain.devchain import DevChain, DevKeys
from chain.errors import ContractRevert
from chain.models import ClientSettings
from tests.unit.chain._builders import gpt_evidence, make_sd_task, make_task
from tests.unit.chain.conftest import TEST_DEPLOY

KEYS = DevKeys(*(Account.from_key(bytes([i]) * 32) for i in (1, 2, 3, 4)))
NODES = [Account.from_key(bytes([10 + i]) * 32) for i in range(4)]
DEADLINE = 4_000_000_000  # fixed: the calldata must be the same on both chains


async def _open(root: Path, evm: str) -> DevChain:
    """A new chain on `evm` with fixed dev keys, so both backends deploy at the same addresses."""
    data = root / evm
    data.mkdir(parents=True)
    meta = {"chain_id": 1337, "keys": KEYS.as_dict(), "addresses": None, "evm": evm}
    (data / "devchain.json").write_text(json.dumps(meta))
    return await DevChain.open(data, deploy_settings=TEST_DEPLOY)


async def _script(dc: DevChain) -> dict:
    """The same calls on either backend; returns what must match: every block's receipt, and state."""
    client = dc.client(settings=ClientSettings(preflight=False))
    for n in NODES[:3]:
        await dc.fund_and_stake(n)
    await dc.fund(NODES[3].address, ETHER)
    creator = dc.keys.creator
    tasks = [make_task(dc.domain, creator, i, 10**15 + i, DEADLINE, NODES[:3 - i % 2], args_hash=bytes([i]) * 32)
             for i in range(1, 31)]  # fmt: skip
    await client.wait_receipt(await client.settle(tasks[:10]))
    await client.wait_receipt(await client.settle(tasks[10:]))
    lone = dc.client(NODES[3]).sender_for(None)  # withdraw() with no unstake request: reverts, status 0
    await lone.wait(await lone.send(dc.addresses.staking, bytes.fromhex("3ccfd60b"), gas=100_000), 10)
    sd = make_sd_task(dc.domain, creator, 40, 10**15, DEADLINE, NODES[:2], [[1, 2], [1, 3]], args_hash=b"\x28" * 32)
    await client.wait_receipt(await client.settle([sd]))
    ev = gpt_evidence(dc.domain, tasks[0].task_id, NODES[:2], NODES[2])
    await client.wait_receipt(await client.slash(ev))
    await client.wait_receipt(await client.kick_out(NODES[1].address))
    node = dc.client(NODES[0])
    await node.withdraw_credit(NODES[0])
    await dc.client(NODES[3]).send_value(NODES[2].address, 12345)  # a plain transfer
    receipts = []
    for number in range(1, await dc.w3.eth.block_number + 1):
        block = await dc.w3.eth.get_block(number)
        for tx in block["transactions"]:
            r = await dc.w3.eth.get_transaction_receipt(tx)
            receipts.append((r["status"], r["gasUsed"], r["effectiveGasPrice"], r["contractAddress"],
                             [(lg["address"], lg["topics"], lg["data"]) for lg in r["logs"]]))  # fmt: skip
    return {
        "receipts": receipts,
        "balances": [await dc.w3.eth.get_balance(a.address) for a in (*NODES, creator, dc.keys.coordinator)],
        "nonces": [await dc.w3.eth.get_transaction_count(a.address) for a in (*NODES, dc.keys.coordinator)],
        "credits": [await client.credit_of(n.address) for n in NODES],
        "stakes": [await client.stake_of(n.address) for n in NODES],
        "deposit": await client.deposit_balance(creator.address),
        "stats": await client.stats(),
        "settled": [await client.is_settled(creator.address, i) for i in (1, 30, 40, 41)],
        "addresses": dc.addresses,
        "events": [(e.contract, e.name, e.args, e.block_number, e.log_index) for e in await client.events()],
        "found": await client.find_settled([t.task_id for t in tasks[::7]] + [b"\x00" * 32]),
    }


async def test_same_calls_same_gas_and_state_as_py_evm(tmp_path: Path) -> None:
    out = {}
    for evm in ("pyevm", "revm"):
        dc = await _open(tmp_path, evm)
        try:
            out[evm] = await _script(dc)
        finally:
            await dc.close()
    py, rv = out["pyevm"], out["revm"]
    assert len(rv["receipts"]) == len(py["receipts"]) > 20
    for i, (a, b) in enumerate(zip(py["receipts"], rv["receipts"], strict=True)):
        assert a == b, (i, a, b)
    assert [r[0] for r in rv["receipts"]].count(0) == 1  # the withdraw()
    assert rv == py


async def test_state_survives_reopen_and_reverts_decode(tmp_path: Path) -> None:
    dc = await DevChain.open(tmp_path / "c", deploy_settings=TEST_DEPLOY)
    client = dc.client()
    for n in NODES[:2]:
        await dc.fund_and_stake(n)
    creator = dc.keys.creator
    task = make_task(dc.domain, creator, 1, 10**15, DEADLINE, NODES[:2], creator_signer=NODES[0])
    with pytest.raises(ContractRevert) as err:  # not the creator's signature: the preflight reverts, decoded
        await client.settle([task])
    assert err.value.error
    head = await dc.w3.eth.block_number
    credit = await client.credit_of(NODES[0].address)
    await dc.increase_time(7200)
    ts = (await dc.w3.eth.get_block("latest"))["timestamp"]
    await dc.close()
    dc = await DevChain.open(tmp_path / "c")
    assert (await dc.w3.eth.get_block("pending"))["number"] == head
    assert await dc.client().credit_of(NODES[0].address) == credit
    assert (await dc.client().stake_of(NODES[0].address)) == TEST_DEPLOY.min_stake
    await dc.fund(NODES[1].address, 1)
    block = await dc.w3.eth.get_block("latest")
    assert block["number"] == head + 1 and block["timestamp"] >= ts + 7200  # the time travel was kept
    await dc.close()


async def test_rpc_surface(tmp_path: Path) -> None:
    async with await DevChain.open(tmp_path / "c", deploy_settings=TEST_DEPLOY) as dc:
        w3 = dc.w3
        rec = await dc.fund(NODES[0].address, 5)
        tx = await w3.eth.get_transaction(rec.tx_hash)
        assert tx["from"] == dc.keys.faucet.address and tx["value"] == 5 and tx["blockNumber"] == rec.block_number
        assert (await w3.eth.get_block(rec.block_number, full_transactions=True))["transactions"][0]["hash"] == tx["hash"]
        assert await w3.eth.get_code(dc.addresses.ledger) != b""
        assert await w3.eth.chain_id == 1337 and await w3.eth.accounts == [dc.keys.faucet.address]
        events = await dc.client().events()
        assert any(e.name == "Deposited" for e in events) or events
        gas = await w3.eth.estimate_gas({"from": dc.keys.faucet.address, "to": NODES[1].address, "value": 1})
        assert gas == 21_000
        answer = await w3.provider.make_request("eth_sendRawTransaction", ["0x" + "00" * 10])
        assert answer["error"]["code"] == -32000
        answer = await w3.provider.make_request("eth_nope", [])
        assert answer["error"]["code"] == -32601


async def test_spawned_chain_survives_kill_9(tmp_path: Path) -> None:
    """Every answered transaction is on disk: a kill -9 of the chain child loses none of them."""
    dc = await DevChain.spawn(tmp_path / "c")
    try:
        assert (tmp_path / "c" / "chain.sqlite").exists() and not (tmp_path / "c" / "evm.sqlite").exists()
        for n in NODES[:2]:
            await dc.fund_and_stake(n)
        client = dc.client()
        task = make_task(dc.domain, dc.keys.creator, 1, 10**15, DEADLINE, NODES[:2])
        receipt = await client.wait_receipt(await client.settle([task]))
        before = (await dc.w3.eth.block_number, await client.credit_of(NODES[0].address),
                  await dc.w3.eth.get_balance(NODES[1].address), await client.stats())  # fmt: skip
        dc.server.kill()
        assert await dc.server.proc.wait() == -9
        await dc.server.start()
        after = (await dc.w3.eth.block_number, await client.credit_of(NODES[0].address),
                 await dc.w3.eth.get_balance(NODES[1].address), await client.stats())  # fmt: skip
        assert after == before and await client.is_settled(dc.keys.creator.address, 1)
        again = await dc.w3.eth.get_transaction_receipt(receipt.tx_hash)
        assert again["blockNumber"] == receipt.block_number and len(again["logs"]) == len(receipt.events)
        task2 = make_task(dc.domain, dc.keys.creator, 2, 10**15, DEADLINE, NODES[:2])
        assert (await client.wait_receipt(await client.settle([task2]))).block_number == before[0] + 1
    finally:
        await dc.close()


async def test_logs_bloom_is_a_real_nodes(tmp_path: Path) -> None:
    from eth_bloom import BloomFilter

    async with await DevChain.open(tmp_path / "c", deploy_settings=TEST_DEPLOY) as dc:
        rec = await dc.fund_and_stake(NODES[0])
        raw = await dc.w3.eth.get_transaction_receipt(rec.tx_hash)
        bloom = BloomFilter()
        for lg in raw["logs"]:
            bloom.add(bytes(lg["address"] if isinstance(lg["address"], bytes) else bytes.fromhex(lg["address"][2:])))
            for t in lg["topics"]:
                bloom.add(bytes(t))
        assert raw["logs"] and int.from_bytes(bytes(raw["logsBloom"]), "big") == int(bloom)


async def test_a_block_that_fails_to_commit_leaves_no_trace(tmp_path: Path) -> None:
    async with await DevChain.open(tmp_path / "c", deploy_settings=TEST_DEPLOY) as dc:
        chain = dc.provider.node.chain
        head = await dc.w3.eth.block_number
        real = chain.store.commit_block

        def full_disk(*args, **kwargs):
            raise OSError("disk full")

        chain.store.commit_block = full_disk
        with pytest.raises(Exception, match="disk full"):
            await dc.fund(NODES[0].address, 7)
        chain.store.commit_block = real
        assert await dc.w3.eth.get_balance(NODES[0].address) == 0 and await dc.w3.eth.block_number == head
        dc._faucet = None  # its local nonce counted the lost transaction
        await dc.fund(NODES[0].address, 7)
        assert await dc.w3.eth.get_balance(NODES[0].address) == 7 and await dc.w3.eth.block_number == head + 1
