"""An abandoned request stops, and is not paid (issue #14 item 8).

The embedded chain, a coordinator with its gateway on a real port (the gateway's creator key funded with
a TaskLedger deposit), three staked nodes whose executor is slow. An HTTP client asks for a completion and
goes away before the quorum: the gateway cancels the task, the nodes are told to stop, no fee is taken
(neither from the creator's on-chain deposit nor from the API key's spending), and a request that stays
connected is still answered and paid.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from chain.signing import load_or_create_key
from coordinator.domain.models import TaskState
from coordinator.gateway.keys import KeyStore
from coordinator.service.settlement import SettlementSettings
from tests.integration.protocol.chainnet import ChainNet, wait_states
from worker.testing import SlowExecutor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MODEL = "helium/slow-gpt"
DEPOSIT = 10**18


async def _open_then_leave(http: httpx.AsyncClient, key: str, body: dict) -> str:
    """Sends the request, reads the response head (the task id) or waits a moment, then disconnects."""
    async with http.stream("POST", "/v1/chat/completions", json=body,
                           headers={"authorization": f"Bearer {key}"}) as r:
        assert r.status_code == 200, await r.aread()
        return r.headers["x-helium-task-id"]  # leaving the block closes the connection mid-stream


async def test_a_client_that_leaves_before_the_quorum_cancels_its_task_unpaid(tmp_path):
    settle = SettlementSettings(batch_max_tasks=1, batch_interval=timedelta(seconds=0.2))
    gateway_key = load_or_create_key(tmp_path / "coordinator" / "gateway" / "creator.key")
    async with ChainNet(tmp_path, settlement=settle, http_port=0) as net:
        await net.chain.fund(gateway_key.address, DEPOSIT + 10**18)
        await net.chain.client(gateway_key).deposit(gateway_key, DEPOSIT)
        executors = [SlowExecutor(20.0, loaded_models=(MODEL,)) for _ in range(3)]
        await net.add_nodes(3, iter(executors).__next__, card="gpu", vram=8 << 30)
        store = KeyStore(tmp_path / "coordinator" / "gateway" / "keys.sqlite")
        key, record = store.create("leaver")
        fee = 10**15
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True, "fee": str(fee)}
        async with httpx.AsyncClient(base_url=f"http://{net.app.http_address}", timeout=30) as http:
            task_id = await _open_then_leave(http, key, body)
            await wait_states(net.app.store, [task_id], TaskState.CANCELLED, 15)
            task = net.app.store.get_task(task_id)
            assert "cancelled" in task.reason
            # Every node was told to stop (their jobs see the cancel) long before the 20 s they would take.
            for _ in range(50):
                if all(any(j.task_id == task_id and j.is_cancelled() for j in ex.jobs) for ex in executors):
                    break
                await asyncio.sleep(0.1)
            assert all(any(j.task_id == task_id and j.is_cancelled() for j in ex.jobs) for ex in executors)
            assert all(a.state.value == "expired" for a in net.app.store.assignments_for(task_id))

            # The non-streaming route too: the client times out and goes away.
            plain = {**body, "stream": False}
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/v1/chat/completions", json=plain, headers={"authorization": f"Bearer {key}"},
                                timeout=httpx.Timeout(30, read=1.5))
            await asyncio.sleep(1.0)
            cancelled = [t for t in net.app.store.list_tasks([TaskState.CANCELLED], 10)]
            assert len(cancelled) == 2, [t.task_id for t in cancelled]

        await asyncio.sleep(1.0)  # batches go out every 0.2 s: a paid task would have settled by now
        assert await net.admin.deposit_balance(gateway_key.address) == DEPOSIT  # no fee charged on chain
        for _ in range(50):
            k = store.get(record.id)
            if k.reserved_wei == 0:
                break
            await asyncio.sleep(0.1)
        assert (k.spent_wei, k.reserved_wei) == (0, 0)  # the key's reservation was released, nothing spent
        store.close()
