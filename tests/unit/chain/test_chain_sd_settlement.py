"""SD settlement by pHash: results that differ by a few bits settle and pay 40/36/24; results beyond the
threshold, forged pHash lists and malformed lists revert with a named error and move nothing."""

from __future__ import annotations

import pytest
from eth_account import Account

from chain.deploy import ETHER
from chain.errors import InvalidChainInput
from chain.models import SignedResult, TaskSettlement
from chain.signing import INVALID_ARGS_HASH, compute_task_id, sd_result_hash, sign_result, sign_task
from tests.unit.chain._builders import make_sd_task, make_task
from tests.unit.chain.conftest import ChainEnv
from tests.unit.chain.test_chain_reverts import FEE, HOUR, World, assert_reverts, settle_raw

A = (0x0123456789ABCDEF, 0xF0F0F0F00F0F0F0F)  # node 1's two images
B = (A[0] ^ 0b1, A[1])  # 1 bit from A in image 0
C = (A[0] ^ 0b110, A[1])  # 2 bits from A, 3 from B, in image 0
FAR = (A[0], A[1] ^ 0b11111)  # 5 bits from A in image 1: not below the threshold (5)


async def _world(env: ChainEnv) -> World:
    nodes = await env.staked_nodes(4)
    creator = await env.funded(20 * ETHER)
    await env.client(creator).deposit(creator, 10 * ETHER)
    deadline = await env.client().block_timestamp() + HOUR
    return World(env, nodes, creator, deadline, env.client())


@pytest.fixture
async def world(embedded_env: ChainEnv) -> World:
    return await _world(embedded_env)


def sd_task(w: World, phashes, nonce: int = 1, **kw) -> TaskSettlement:
    return make_sd_task(w.domain, w.creator, nonce, kw.pop("fee", FEE), w.deadline, w.nodes[: len(phashes)],
                        phashes, **kw)  # fmt: skip


