"""The embedded chain in its own process (chain.server, JSON-RPC on loopback), killed and restarted.

A network settles through a chain server child process; the chain node is `kill -9`ed mid-run. Tasks keep
being validated (none is settled) while it is down; it is restarted on the same data directory and port,
finds every stake and credit it had (its state is on disk, each request committed before its answer), and
settlement catches up: every node ends with exactly its share of every task.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from chain.errors import ContractRevert
from coordinator.domain.models import TaskState
from coordinator.service.settlement import SettlementSettings
from tests.integration.protocol.chainnet import ChainNet, wait_states
from tests.integration.protocol.test_settlement_flow import expected_credits
from tests.support.network import gpt_args
from worker.testing import InstantExecutor


async def test_chain_server_killed_and_restarted_keeps_state_and_settlement_catches_up(tmp_path):
    settle = SettlementSettings(batch_max_tasks=3, batch_interval=timedelta(seconds=0.3),
                                outage_backoff_max=timedelta(seconds=0.5))  # fmt: skip
    async with ChainNet(tmp_path, settlement=settle, process=True) as net:
        server = net.chain.server
        assert server.running and net.chain.provider.endpoint_uri == server.url
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        client = net.client()
        store = net.app.store
        first = [await client.submit(gpt_args(f"before {i}"), fee=2500 + i) for i in range(3)]
        await wait_states(store, first, TaskState.SETTLED, 60)
        paid = expected_credits(store, first)
        assert {n.address: await net.admin.credit_of(n.address) for n in nodes} == paid
        min_stake = await net.admin.min_stake()
        try:  # a revert crosses the JSON-RPC boundary decoded (code 3 and its data)
            await net.admin.sender_for(nodes[0].key).preflight(net.chain.addresses.staking, bytes.fromhex("3ccfd60b"))
        except ContractRevert as exc:
            assert exc.error, exc
        else:
            raise AssertionError("withdraw() before any unstake request must revert")

        old_pid = server.proc.pid
        server.kill()
        assert await server.proc.wait() == -9
        during = [await client.submit(gpt_args(f"during {i}"), fee=3500 + i) for i in range(4)]
        await wait_states(store, during, TaskState.VALIDATED, 30)
        await asyncio.sleep(1.0)  # settlement attempts fail meanwhile
        assert all(store.get_task(i).state == TaskState.VALIDATED for i in during)

        await net.chain.restart()  # same directory, same port: the coordinator's client finds it again
        assert server.proc.pid != old_pid and server.running
        for n in nodes:  # the state before the kill is all there
            assert (await net.admin.node_info(n.address)).stake == min_stake
            assert await net.admin.credit_of(n.address) >= paid.get(n.address, 0)
        await wait_states(store, during, TaskState.SETTLED, 60)
        exp = expected_credits(store, first + during)
        for n in nodes:
            assert await net.admin.credit_of(n.address) == exp[n.address]
        assert net.app.parts.settlement.chain_ok
    assert not server.running
