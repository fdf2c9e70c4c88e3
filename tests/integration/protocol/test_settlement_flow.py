"""Settlement on the embedded chain, end to end: payouts to the wei, a liar slashed, queue order."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from coordinator.domain.models import AssignmentState, NodeState, TaskState
from coordinator.service.qos import fee_split
from coordinator.service.settlement import SettlementSettings
from helium.v1 import task_pb2
from tests.integration.protocol.chainnet import ChainNet
from tests.support.network import gpt_args
from worker.testing import LyingExecutor, SlowExecutor

GIB = 1 << 30


def expected_credits(store, task_ids) -> dict[str, int]:
    out: dict[str, int] = {}
    for tid in task_ids:
        t = store.get_task(tid)
        if t.state != TaskState.SETTLED:
            continue
        winners = sorted((a for a in store.assignments_for(tid) if a.state == AssignmentState.SUBMITTED and a.matched),
                         key=lambda a: a.submission_order)[:3]  # paid by rank (a confirming re-run may be 4th)
        for a, part in zip(winners, fee_split(t.fee, list(range(1, len(winners) + 1))), strict=True):
            out[a.node] = out.get(a.node, 0) + part
    return out


async def test_batches_pay_every_node_its_share_and_slash_the_liar(tmp_path):
    settle = SettlementSettings(batch_max_tasks=4, batch_interval=timedelta(seconds=0.5))
    async with ChainNet(tmp_path, settlement=settle) as net:
        honest = await net.add_nodes(3, lambda: SlowExecutor(0.05), card="gpu-a", vram=24 * GIB)
        liar = (await net.add_nodes(1, lambda: LyingExecutor("gpt"), card="gpu-a", vram=24 * GIB))[0]
        client = net.client()
        creator = client.key.address
        before = await net.admin.deposit_balance(creator)
        ids = [await client.submit(gpt_args(f"q{i}"), fee=1_000_003 + i) for i in range(10)]
        await net.wait_settled(ids, timeout=60)
        store = net.app.store
        tasks = [store.get_task(t) for t in ids]
        assert all(t.state == TaskState.SETTLED and t.settlement_tx.startswith("0x") for t in tasks)
        # The watchers see SETTLED too.
        got = await client.get(ids[0])
        assert got.state == task_pb2.TASK_STATE_SETTLED
        exp = expected_credits(store, ids)
        for node in [*honest, liar]:
            assert await net.admin.credit_of(node.address) == exp.get(node.address, 0)
        fees = sum(t.fee for t in tasks)
        assert before - await net.admin.deposit_balance(creator) == fees == sum(exp.values())
        # The liar, when it was drawn, is outvoted; its evidence slashes it on chain and it is removed.
        if any(a.node == liar.address for t in ids for a in store.assignments_for(t)):
            for _ in range(100):
                if store.get_node(liar.address).state == NodeState.SLASHED:
                    break
                await asyncio.sleep(0.1)
            info = await net.admin.node_info(liar.address)
            assert info.slashed and info.stake == 0
            assert store.get_node(liar.address).state == NodeState.SLASHED
