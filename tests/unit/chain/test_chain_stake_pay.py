"""TaskLedger pays only staked, unslashed nodes (issue: "TaskLedger pays any result signer"). A coordinator
that signs results with keys of its own gets nothing for them, and the creator is charged only what staked
nodes earned. Runs on both chains (the embedded revm chain and a real Hardhat node)."""

from __future__ import annotations

import os

from eth_account import Account

from chain.deploy import ETHER
from tests.unit.chain._builders import gpt_evidence, make_task
from tests.unit.chain.conftest import ChainEnv

FEE = 10**16


async def _world(env: ChainEnv):
    nodes = await env.staked_nodes(3)
    creator = await env.funded(20 * ETHER)
    await env.client(creator).deposit(creator, 10 * ETHER)
    deadline = await env.client().block_timestamp() + 3600
    return nodes, creator, deadline


async def _settle(env: ChainEnv, tasks) -> dict:
    client = env.client()
    receipt = await client.wait_receipt(await client.settle(tasks))
    assert receipt.status == 1
    return receipt


async def test_unstaked_signers_are_not_paid_and_the_creator_keeps_their_share(chain_env: ChainEnv) -> None:
    env = chain_env
    (a, b, _), creator, deadline = await _world(env)
    sybils = [Account.create(), Account.create()]  # keys the coordinator holds, with no stake
    client = env.client()
    deposit = await client.deposit_balance(creator.address)
    # Orders 1, 2, 3 -> scores 10, 9, 6 of 25: a staked node first, then two unstaked keys.
    await _settle(env, [make_task(env.domain, creator, 1, FEE, deadline, [a, *sybils])])
    assert [await client.credit_of(s.address) for s in sybils] == [0, 0]
    paid = FEE * 10 // 25 + (FEE - (FEE * 10 // 25 + FEE * 9 // 25 + FEE * 6 // 25))  # the remainder: lowest order
    assert await client.credit_of(a.address) == paid
    assert await client.deposit_balance(creator.address) == deposit - paid
    # Only unstaked keys: nothing paid, nothing charged, and the nonce is spent (it cannot be settled again).
    await _settle(env, [make_task(env.domain, creator, 2, FEE, deadline, sybils)])
    assert await client.deposit_balance(creator.address) == deposit - paid
    assert (await client.settled_flags([make_task(env.domain, creator, 2, FEE, deadline, sybils)])) == [True]
    assert await client.credit_of(b.address) == 0


async def test_a_slashed_node_is_not_paid_and_the_batch_still_lands(chain_env: ChainEnv) -> None:
    env = chain_env
    (a, b, c), creator, deadline = await _world(env)
    client = env.client()
    await client.wait_receipt(await client.slash(gpt_evidence(env.domain, os.urandom(32), [a, b], c)))
    deposit = await client.deposit_balance(creator.address)
    # c's result was matched before it was slashed elsewhere: the batch lands, a and b are paid, c is not.
    await _settle(env, [make_task(env.domain, creator, 1, FEE, deadline, [c, a, b])])
    assert await client.credit_of(c.address) == 0
    credits = [await client.credit_of(n.address) for n in (a, b)]
    assert credits == [FEE * 9 // 25, FEE * 6 // 25]
    assert await client.deposit_balance(creator.address) == deposit - sum(credits)
    assert await client.staking.functions.isPayable(c.address).call() is False
    assert await client.staking.functions.isPayable(a.address).call() is True


async def test_a_kicked_out_node_is_paid_for_work_that_settles_within_the_unstake_delay(chain_env: ChainEnv) -> None:
    env = chain_env
    (a, b, c), creator, deadline = await _world(env)
    client = env.client()
    await client.wait_receipt(await client.kick_out(c.address))  # stake returned: not a punishment
    assert (await client.node_info(c.address)).left_at > 0
    await _settle(env, [make_task(env.domain, creator, 1, FEE, deadline, [a, b, c])])
    assert await client.credit_of(c.address) == FEE * 6 // 25
    await client.increase_time(3600 + 5)  # past the unstake delay: a late result of c is no longer paid
    await _settle(env, [make_task(env.domain, creator, 2, FEE, deadline + 7200, [a, b, c])])
    assert await client.credit_of(c.address) == FEE * 6 // 25


async def test_a_node_that_asked_to_unstake_may_not_join(embedded_env: ChainEnv) -> None:
    import pytest

    from coordinator.errors import NotStaked
    from coordinator.service.chain_parts import ChainStakes, ChainTuning

    env = embedded_env
    (node,) = await env.staked_nodes(1)
    stakes = ChainStakes(env.client(), ChainTuning())
    await stakes.check(node.address)  # staked, no unstake pending: joins
    await env.client(node).request_unstake(node)
    with pytest.raises(NotStaked, match="unstak"):
        await stakes.check(node.address)
    await env.client(node).stake(node, ETHER // 2)  # staking again cancels the request
    await stakes.check(node.address)
    with pytest.raises(NotStaked, match="without stake"):
        await stakes.check(Account.create().address)
