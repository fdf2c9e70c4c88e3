"""The simulated network of the protocol tests and benchmarks: 60 staked nodes on three cards with mixed
speeds (so their QoS differs), one liar and one timeout-prone node, fed a mixed GPT / SD workload."""

from __future__ import annotations

import asyncio
import random

from eth_account import Account

from chain.deploy import ETHER
from helium.client import load_task_file
from tests.support.network import gpt_args
from worker.errors import ExecutionCrashError
from worker.testing import InstantExecutor, LyingExecutor

__all__ = ["CARDS", "FlakyExecutor", "build_fleet", "sd_args", "submit_all"]

GIB = 1 << 30
# (card name, VRAM, honest nodes): the small T4 group holds the timeout-prone node and two honest ones.
CARDS = (("NVIDIA A100-SXM4-80GB", 80 * GIB, 28), ("NVIDIA L4", 24 * GIB, 28), ("Tesla T4", 16 * GIB, 2))
SPEEDS = (0.0, 0.02, 0.05)  # per-task seconds of the honest doubles: fast, medium, slow


class FlakyExecutor(InstantExecutor):
    """Crashes (a timeout, for QoS) on every task except each `every`-th, which it answers honestly."""

    def __init__(self, task_type: str = "gpt", *, every: int = 10, **kwargs) -> None:
        super().__init__(task_type, **kwargs)
        self.every = every
        self.count = 0

    def run(self, job):
        self.count += 1
        if self.count % self.every:
            with self._lock:
                self.jobs.append(job)
            raise ExecutionCrashError("test double: the GPU fell off the bus")
        return super().run(job)


def sd_args(i: int):
    return load_task_file({"sd": {"base_model": {"name": "tiny-sd"}, "prompt": f"a cat number {i}",
                                  "task_config": {"num_images": 1 + i % 2, "steps": 4, "image_width": 256,
                                                  "image_height": 256}}})  # fmt: skip


async def build_fleet(net, *, liar: bool = True, flaky: bool = True):
    """Stakes and connects the fleet; returns (honest nodes, liar or None, flaky or None)."""
    honest, liar_node, flaky_node = [], None, None
    net.speeds = {}
    for c, (card, vram, n) in enumerate(CARDS):
        for speed in range(len(SPEEDS)):
            count = len([i for i in range(n) if (i + c) % len(SPEEDS) == speed])
            delay = SPEEDS[speed]
            nodes = await net.add_nodes(count, lambda d=delay: [InstantExecutor("gpt", delay=d, blobs=False),
                                                                InstantExecutor("sd", delay=d, blobs=False)],
                                        card=card, vram=vram)  # fmt: skip
            net.speeds.update({n.address: delay for n in nodes})
            honest += nodes
    if liar:
        card, vram, _ = CARDS[0]
        liar_node = (await net.add_nodes(1, lambda: [LyingExecutor("gpt", salt=b"lie"), LyingExecutor("sd", salt=b"lie",
                                                     blobs=False)], card=card, vram=vram))[0]  # fmt: skip
    if flaky:
        card, vram, _ = CARDS[2]
        flaky_node = (await net.add_nodes(1, lambda: [FlakyExecutor("gpt"), FlakyExecutor("sd", blobs=False)],
                                          card=card, vram=vram))[0]  # fmt: skip
    return honest, liar_node, flaky_node


async def new_creator(net, deposit: int):
    """A fresh creator key with `deposit` wei on the ledger."""
    key = Account.create()
    await net.chain.fund(key.address, deposit + ETHER)
    await net.admin.deposit(key, deposit)
    return key


def workload(n: int, sd_share: float = 0.1, seed: int = 7):
    """[(args, fee)]: GPT and SD (sd_share) tasks with mixed fees (multiples of 25 and odd ones)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fee = rng.choice((25, 100, 1000, 2525)) * 10**12 + (rng.randrange(25) if i % 3 == 0 else 0)
        args = sd_args(i) if rng.random() < sd_share else gpt_args(f"task {i}")
        out.append((args, fee))
    return out


async def submit_all(client, items, concurrency: int = 8) -> list[str]:
    ids: list[str | None] = [None] * len(items)
    it = iter(enumerate(items))

    async def worker():
        for i, (args, fee) in it:
            ids[i] = await client.submit(args, fee=fee)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ids  # type: ignore[return-value]
