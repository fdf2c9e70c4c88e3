"""The ChainClient suite: every test runs on the embedded chain AND on a real Hardhat node process."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from chain.deploy import ETHER
from chain.errors import ChainTimeout, ContractRevert, SettlementRejected
from chain.models import TaskSettlement
from chain.signing import INVALID_ARGS_HASH
from tests.unit.chain._builders import gpt_evidence, make_task, sd_evidence
from tests.unit.chain.conftest import TEST_DEPLOY, ChainEnv

HOUR = 3600
FEE = 25 * 10**15


async def _creator(env: ChainEnv, deposit: int = 100 * ETHER):
    creator = await env.funded(deposit + 10 * ETHER)
    await env.client(creator).deposit(creator, deposit)
    return creator


async def test_stake_views_and_stats(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    nodes = await chain_env.staked_nodes(2)
    assert await client.min_stake() == TEST_DEPLOY.min_stake
    assert await client.stake_of(nodes[0].address) == TEST_DEPLOY.min_stake
    info = await client.node_info(nodes[1].address)
    assert info.active and not info.slashed and info.unlock_at == 0 and info.stake == TEST_DEPLOY.min_stake
    stats = await client.stats()
    assert (stats.nodes, stats.gpus) == (2, 2)  # one GPU per node (one key, one stream per GPU)
    with pytest.raises(ContractRevert) as err:
        await chain_env.client(nodes[0]).stake(nodes[0], 1)  # total above min is fine, but below-min joins are not
        fresh = await chain_env.funded(10 * ETHER)
        await chain_env.client(fresh).stake(fresh, ETHER)
    assert err.value.error == "StakeBelowMinimum"


async def test_unstake_then_withdraw_after_delay(chain_env: ChainEnv) -> None:
    (node,) = await chain_env.staked_nodes(1)
    nc = chain_env.client(node)
    await nc.request_unstake(node)
    assert (await nc.stats()).nodes == 0
    with pytest.raises(ContractRevert) as err:
        await nc.withdraw_stake(node)
    assert err.value.error == "UnstakeLocked"
    await nc.increase_time(HOUR + 1)
    before = await nc.balance_of(node.address)
    receipt = await nc.withdraw_stake(node)
    after = await nc.balance_of(node.address)
    assert 0 < before + TEST_DEPLOY.min_stake - after < ETHER // 100  # only gas was spent
    assert await nc.stake_of(node.address) == 0
    assert any(e.name == "Withdrawn" for e in receipt.events)


async def test_an_unstaking_node_stays_slashable_until_the_delay_ends(chain_env: ChainEnv) -> None:
    """The unstake delay, not a busy flag, keeps a stake in reach of evidence (NodeStaking's docstring)."""
    import os

    from tests.unit.chain._builders import gpt_evidence

    a, b, node = await chain_env.staked_nodes(3)
    client, nc = chain_env.client(), chain_env.client(node)
    await nc.request_unstake(node)
    assert (await client.node_info(node.address)).unlock_at > 0
    await client.wait_receipt(await client.slash(gpt_evidence(chain_env.domain, os.urandom(32), [a, b], node)))
    await nc.increase_time(HOUR + 1)
    with pytest.raises(ContractRevert) as err:
        await nc.withdraw_stake(node)
    assert err.value.error == "NodeIsSlashed"
    assert await nc.stake_of(node.address) == 0


async def test_deposit_and_delayed_withdrawal(chain_env: ChainEnv) -> None:
    creator = await _creator(chain_env, 50 * ETHER)
    cc = chain_env.client(creator)
    assert await cc.deposit_of(creator.address) == 50 * ETHER
    await cc.request_deposit_withdrawal(creator, 20 * ETHER)
    assert await cc.deposit_of(creator.address) == 30 * ETHER  # available to new tasks
    assert await cc.deposit_balance(creator.address) == 50 * ETHER
    with pytest.raises(ContractRevert) as err:
        await cc.withdraw_deposit(creator)
    assert err.value.error == "WithdrawalLocked"
    await cc.increase_time(HOUR + 1)
    await cc.withdraw_deposit(creator)
    assert await cc.deposit_balance(creator.address) == 30 * ETHER


async def test_settle_batch_of_100_then_withdraw_credits(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    nodes = await chain_env.staked_nodes(3)
    creator = await _creator(chain_env)
    deadline = await client.block_timestamp() + HOUR
    patterns = [(1, 2, 3), (1, 3), (2, 3), (3, 1, 2)]
    tasks = []
    for i in range(100):
        orders = patterns[i % len(patterns)]
        picked = [nodes[(i + k) % 3] for k in range(len(orders))]
        rh = INVALID_ARGS_HASH if i == 7 else os.urandom(32)  # an invalid-args verdict is paid the same way
        tasks.append(make_task(chain_env.domain, creator, i, FEE + i, deadline, picked, orders=orders, result_hash=rh))
    expected = {n.address: 0 for n in nodes}
    for t in tasks:
        shares = t.shares()
        assert sum(shares.values()) == t.fee
        for addr, amount in shares.items():
            expected[addr] += amount
    receipt = await client.wait_receipt(await client.settle(tasks))
    assert receipt.status == 1
    assert sum(e.name == "TaskSettled" for e in receipt.events) == 100
    assert {n.address: await client.credit_of(n.address) for n in nodes} == expected
    fees = sum(t.fee for t in tasks)
    assert await client.deposit_balance(creator.address) == 100 * ETHER - fees
    assert (await client.stats()).tasks_settled == 100
    # 10/9/6 of 25 -> 40/36/24 %
    assert tasks[0].shares() == {tasks[0].results[0].node: 10 * FEE // 25, tasks[0].results[1].node: 9 * FEE // 25,
                                 tasks[0].results[2].node: 6 * FEE // 25}  # fmt: skip
    # idempotency: a re-send drops what is settled; only new tasks go out
    assert await client.settle(tasks) is None
    unknown = os.urandom(32)
    assert await client.find_settled([tasks[0].task_id, tasks[99].task_id, unknown]) == {tasks[0].task_id, tasks[99].task_id}
    extra = make_task(chain_env.domain, creator, 100, FEE, deadline, nodes)
    receipt = await client.wait_receipt(await client.settle([*tasks[:5], extra]))
    assert sum(e.name == "TaskSettled" for e in receipt.events) == 1
    assert await client.is_settled(creator.address, 100)
    # pull payment
    nc = chain_env.client(nodes[0])
    before = await nc.balance_of(nodes[0].address)
    credit = await nc.credit_of(nodes[0].address)
    await nc.withdraw_credit(nodes[0])
    assert await nc.credit_of(nodes[0].address) == 0
    gained = await nc.balance_of(nodes[0].address) - before
    assert credit - ETHER // 100 < gained < credit


async def test_settle_rejection_names_the_task(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    nodes = await chain_env.staked_nodes(3)
    creator = await _creator(chain_env, ETHER)
    deadline = await client.block_timestamp() + HOUR
    good = make_task(chain_env.domain, creator, 1, FEE, deadline, nodes)
    too_big = make_task(chain_env.domain, creator, 2, 2 * ETHER, deadline, nodes)
    with pytest.raises(SettlementRejected) as err:
        await client.settle([good, too_big])
    assert err.value.error == "InsufficientDeposit" and err.value.task_id == too_big.task_id
    assert not await client.is_settled(creator.address, 1)
    await client.wait_receipt(await client.settle([good]))
    assert await client.is_settled(creator.address, 1)


async def test_slashes_gpt_in_settle_and_sd_alone(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    a, b, c, d = await chain_env.staked_nodes(4)
    creator = await _creator(chain_env)
    deadline = await client.block_timestamp() + HOUR
    task = make_task(chain_env.domain, creator, 1, FEE, deadline, [a, b], orders=(1, 2))
    evidence = gpt_evidence(chain_env.domain, task.task_id, [a, b], c)
    receipt = await client.wait_receipt(await client.settle([task], [evidence]))
    names = [e.name for e in receipt.events]
    assert "TaskSettled" in names and "Slashed" in names
    info = await client.node_info(c.address)
    assert info.slashed and info.stake == 0
    assert await client.settle([task], [evidence, evidence]) is None  # a re-send applies nothing twice
    sd = sd_evidence(chain_env.domain, os.urandom(32), [a, b, d],
                     [[0x0F0F_0000_FFFF_1234, 7], [0x0F0F_0000_FFFF_1235, 6], [0xF0F0_FFFF_0000_EDCB, 7]])  # fmt: skip
    await client.wait_receipt(await client.slash(sd))
    assert (await client.node_info(d.address)).slashed
    stats = await client.stats()
    assert (stats.slashes, stats.slashed_total, stats.nodes) == (2, 2 * TEST_DEPLOY.min_stake, 2)
    treasury = await client.staking.functions.treasuryBalance().call()
    assert treasury == 2 * TEST_DEPLOY.min_stake
    dc = chain_env.client(d)
    with pytest.raises(ContractRevert) as err:
        await dc.request_unstake(d)
    assert err.value.error == "NodeIsSlashed"


async def test_kick_out_returns_the_stake(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    (node,) = await chain_env.staked_nodes(1)
    before = await client.balance_of(node.address)
    receipt = await client.wait_receipt(await client.kick_out(node.address))
    assert await client.balance_of(node.address) == before + TEST_DEPLOY.min_stake
    assert await client.stake_of(node.address) == 0
    assert [e.args["amount"] for e in receipt.events if e.name == "KickedOut"] == [TEST_DEPLOY.min_stake]
    assert (await client.stats()).kick_outs == 1


async def test_concurrent_sends_share_one_nonce_sequence(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    nodes = await chain_env.staked_nodes(2)
    sender = client.sender_for(None)  # the coordinator's key, as settle and kickOut use it
    txs = await asyncio.gather(*(sender.send(nodes[i % 2].address, b"", gas=21_000, value=i + 1) for i in range(12)))
    receipts = await asyncio.gather(*(client.wait_receipt(t) for t in txs))
    assert len({r.tx_hash for r in receipts}) == 12 and all(r.status == 1 for r in receipts)


async def test_nonce_resync_after_another_sender_used_the_key(chain_env: ChainEnv) -> None:
    client, other = chain_env.client(), chain_env.client()
    (node,) = await chain_env.staked_nodes(1)
    before = await client.balance_of(node.address)
    await client.send_value(node.address, 1)
    await other.send_value(node.address, 2)  # client's local nonce is now stale
    receipt = await client.send_value(node.address, 4)
    assert receipt.status == 1 and await client.balance_of(node.address) == before + 7


async def test_receipt_wait_has_a_deadline(chain_env: ChainEnv) -> None:
    client = chain_env.client(poll_interval=__import__("datetime").timedelta(milliseconds=20))
    start = time.monotonic()
    with pytest.raises(ChainTimeout):
        await client.wait_receipt(os.urandom(32), timeout=0.3)
    assert time.monotonic() - start < 3


async def test_only_the_coordinator_settles(chain_env: ChainEnv) -> None:
    nodes = await chain_env.staked_nodes(3)
    creator = await _creator(chain_env)
    deadline = await chain_env.client().block_timestamp() + HOUR
    task = make_task(chain_env.domain, creator, 1, FEE, deadline, nodes)
    with pytest.raises(SettlementRejected) as err:
        await chain_env.client(creator).settle([task])
    assert err.value.error == "AccessControlUnauthorizedAccount"


async def test_events_since_deployment(chain_env: ChainEnv) -> None:
    client = chain_env.client()
    nodes = await chain_env.staked_nodes(3)
    creator = await _creator(chain_env)
    deadline = await client.block_timestamp() + HOUR
    task: TaskSettlement = make_task(chain_env.domain, creator, 9, FEE, deadline, nodes)
    await client.wait_receipt(await client.settle([task]))
    events = await client.events()
    names = [e.name for e in events]
    assert names.count("Staked") == 3 and "Deposited" in names and names.count("Paid") == 3
    settled = [e for e in events if e.name == "TaskSettled"]
    assert settled[0].args["taskId"] == task.task_id and settled[0].args["fee"] == FEE
    assert settled[0].contract == "TaskLedger"
