"""SD settlement by pHash, end to end on the embedded chain: three honest SD nodes whose images differ by a
bit or two (so their result hashes all differ) validate AND settle, and each is paid its QoS share."""

from __future__ import annotations

from datetime import timedelta

from eth_account import Account

from chain.signing import Domain, compute_task_id, sd_result_hash, sign_result, sign_task
from coordinator.domain.models import Assignment, AssignmentState, Task, TaskState, TaskType
from coordinator.service.settlement import SettlementSettings, paid_results, settlement_for
from tests.integration.protocol.chainnet import ChainNet
from tests.integration.protocol.simnet import sd_args
from tests.integration.protocol.test_settlement_flow import expected_credits
from worker.testing import InstantExecutor, JitteredExecutor

GIB = 1 << 30


async def test_sd_results_a_few_bits_apart_settle_with_the_split(tmp_path):
    settle = SettlementSettings(batch_max_tasks=3, batch_interval=timedelta(seconds=0.3))
    async with ChainNet(tmp_path, settlement=settle) as net:
        executors = [
            lambda: InstantExecutor("sd", blobs=False),
            lambda: JitteredExecutor((0,), blobs=False),  # 1 bit from the honest image 0
            lambda: JitteredExecutor((1, 2), blobs=False),  # 2 bits from honest, 3 from the one above
        ]
        nodes = [(await net.add_nodes(1, f, card="gpu-a", vram=24 * GIB))[0] for f in executors]
        client = net.client()
        creator = client.key.address
        before = await net.admin.deposit_balance(creator)
        ids = [await client.submit(sd_args(i), fee=2_000_017 + i) for i in range(4)]
        await net.wait_settled(ids, timeout=60)
        store = net.app.store
        tasks = [store.get_task(t) for t in ids]
        assert [t.state for t in tasks] == [TaskState.SETTLED] * len(ids), [(t.state, t.reason) for t in tasks]
        for t in tasks:
            subs = [a for a in store.assignments_for(t.task_id) if a.state == AssignmentState.SUBMITTED]
            assert len({a.result_hash for a in subs}) == len(subs) >= 2  # no two results are byte-equal
            assert all(a.matched for a in subs)
        exp = expected_credits(store, ids)
        assert set(exp) == {n.address for n in nodes}
        for node in nodes:
            assert await net.admin.credit_of(node.address) == exp[node.address]
        fees = sum(t.fee for t in tasks)
        assert before - await net.admin.deposit_balance(creator) == fees == sum(exp.values())


def _sd_task_and_results(phashes, *, forged: int | None = None):
    """A VALIDATED SD task (accepted: the first result) and its matched, signed results in order."""
    creator, nodes = Account.create(), [Account.create() for _ in phashes]
    domain = Domain(chain_id=1, verifying_contract="0x" + "11" * 20)
    args_hash = b"\x05" * 32
    tid = compute_task_id(creator.address, 1, args_hash)
    assigns = []
    for i, (node, ph) in enumerate(zip(nodes, phashes, strict=True)):
        h = sd_result_hash(ph if i != forged else [p ^ 1 for p in ph])  # forged: signs a hash of other images
        assigns.append(Assignment(f"a{i}", "0x" + tid.hex(), node.address, AssignmentState.SUBMITTED, 0, 0,
                                  result_hash=h, signature=sign_result(node, domain, tid, h), phashes=tuple(ph),
                                  submission_order=i + 1, matched=True))  # fmt: skip
    task = Task("0x" + tid.hex(), TaskType.SD, TaskState.VALIDATED, creator.address, 1, 100, 2**40, b"{}", args_hash,
                sign_task(creator, domain, tid, args_hash, 100, 1, 2**40), "tiny-sd", 0.0, 0, 0, 0,
                result_hash=assigns[0].result_hash)  # fmt: skip
    return task, assigns


def test_paid_sd_results_match_pairwise_and_are_provable():
    a = 0x0F0F_0000_FFFF_1234
    # both later results are 4 bits from the accepted one, but 8 bits from each other: the third is left out
    task, assigns = _sd_task_and_results([[a], [a ^ 0b1111], [a ^ 0b1111_0000]])
    ts = settlement_for(task, assigns)
    assert [r.node for r in ts.results] == [assigns[0].node, assigns[1].node] and ts.sd
    assert [r.phashes for r in ts.results] == [(a,), (a ^ 0b1111,)]
    assert ts.result_hash == task.result_hash and ts.shares()[assigns[0].node] == 100 * 10 // 19 + 1
    # a result whose signed hash is not its pHashes' cannot be proven on chain: never paid
    task, assigns = _sd_task_and_results([[a], [a ^ 1], [a ^ 2]], forged=1)
    assert [r.node for r in settlement_for(task, assigns).results] == [assigns[0].node, assigns[2].node]
    task, assigns = _sd_task_and_results([[a], [a ^ 1]], forged=1)
    assert settlement_for(task, assigns) is None
    assert paid_results(task, assigns, phash_threshold=5) == [assigns[0]]
