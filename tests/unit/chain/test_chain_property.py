"""Property: over random deposits, settlements, slashes and withdrawals, the value each contract holds equals
the sum of its balances, to the wei, and every balance equals a Python model of the rules."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chain.deploy import ETHER
from chain.devchain import DevChain
from chain.errors import ContractRevert
from tests.unit.chain._builders import gpt_evidence, make_task

HOUR = 3600
ORDERS = [(1, 2, 3), (1, 3), (2, 3), (1, 2), (3, 2, 1)]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.integers(0, 1), st.integers(1, 3 * 10**18)),
        st.tuples(st.just("settle"), st.integers(0, 1), st.integers(0, 4 * 10**18), st.integers(0, len(ORDERS) - 1)),
        st.tuples(st.just("slash"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("withdraw_credit"), st.integers(0, 3)),
        st.tuples(st.just("withdraw_deposit"), st.integers(0, 1), st.integers(1, 4 * 10**18)),
        st.tuples(st.just("sweep")),
    ),
    min_size=1,
    max_size=7,
)


@pytest.fixture(scope="module")
def devchain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    dc = asyncio.run(DevChain.open(Path(tmp_path_factory.mktemp("prop")) / "chain"))
    yield dc
    asyncio.run(dc.close())


class Model:
    """The balances of one example's fresh accounts, and what the contracts held before it started."""

    def __init__(self, ledger: int, staking: int, treasury: int) -> None:
        self.deposits: dict[str, int] = {}
        self.credits: dict[str, int] = {}
        self.stakes: dict[str, int] = {}
        self.base_ledger = ledger
        self.base_staking = staking - treasury
        self.treasury = treasury


async def _run(dc: DevChain, steps: list[tuple]) -> None:
    coord = dc.client()
    a = coord.addresses
    model = Model(await coord.balance_of(a.ledger), await coord.balance_of(a.staking),
                  await coord.staking.functions.treasuryBalance().call())  # fmt: skip
    creators = [await _funded(dc, 20 * ETHER) for _ in range(2)]
    nodes = [Account.create() for _ in range(4)]
    for n in nodes:
        await dc.fund_and_stake(n)
        model.stakes[n.address] = 400 * ETHER
    await _check(dc, model)
    nonce = 0
    for step in steps:
        kind = step[0]
        if kind == "deposit":
            c = creators[step[1]]
            await dc.client(c).deposit(c, step[2])
            model.deposits[c.address] = model.deposits.get(c.address, 0) + step[2]
        elif kind == "settle":
            c, fee, orders = creators[step[1]], step[2], ORDERS[step[3]]
            live = [n for n in nodes if model.stakes[n.address] > 0]
            nonce += 1
            deadline = await coord.block_timestamp() + HOUR
            task = make_task(dc.domain, c, nonce, fee, deadline, nodes[: len(orders)], orders=orders)
            try:
                await coord.wait_receipt(await coord.settle([task]))
            except ContractRevert as exc:
                assert exc.error == "InsufficientDeposit" and fee > model.deposits.get(c.address, 0)
                continue
            assert fee <= model.deposits.get(c.address, 0) and live is not None
            model.deposits[c.address] = model.deposits.get(c.address, 0) - fee  # a fee of 0 settles too
            for addr, amount in task.shares().items():
                model.credits[addr] = model.credits.get(addr, 0) + amount
        elif kind == "slash":
            victim = nodes[step[1]]
            others = [n for n in nodes if n is not victim and model.stakes[n.address] > 0][:2]
            if model.stakes[victim.address] == 0 or len(others) < 2:
                continue
            ev = gpt_evidence(dc.domain, os.urandom(32), others, victim)
            await coord.wait_receipt(await (coord.settle([], [ev]) if step[2] else coord.slash(ev)))
            model.treasury += model.stakes[victim.address]
            model.stakes[victim.address] = 0
        elif kind == "withdraw_credit":
            n = nodes[step[1]]
            if model.credits.get(n.address, 0) == 0:
                with pytest.raises(ContractRevert):
                    await dc.client(n).withdraw_credit(n)
                continue
            await dc.client(n).withdraw_credit(n)
            model.credits[n.address] = 0
        elif kind == "withdraw_deposit":
            c, amount = creators[step[1]], step[2]
            have = model.deposits.get(c.address, 0)
            if amount > have:
                with pytest.raises(ContractRevert):
                    await dc.client(c).request_deposit_withdrawal(c, amount)
                continue
            await dc.client(c).request_deposit_withdrawal(c, amount)
            await coord.increase_time(HOUR + 1)
            await dc.client(c).withdraw_deposit(c)
            model.deposits[c.address] = have - amount
        else:
            await coord.transact("NodeStaking", "sweepTreasury")
            model.treasury = 0
        await _check(dc, model)


async def _funded(dc: DevChain, amount: int):
    a = Account.create()
    await dc.fund(a.address, amount)
    return a


async def _check(dc: DevChain, model: Model) -> None:
    c = dc.client()
    deposits = {a: await c.deposit_balance(a) for a in model.deposits}
    credits = {a: await c.credit_of(a) for a in model.credits}
    stakes = {a: await c.stake_of(a) for a in model.stakes}
    treasury = await c.staking.functions.treasuryBalance().call()
    assert deposits == model.deposits and credits == model.credits and stakes == model.stakes
    assert treasury == model.treasury
    # other accounts' balances do not move during this example, so the contracts' value moves with the sums
    assert await c.balance_of(c.addresses.ledger) == model.base_ledger + sum(deposits.values()) + sum(credits.values())
    assert await c.balance_of(c.addresses.staking) == model.base_staking + sum(stakes.values()) + treasury


@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture], database=None)  # fmt: skip
@given(steps=ops)
def test_contract_value_equals_sum_of_balances(devchain: DevChain, steps: list[tuple]) -> None:
    asyncio.run(_run(devchain, steps))
