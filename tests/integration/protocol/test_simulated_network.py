"""The simulated network: 60 staked workers on real gRPC streams in this process, on the embedded chain.

Three card types (28 A100, 28 L4, 3 T4), honest test doubles of three speeds (so QoS spreads), one liar
(A100) and one timeout-prone node (T4: it crashes on 9 tasks of 10; a crash counts as a timeout). The
workload is the issue's 2,000 tasks, 10% SD, with mixed fees (`HELIUM_SIM_TASKS=N` runs another count).
On the 2-core machine the whole run (60 nodes, creator signing, validation, settlement on the embedded
EVM) takes about 15-20 s.
QoS is scaled to the test's length: a window of 10 scores (DESIGN: 50) and H recovering with
tau = 2 s (DESIGN: 30 min); every other number is the DESIGN default. The timeout-prone node is kicked
once it has 10 scores, and after each timeout it is excluded until H recovers (0.1 tau): with tau = 10 s
that took 10+ s of the run, and once the network got fast enough to finish the workload in about 15 s the
kick sometimes did not come in time.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

from chain.deploy import ETHER
from coordinator.domain.models import AssignmentState, NodeState, TaskState
from coordinator.service.qos import fee_split
from coordinator.service.settings import ProtocolSettings
from coordinator.service.settlement import SettlementSettings
from helium.v1 import admin_pb2, admin_pb2_grpc
from tests.integration.protocol import simnet
from tests.integration.protocol.chainnet import ChainNet
from tests.integration.protocol.test_settlement_flow import expected_credits
from worker.testing import instant_result_hash

TASKS = int(os.environ.get("HELIUM_SIM_TASKS", "2000"))
DEPOSIT = 10**21


async def _until(cond, timeout: float, what: str) -> None:
    start = time.monotonic()
    while not cond():
        if time.monotonic() > start + timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def test_simulated_network(tmp_path):
    protocol = ProtocolSettings(qos_window=10, h_recovery_tau=timedelta(seconds=2))
    settle = SettlementSettings(batch_max_tasks=50, batch_interval=timedelta(seconds=1))
    async with ChainNet(tmp_path, protocol=protocol, settlement=settle) as net:
        honest, liar, flaky = await simnet.build_fleet(net)
        assert len(honest) + 2 == 60
        creator = await simnet.new_creator(net, DEPOSIT)
        client = net.client(creator)
        items = simnet.workload(TASKS, sd_share=0.1)
        ids = await simnet.submit_all(client, items)
        store = net.app.store
        await net.wait_settled(ids, timeout=240)

        # No task lost: every accepted task is stored and settled (one liar never makes a mismatch).
        tasks = [store.get_task(t) for t in ids]
        states = {s: sum(t.state == s for t in tasks) for s in TaskState}
        assert states[TaskState.SETTLED] == TASKS, states
        assert sum(1 for a, _ in items if a.WhichOneof("kind") == "sd") >= TASKS // 20

        # Every validated result is the honest one.
        for (args, _), t in zip(items, tasks, strict=True):
            kind = args.WhichOneof("kind")
            assert t.result_hash == instant_result_hash(kind, getattr(args, kind)), t.task_id
            assert liar.address not in t.result_nodes

        # The liar: slashed on chain with evidence, SLASHED here, disconnected.
        info = await net.admin.node_info(liar.address)
        assert info.slashed and info.stake == 0
        await _until(lambda: not net.app.parts.settlement.kicks_open(), 30, "the kick-out is sent")
        staking = net.admin.staking
        topics = [[staking.events.Slashed.topic, staking.events.KickedOut.topic]]
        logs = await net.admin.w3.eth.get_logs({"fromBlock": 0, "address": staking.address, "topics": topics})
        first = [bytes(lg["topics"][0]).hex() for lg in logs]
        slashed = [staking.events.Slashed().process_log(lg) for lg, t in zip(logs, first, strict=True) if t == topics[0][0][2:]]
        kicked = [staking.events.KickedOut().process_log(lg) for lg, t in zip(logs, first, strict=True) if t == topics[0][1][2:]]
        assert [e.args["node"] for e in slashed] == [liar.address]
        lied_on = store.get_task("0x" + slashed[0].args["taskId"].hex())
        assert lied_on is not None and liar.address not in lied_on.result_nodes
        assert store.get_node(liar.address).state == NodeState.SLASHED
        await _until(lambda: not liar.connected, 10, "the liar is disconnected")

        # The timeout-prone node: first excluded, then kicked out, its stake returned.
        history = net.app.parts.qos.history[flaky.address]
        assert "excluded" in history and "kick" in history
        assert history.index("excluded") < history.index("kick"), history
        assert store.get_node(flaky.address).state == NodeState.KICKED_OUT
        kinfo = await net.admin.node_info(flaky.address)
        assert kinfo.stake == 0 and not kinfo.slashed
        assert kicked and kicked[0].args["node"] == flaky.address and kicked[0].args["amount"] == 400 * ETHER
        assert await net.admin.balance_of(flaky.address) > 400 * ETHER
        await _until(lambda: not flaky.connected, 10, "the flaky node is disconnected")

        # Token conservation, to the wei: deposit = node credits + what the creator has left.
        everyone = [*honest, liar, flaky]
        credits = {n.address: await net.admin.credit_of(n.address) for n in everyone}
        left = await net.admin.deposit_balance(creator.address)
        assert sum(credits.values()) + left == DEPOSIT
        assert DEPOSIT - left == sum(t.fee for t in tasks)

        # The QoS split, to the wei: each node's credit on chain is the sum of its shares, fee * score /
        # sum(scores) by submission order (remainder to the first); with three matching results and a fee
        # that 25 divides, exactly 40/36/24%.
        expected = expected_credits(store, ids)
        assert credits == {n.address: expected.get(n.address, 0) for n in everyone}
        exact = 0
        for t in tasks:
            winners = [a for a in store.assignments_for(t.task_id) if a.state == AssignmentState.SUBMITTED and a.matched]
            orders = [a.submission_order for a in winners]
            if sorted(orders) == [1, 2, 3] and t.fee % 25 == 0:
                exact += 1
                shares = dict(zip(orders, fee_split(t.fee, orders), strict=True))
                assert [shares[o] * 100 for o in (1, 2, 3)] == [40 * t.fee, 36 * t.fee, 24 * t.fee]
        assert exact > TASKS // 4
        # QoS spreads with speed, and AdminService shows it.
        async with simnet_channel(net) as stub:
            nodes = (await stub.ListNodes(admin_pb2.ListNodesRequest(), timeout=10,
                                          metadata=(("authorization", f"Bearer {net.app.admin_token}"),))).nodes
            stats = await stub.GetStats(admin_pb2.GetStatsRequest(), timeout=10,
                                        metadata=(("authorization", f"Bearer {net.app.admin_token}"),))
        by_addr = {n.address: n for n in nodes}
        fast = [by_addr[a].qos for a, d in net.speeds.items() if d == simnet.SPEEDS[0]]
        slow = [by_addr[a].qos for a, d in net.speeds.items() if d == simnet.SPEEDS[-1]]
        assert sum(fast) / len(fast) > sum(slow) / len(slow)
        outcomes = {c.key: c.value for c in stats.validation_outcomes}
        assert outcomes["quorum"] == TASKS and outcomes["slashed"] == 1
        assert stats.settled_batches >= TASKS // settle.batch_max_tasks
        assert {c.key: c.value for c in stats.tasks_by_state}["settled"] == TASKS
        # GetStats also carries the chain's own counters (NetworkStats), read every few seconds.
        deadline = asyncio.get_running_loop().time() + 30
        async with simnet_channel(net) as stub:
            while True:
                stats = await stub.GetStats(admin_pb2.GetStatsRequest(), timeout=10,
                                            metadata=(("authorization", f"Bearer {net.app.admin_token}"),))
                if stats.chain.tasks_settled == TASKS or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.5)
        assert (stats.chain.tasks_settled, stats.chain.slashes) == (TASKS, 1)
        assert int(stats.chain.fees_settled_wei) == sum(credits.values()) and int(stats.chain.slashed_total_wei) > 0
        assert stats.chain.gpus == stats.chain.nodes > 0  # one GPU per node


def simnet_channel(net):
    import contextlib

    import grpc

    @contextlib.asynccontextmanager
    async def ctx():
        async with grpc.aio.insecure_channel(net.address) as ch:
            yield admin_pb2_grpc.AdminServiceStub(ch)

    return ctx()
