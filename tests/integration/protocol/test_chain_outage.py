"""Chain outage: the chain stops answering mid-run, then comes back.

The outage is a failure-injecting provider between the coordinator's chain client and the embedded chain
(every request raises ConnectionError while it is "down"): Hardhat keeps no state across a restart, so
stopping a real node would lose the deployed contracts and the stakes. While the chain is down, tasks keep
being accepted (the creator's deposit was read before), dispatched and validated; none is settled. When it
is back, settlement catches up and every node is paid its share.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from web3 import AsyncWeb3
from web3.providers.async_base import AsyncBaseProvider

from chain.client import ChainClient
from chain.models import ClientSettings
from coordinator.domain.models import TaskState
from coordinator.service.settlement import SettlementSettings
from tests.integration.protocol.chainnet import ChainNet, wait_states
from tests.integration.protocol.test_settlement_flow import expected_credits
from tests.support.network import gpt_args
from worker.testing import InstantExecutor


class CuttableProvider(AsyncBaseProvider):
    """Forwards to `inner` (the embedded revm provider, which answers in the JSON-RPC wire format) unless
    `down`, when every request fails like a dropped connection."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.down = False
        self.refused = 0

    async def make_request(self, method, params):
        if self.down:
            self.refused += 1
            raise ConnectionError(f"test outage: {method} refused")
        return await self.inner.make_request(method, params)

    async def is_connected(self, show_traceback: bool = False) -> bool:
        return not self.down


async def test_tasks_complete_through_an_outage_and_settlement_catches_up(tmp_path):
    cut: list[CuttableProvider] = []

    def wrap(chain, _client):
        provider = CuttableProvider(chain.provider)
        cut.append(provider)
        settings = ClientSettings(preflight=False, rpc_attempts=2, rpc_timeout=timedelta(seconds=2),
                                  poll_interval=timedelta(milliseconds=20))  # fmt: skip
        return ChainClient(AsyncWeb3(provider), chain.keys.coordinator, chain.addresses, chain.chain_id, settings)

    settle = SettlementSettings(batch_max_tasks=5, batch_interval=timedelta(seconds=0.3),
                                outage_backoff_max=timedelta(seconds=0.5))  # fmt: skip
    async with ChainNet(tmp_path, settlement=settle, client_wrapper=wrap) as net:
        nodes = await net.add_nodes(3, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        client = net.client()
        store = net.app.store
        first = [await client.submit(gpt_args(f"before {i}"), fee=2500 + i) for i in range(3)]
        await wait_states(store, first, TaskState.SETTLED, 30)

        cut[0].down = True
        during = [await client.submit(gpt_args(f"during {i}"), fee=2500 + i) for i in range(8)]
        await wait_states(store, during, TaskState.VALIDATED, 30)
        await asyncio.sleep(1.0)  # several settlement attempts fail meanwhile
        assert all(store.get_task(i).state == TaskState.VALIDATED for i in during)
        assert cut[0].refused > 0 and not net.app.parts.settlement.chain_ok

        cut[0].down = False
        await wait_states(store, during, TaskState.SETTLED, 30)
        exp = expected_credits(store, first + during)
        for n in nodes:
            assert await net.admin.credit_of(n.address) == exp[n.address]
        assert net.app.parts.settlement.chain_ok
