"""Settlement metrics against a real settling network (issue #13 item 8): the embedded chain, a coordinator
with its gateway on a real port, staked nodes; /metrics read over HTTP, as Prometheus does.

`helium_settled_tasks_total` moves as batches settle (it stayed 0: the counter only counted an outcome the
settlement never reported); failed settlements and the settlement lag are exported.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from web3 import AsyncWeb3

from chain.client import ChainClient
from chain.models import ClientSettings
from coordinator.domain.models import TaskState
from coordinator.service.settlement import SettlementSettings
from tests.integration.protocol.chainnet import ChainNet, wait_states
from tests.integration.protocol.test_chain_outage import CuttableProvider
from tests.support.network import gpt_args
from worker.testing import InstantExecutor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def _metrics(http: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    text = (await http.get("/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _value(m: dict, name: str, **labels) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_settled_tasks_failures_and_lag_are_exported(tmp_path):
    cut: list[CuttableProvider] = []

    def wrap(chain, _client):
        provider = CuttableProvider(chain.provider)
        cut.append(provider)
        settings = ClientSettings(preflight=False, rpc_attempts=2, rpc_timeout=timedelta(seconds=2),
                                  poll_interval=timedelta(milliseconds=20))  # fmt: skip
        return ChainClient(AsyncWeb3(provider), chain.keys.coordinator, chain.addresses, chain.chain_id, settings)

    settle = SettlementSettings(batch_max_tasks=5, batch_interval=timedelta(seconds=0.3),
                                outage_backoff_max=timedelta(seconds=0.5))  # fmt: skip
    async with ChainNet(tmp_path, settlement=settle, client_wrapper=wrap, http_port=0) as net:
        await net.add_nodes(3, lambda: InstantExecutor("gpt"), card="gpu", vram=8 << 30)
        client = net.client()
        store = net.app.store
        async with httpx.AsyncClient(base_url=f"http://{net.app.http_address}", timeout=10) as http:
            before = await _metrics(http)
            first = [await client.submit(gpt_args(f"before {i}"), fee=2500 + i) for i in range(3)]
            await wait_states(store, first, TaskState.SETTLED, 30)
            m = await _metrics(http)
            assert _value(m, "helium_settled_tasks_total") - _value(before, "helium_settled_tasks_total") == 3
            assert (_value(m, "helium_settlement_delay_seconds_count")
                    - _value(before, "helium_settlement_delay_seconds_count")) == 3
            assert _value(m, "helium_settlement_lag_seconds") == 0

            cut[0].down = True
            during = [await client.submit(gpt_args(f"during {i}"), fee=2500 + i) for i in range(2)]
            await wait_states(store, during, TaskState.VALIDATED, 30)
            await asyncio.sleep(1.5)  # several settlement attempts fail meanwhile
            m = await _metrics(http)
            failed = (_value(m, "helium_settlement_failures_total", reason="chain_unavailable")
                      - _value(before, "helium_settlement_failures_total", reason="chain_unavailable"))
            assert failed >= 1
            assert _value(m, "helium_settlement_lag_seconds") >= 1.0  # the validated tasks wait, and it shows

            cut[0].down = False
            await wait_states(store, during, TaskState.SETTLED, 30)
            m = await _metrics(http)
            assert _value(m, "helium_settled_tasks_total") - _value(before, "helium_settled_tasks_total") == 5
            assert _value(m, "helium_settlement_lag_seconds") == 0
