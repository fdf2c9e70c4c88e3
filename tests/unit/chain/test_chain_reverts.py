"""Every revert path of the issue: each reverts (decoded by the preflight eth_call, and mined with status 0
when sent without preflight) and leaves every balance unchanged. Runs on both chains."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from chain.client import ChainClient
from chain.deploy import ETHER
from chain.errors import ContractRevert, TransactionReverted
from chain.models import Receipt, SlashEvidence
from chain.signing import Domain, compute_task_id, sign_result
from tests.unit.chain._builders import BAD, GOOD, gpt_evidence, make_task, sd_evidence
from tests.unit.chain.conftest import ChainEnv

HOUR = 3600
FEE = 10**16


@dataclass
class World:
    env: ChainEnv
    nodes: list[LocalAccount]
    creator: LocalAccount
    deadline: int
    client: ChainClient

    @property
    def domain(self) -> Domain:
        return self.env.domain

    def task(self, nonce: int = 1, **kw):
        kw.setdefault("nodes", self.nodes[:3])
        return make_task(self.domain, self.creator, nonce, kw.pop("fee", FEE), kw.pop("deadline", self.deadline), **kw)

    async def snapshot(self) -> tuple:
        """Contract balances, the treasury, every node's stake record and credit, the creator's deposit."""
        c = self.client
        return await asyncio.gather(
            c.balance_of(c.addresses.ledger),
            c.balance_of(c.addresses.staking),
            c.staking.functions.treasuryBalance().call(),
            c.deposit_balance(self.creator.address),
            *(c.node_info(n.address) for n in self.nodes),
            *(c.credit_of(n.address) for n in self.nodes),
        )


@pytest.fixture
async def world(chain_env: ChainEnv) -> World:
    nodes = await chain_env.staked_nodes(4)
    creator = await chain_env.funded(20 * ETHER)
    await chain_env.client(creator).deposit(creator, 10 * ETHER)
    deadline = await chain_env.client().block_timestamp() + HOUR
    return World(chain_env, nodes, creator, deadline, chain_env.client())


Call = Callable[[ChainClient], Awaitable[bytes | Receipt]]


async def assert_reverts(world: World, error: str, call: Call, key: LocalAccount | None = None) -> None:
    """`call` reverts with `error` in a preflight eth_call, and as a mined transaction; no balance moves."""
    before = await world.snapshot()
    with pytest.raises(ContractRevert) as err:
        await call(world.env.client(key))
    assert err.value.error == error, err.value
    with pytest.raises(TransactionReverted):
        client = world.env.client(key, preflight=False)
        out = await call(client)
        if isinstance(out, bytes):
            await client.wait_receipt(out)
    assert await world.snapshot() == before


def settle_raw(tasks: list[tuple], slashes: list[tuple] = ()) -> Call:
    """settle() straight to the contract, without the client's checks (already-settled filter, dataclasses)."""
    return lambda c: c.transact("TaskLedger", "settle", tasks, list(slashes), wait=False, gas=2_000_000)


def slash_raw(evidence: tuple) -> Call:
    return lambda c: c.transact("NodeStaking", "slash", evidence, wait=False, gas=2_000_000)


async def test_slash_without_evidence(world: World) -> None:
    await assert_reverts(world, "NoEvidence", slash_raw((os.urandom(32), 0, [])))
    await assert_reverts(world, "NoEvidence", settle_raw([], [(os.urandom(32), 0, [])]))


async def test_slash_where_the_slashed_node_agrees(world: World) -> None:
    a, b, c, _ = world.nodes
    tid = os.urandom(32)
    agreeing = gpt_evidence(world.domain, tid, [a, b], c, bad=GOOD)  # c signed the same hash
    await assert_reverts(world, "SlashedNodeAgrees", slash_raw(agreeing.as_abi()))
    named_twice = gpt_evidence(world.domain, tid, [a, b], a)  # the slashed node is one of the two matching
    await assert_reverts(world, "DuplicateNode", slash_raw(named_twice.as_abi()))
    split = gpt_evidence(world.domain, tid, [a, b], c)
    e = split.as_abi()
    e[2][1] = (b.address, BAD, [], *e[2][1][3:])  # majority no longer agrees (and b's signature is for GOOD)
    await assert_reverts(world, "BadResultSignature", slash_raw(e))


async def test_slash_with_a_forged_signature(world: World) -> None:
    a, b, c, _ = world.nodes
    tid = os.urandom(32)
    ev = gpt_evidence(world.domain, tid, [a, b], c)
    forged = sign_result(Account.create(), world.domain, tid, BAD)
    e = ev.as_abi()
    from chain.signing import compact_signature

    e[2][2] = (c.address, BAD, [], *compact_signature(forged))
    await assert_reverts(world, "BadResultSignature", slash_raw(e))


async def test_slash_by_unstaked_sybils(world: World) -> None:
    sybils = [Account.create(), Account.create()]
    ev = gpt_evidence(world.domain, os.urandom(32), sybils, world.nodes[0])
    await assert_reverts(world, "NotStaked", slash_raw(ev.as_abi()))


