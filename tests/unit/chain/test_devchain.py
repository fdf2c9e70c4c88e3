"""The embedded chain keeps its whole state across a stop and a restart, and keeps mining."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from chain.deploy import ETHER
from chain.devchain import DevChain
from chain.errors import DevChainError
from tests.unit.chain._builders import make_task


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "chain"
    dc = await DevChain.open(data)
    client = dc.client()
    nodes = [Account.create() for _ in range(3)]
    for n in nodes:
        await dc.fund_and_stake(n)
    creator = dc.keys.creator

    async def snapshot(chain: DevChain) -> dict:
        """Everything that must survive a reopen."""
        c = chain.client()
        return {
            "addresses": chain.addresses,
            "keys": chain.keys.as_dict(),
            "block": await chain.w3.eth.block_number,
            "deposit": await c.deposit_balance(creator.address),
            "credits": [await c.credit_of(n.address) for n in nodes],
            "stakes": [await c.stake_of(n.address) for n in nodes],
            "eth": await c.balance_of(nodes[0].address),
            "stats": await c.stats(),
        }

    deadline = await client.block_timestamp() + 3600
    task = make_task(dc.domain, creator, 1, 10**16, deadline, nodes)
    await client.wait_receipt(await client.settle([task]))
    before = await snapshot(dc)
    with pytest.raises(DevChainError):
        await DevChain.open(data)  # one process at a time
    await dc.close()

    dc = await DevChain.open(data)
    client = dc.client()
    after = await snapshot(dc)
    assert after == before
    assert await client.is_settled(creator.address, 1)
    assert await client.settle([task]) is None
    # it keeps mining from its head: a new settlement lands in the next block
    task2 = make_task(dc.domain, creator, 2, 10**16, deadline, nodes)
    receipt = await client.wait_receipt(await client.settle([task2]))
    assert receipt.block_number == before["block"] + 1
    await dc.close()

    dc = await DevChain.open(data)
    assert await dc.client().is_settled(creator.address, 2)
    assert (await dc.client().stats()).tasks_settled == 2
    await dc.close()


async def test_fresh_chain_funds_dev_accounts(tmp_path: Path) -> None:
    async with await DevChain.open(tmp_path / "c") as dc:
        client = dc.client()
        assert dc.domain.chain_id == await dc.w3.eth.chain_id
        assert await client.deposit_of(dc.keys.creator.address) == 10_000 * ETHER
        assert await client.balance_of(dc.keys.coordinator.address) > 1000 * ETHER
        node = Account.create()
        await dc.fund_and_stake(node)
        assert await client.stake_of(node.address) == await client.min_stake() == 400 * ETHER
