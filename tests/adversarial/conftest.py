"""The harness for attack tests: a real coordinator (port 0, its bundled relay) and real worker nodes on gRPC
streams, each node running an honest or a scripted malicious executor of worker.testing.

    async def test_x(attack):
        await attack.nodes(2, honest())                 # honest, slow enough to lose the race
        await attack.nodes(1, lambda: LyingExecutor())  # the cheat answers first
        task = await attack.run(gpt_args("q"))          # waits until validated/aborted AND finished
        attack.assignments(task.task_id), attack.evidence(task.task_id)

Every node of a test shares one card, so any three can form a group (add spare honest nodes to give a
task a replacement or a confirming re-run).
"""

from __future__ import annotations

import asyncio

import pytest

from coordinator.service.settlement import slash_evidence
from helium.v1 import task_pb2
from tests.support.network import TestNetwork, gpt_args
from worker.testing import SlowExecutor

__all__ = ["Attack", "gpt_args", "honest", "sd_args"]

CARD = {"card": "Test Card 24GB", "vram": 24 << 30}
DONE = (task_pb2.TASK_STATE_VALIDATED, task_pb2.TASK_STATE_ABORTED, task_pb2.TASK_STATE_SETTLED)


def honest(task_type: str = "gpt", seconds: float = 0.4):
    """An honest node that answers after `seconds` (so a cheat answering at once is first)."""
    return lambda: SlowExecutor(seconds, task_type=task_type)


def sd_args(i: int = 0, images: int = 1):
    from helium.client import load_task_file

    return load_task_file({"sd": {"base_model": {"name": "tiny-sd"}, "prompt": f"a cat number {i}",
                                  "task_config": {"num_images": images, "steps": 4, "image_width": 256,
                                                  "image_height": 256}}})  # fmt: skip


class Attack:
    __test__ = False

    def __init__(self, net: TestNetwork) -> None:
        self.net = net
        self.client = None

    async def nodes(self, n: int, factory) -> list:
        return await self.net.add_nodes(n, factory, **CARD)

    async def submit(self, args, fee: int = 10) -> str:
        self.client = self.client or self.net.client()
        return await self.client.submit(args, fee=fee)

    async def finished(self, task_id: str, timeout: float = 20) -> task_pb2.Task:
        """The task once decided and handed to settlement (no assignment open, no confirmation pending)."""
        task = await self.client.wait(task_id, timeout=timeout)
        assert task.state in DONE, task
        d = self.net.app.dispatcher
        for _ in range(int(timeout * 20)):
            if task_id not in d.inflight:
                return await self.client.get(task_id)
            await asyncio.sleep(0.05)
        raise TimeoutError(f"task {task_id} still in flight after {timeout} s")

    async def run(self, args, fee: int = 10, timeout: float = 20) -> task_pb2.Task:
        return await self.finished(await self.submit(args, fee), timeout)

    def assignments(self, task_id: str) -> dict:
        """node address -> its stored Assignment."""
        return {a.node: a for a in self.net.app.store.assignments_for(task_id)}

    def evidence(self, task_id: str) -> list:
        """The slash evidence settlement would build for this task from what the store holds."""
        store = self.net.app.store
        return slash_evidence(store.get_task(task_id), store.assignments_for(task_id))


@pytest.fixture
async def attack(tmp_path):
    async with TestNetwork(tmp_path) as net:
        yield Attack(net)