async def test_sd_results_a_few_bits_apart_settle_and_pay_the_split(chain_env: ChainEnv) -> None:
    w = await _world(chain_env)
    client = w.client
    three = sd_task(w, [A, B, C], nonce=1)
    two = sd_task(w, [C, A], nonce=2, orders=(2, 1))  # order 1 is A (node 1), order 2 is C (node 0)
    assert three.sd and len({r.result_hash for r in three.results}) == 3
    before = await client.deposit_balance(w.creator.address)
    receipt = await client.wait_receipt(await client.settle([three, two]))
    n0, n1, n2 = (x.address for x in w.nodes[:3])
    assert three.shares() == {n0: FEE * 40 // 100, n1: FEE * 36 // 100, n2: FEE * 24 // 100}
    assert two.shares() == {n1: FEE * 10 // 19 + 1, n0: FEE * 9 // 19}
    for node in (n0, n1, n2):
        assert await client.credit_of(node) == three.shares()[node] + two.shares().get(node, 0)
    assert before - await client.deposit_balance(w.creator.address) == 2 * FEE
    settled = {e.args["taskId"]: e.args["resultHash"] for e in receipt.events if e.name == "TaskSettled"}
    assert settled == {three.task_id: sd_result_hash(A), two.task_id: sd_result_hash(A)}  # the lowest order's
    assert await client.settled_flags([three, two]) == [True, True]


async def test_sd_results_beyond_the_threshold_revert(world: World) -> None:
    await assert_reverts(world, "ResultsDisagree", settle_raw([sd_task(world, [A, FAR]).as_abi()]))
    await assert_reverts(world, "ResultsDisagree", settle_raw([sd_task(world, [A, B, FAR]).as_abi()]))
    # each is 4 bits from A, but 8 bits from each other: matched pairwise, not against the first
    far_pair = [A, (A[0] ^ 0b1111, A[1]), (A[0] ^ 0b11110000, A[1])]
    await assert_reverts(world, "ResultsDisagree", settle_raw([sd_task(world, far_pair).as_abi()]))
    await assert_reverts(world, "ResultsDisagree", settle_raw([sd_task(world, [A, A[:1]]).as_abi()]))  # image count
    # the whole batch reverts: the good GPT task in it is not settled either
    gpt = make_task(world.domain, world.creator, 7, FEE, world.deadline, world.nodes[:3])
    await assert_reverts(world, "ResultsDisagree", settle_raw([gpt.as_abi(), sd_task(world, [A, FAR]).as_abi()]))


async def test_forged_phash_lists_revert(world: World) -> None:
    t = sd_task(world, [A, B, C]).as_abi()
    forged = (*t[:10], [list(A), list(A), list(C)])  # node 1 signed B's hash; A is within the threshold of B
    await assert_reverts(world, "BadResultSignature", settle_raw([forged]))
    await assert_reverts(world, "PhashListCount", settle_raw([(*t[:10], t[10][:2])]))
    await assert_reverts(world, "EmptyPhashes", settle_raw([(*t[:10], [t[10][0], [], t[10][2]])]))
    await assert_reverts(world, "ResultHashMismatch", settle_raw([(*t[:6], sd_result_hash(B), *t[7:])]))
    # an SD result settled as if exact (no lists): each node signed its own hash, not one common hash
    await assert_reverts(world, "BadResultSignature", settle_raw([(*t[:10], [])]))


async def test_sd_invalid_args_verdict_and_identical_results_still_settle(world: World) -> None:
    client = world.client
    verdict = make_task(world.domain, world.creator, 1, FEE, world.deadline, world.nodes[:2],
                        result_hash=INVALID_ARGS_HASH)  # fmt: skip
    same = sd_task(world, [A, A, A], nonce=2)
    receipt = await client.wait_receipt(await client.settle([verdict, same]))
    assert sum(1 for e in receipt.events if e.name == "TaskSettled") == 2
    n0 = world.nodes[0].address
    assert await client.credit_of(n0) == verdict.shares()[n0] + same.shares()[n0]


async def test_gpt_settlement_gas_unchanged_and_sd_cost(world: World) -> None:
    client = world.client
    gpt = [make_task(world.domain, world.creator, n, FEE, world.deadline, world.nodes[:3]) for n in (1, 2)]
    await client.wait_receipt(await client.settle(gpt[:1]))  # warm: nodes hold credits
    gpt_gas = (await client.wait_receipt(await client.settle(gpt[1:]))).gas_used
    sd_gas = (await client.wait_receipt(await client.settle([sd_task(world, [A, B, C], nonce=3)]))).gas_used
    # an SD task pays one external threshold read and per-image hashing and comparisons on top
    print(f"gas: gpt_task={gpt_gas} sd_task_3x2_images={sd_gas}")
    assert gpt_gas < sd_gas < gpt_gas + 3 * 2 * client.settings.settle_gas_per_phash + 10_000, (gpt_gas, sd_gas)


async def test_rotate_coordinator_on_both_contracts(world: World) -> None:
    env = world.env
    new = await env.funded(ETHER)
    admin = env.client(env.admin)
    for contract in ("TaskLedger", "NodeStaking"):
        receipt = await admin.transact(contract, "rotateCoordinator", new.address)
        assert any(e.name == "CoordinatorRotated" and e.args["next"] == new.address for e in receipt.events)
    assert await world.client.ledger.functions.coordinator().call() == new.address
    assert await world.client.staking.functions.coordinator().call() == new.address
    task = sd_task(world, [A, B])
    await assert_reverts(world, "AccessControlUnauthorizedAccount", settle_raw([task.as_abi()]))
    new_client = env.client(new)
    await new_client.wait_receipt(await new_client.settle([task]))
    assert await new_client.is_settled(world.creator.address, 1)


def test_models_refuse_inconsistent_sd_results() -> None:
    node, creator = Account.create(), Account.create()
    tid = compute_task_id(creator.address, 1, b"\x00" * 32)
    sig = sign_result(node, _domain(), tid, sd_result_hash(A))
    with pytest.raises(InvalidChainInput, match="sd_result_hash"):
        SignedResult(node.address, sd_result_hash(B), sig, 1, A)
    with pytest.raises(InvalidChainInput, match="uint64"):
        SignedResult.sd(node.address, [1 << 64], sig, 1)
    sd = SignedResult.sd(node.address, A, sig, 1)
    gpt = SignedResult(Account.create().address, sd_result_hash(A), sig, 2)
    csig = sign_task(creator, _domain(), tid, b"\x00" * 32, 1, 1, 1)
    with pytest.raises(InvalidChainInput, match="phashes"):
        TaskSettlement(tid, b"\x00" * 32, creator.address, 1, 1, 1, csig, (sd, gpt))


def _domain():
    from chain.signing import Domain

    return Domain(chain_id=1, verifying_contract="0x" + "11" * 20)