async def test_sd_slash_needs_a_real_disagreement(world: World) -> None:
    a, b, c, _ = world.nodes
    close = sd_evidence(world.domain, os.urandom(32), [a, b, c], [[0xFF00], [0xFF01], [0xFF0F]])  # c: distance 4 < 5
    await assert_reverts(world, "SlashedNodeAgrees", slash_raw(close.as_abi()))
    ev = sd_evidence(world.domain, os.urandom(32), [a, b, c], [[0xFF00], [0xFF01], [0x00FF]])
    e = ev.as_abi()
    e[2][2] = (c.address, e[2][2][1], [0xFF00], *e[2][2][3:])  # pHashes other than the ones c signed
    await assert_reverts(world, "BadResultSignature", slash_raw(e))


async def test_forged_creator_signature(world: World) -> None:
    task = world.task(creator_signer=Account.create())
    await assert_reverts(world, "BadCreatorSignature", settle_raw([task.as_abi()]))


async def test_signatures_for_another_domain(world: World) -> None:
    other_chain = Domain(chain_id=world.domain.chain_id + 1, verifying_contract=world.domain.verifying_contract)
    other_contract = Domain(chain_id=world.domain.chain_id, verifying_contract=world.env.addresses.staking)
    for d in (other_chain, other_contract):
        await assert_reverts(world, "BadCreatorSignature", settle_raw([world.task(creator_domain=d).as_abi()]))
        await assert_reverts(world, "BadResultSignature", settle_raw([world.task(result_domain=d).as_abi()]))
    ev = gpt_evidence(other_chain, os.urandom(32), world.nodes[:2], world.nodes[2])
    await assert_reverts(world, "BadResultSignature", slash_raw(ev.as_abi()))


async def test_settle_twice(world: World) -> None:
    task = world.task()
    client = world.env.client()
    await client.wait_receipt(await client.settle([task]))
    await assert_reverts(world, "AlreadySettled", settle_raw([task.as_abi()]))
    same_nonce = world.task(nonce=1)  # another task with a used creator nonce
    await assert_reverts(world, "AlreadySettled", settle_raw([same_nonce.as_abi()]))
    fresh = world.task(nonce=2)
    await assert_reverts(world, "AlreadySettled", settle_raw([fresh.as_abi(), fresh.as_abi()]))


async def test_settle_after_the_deadline(world: World) -> None:
    task = world.task(deadline=world.deadline)
    await world.env.client().increase_time(HOUR + 5)
    await assert_reverts(world, "DeadlinePassed", settle_raw([task.as_abi()]))


async def test_shares_are_the_contracts_and_bad_orders_revert(world: World) -> None:
    task = world.task().as_abi()
    results = task[9]

    def with_results(rs: list) -> tuple:
        return (*task[:9], rs, task[10])

    dup = [results[0], (results[1][0], 1, *results[1][2:])]  # two "first" results would pay 20/19
    await assert_reverts(world, "BadOrder", settle_raw([with_results(dup)]))
    await assert_reverts(world, "BadOrder", settle_raw([with_results([results[0], (results[1][0], 4, *results[1][2:])])]))
    await assert_reverts(world, "BadResultCount", settle_raw([with_results(results[:1])]))
    await assert_reverts(world, "DuplicateNode", settle_raw([with_results([results[0], (results[0][0], 2, *results[0][2:])])]))


async def test_fee_above_the_deposit(world: World) -> None:
    await assert_reverts(world, "InsufficientDeposit", settle_raw([world.task(fee=10 * ETHER + 1).as_abi()]))


async def test_task_id_not_bound_to_creator_nonce_args(world: World) -> None:
    t = world.task().as_abi()
    wrong = compute_task_id(world.creator.address, 99, t[2])
    await assert_reverts(world, "TaskIdMismatch", settle_raw([(wrong, *t[1:])]))


async def test_withdrawals_before_the_delay(world: World) -> None:
    node, creator = world.nodes[0], world.creator
    await world.env.client(node).request_unstake(node)
    await assert_reverts(world, "UnstakeLocked", lambda c: c.transact("NodeStaking", "withdraw", key=node, wait=False), key=node)
    await world.env.client(creator).request_deposit_withdrawal(creator, ETHER)
    await assert_reverts(
        world, "WithdrawalLocked", lambda c: c.transact("TaskLedger", "withdrawDeposit", key=creator, wait=False), key=creator
    )


async def test_only_the_coordinator(world: World) -> None:
    outsider = world.creator
    task = world.task()
    ev: SlashEvidence = gpt_evidence(world.domain, task.task_id, world.nodes[:2], world.nodes[2])
    await assert_reverts(world, "AccessControlUnauthorizedAccount", settle_raw([task.as_abi()]), key=outsider)
    await assert_reverts(world, "NotCoordinator", slash_raw(ev.as_abi()), key=outsider)
    kick = lambda c: c.transact("NodeStaking", "kickOut", world.nodes[0].address, wait=False)  # noqa: E731
    await assert_reverts(world, "AccessControlUnauthorizedAccount", kick, key=outsider)


async def test_slashed_node_cannot_withdraw(world: World) -> None:
    a, b, c, _ = world.nodes
    client = world.env.client()
    await world.env.client(c).request_unstake(c)
    await client.wait_receipt(await client.slash(gpt_evidence(world.domain, os.urandom(32), [a, b], c)))
    await client.increase_time(HOUR + 1)
    await assert_reverts(world, "NodeIsSlashed", lambda x: x.transact("NodeStaking", "withdraw", key=c, wait=False), key=c)
