"""Shared by the gateway benchmarks: a tiny GPT network in this process, reached through the gateway.

A real coordinator (no chain) with its embedded gateway, and three real node
sessions, each with a real `GptExecutor` on the CPU and the same tiny local
model (`helium/tiny-llama-tools`, built into a private Hugging Face cache).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

MODEL_KIND = "llama-tools"
PROMPT = [{"role": "user", "content": "Tell me about verifiable inference."}]


def prepare_model(root: Path) -> str:
    """Installs the tiny model into `root/hf-cache` and points this process's Hugging Face cache there."""
    cache = root / "hf-cache"
    os.environ["HF_HUB_CACHE"] = str(cache)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from worker.tiny import install_tiny_into_hf_cache

    return install_tiny_into_hf_cache(MODEL_KIND, cache)


def gpt_task(model: str, max_new_tokens: int, seed: int):
    """Greedy: three nodes in one process share torch's global RNG, so sampled runs could differ."""
    from helium.tasks.gpt import load_gpt_task

    return load_gpt_task({"model": model, "messages": PROMPT, "seed": seed,
                          "generation_config": {"max_new_tokens": max_new_tokens, "do_sample": False}})


@asynccontextmanager
async def gateway_network(root: Path, executors_for):
    """Yields (coordinator app, api key) with three nodes whose executors `executors_for(i)` returns."""
    from coordinator.config import CoordinatorConfig
    from coordinator.gateway.keys import KeyStore
    from coordinator.server import CoordinatorApp, backbone_parts
    from worker.session import NodeProfile
    from worker.testing import NodeFleet

    app = CoordinatorApp(CoordinatorConfig(data_dir=root / "coordinator", port=0, http_port=0, chain="none",
                                           heartbeat_interval_s=1.0, shutdown_grace_s=1.0), backbone_parts)
    await app.start()
    store = KeyStore(root / "coordinator" / "gateway" / "keys.sqlite")
    key, _ = store.create("bench", rate_per_min=100_000)
    store.close()
    try:
        async with NodeFleet(app.address, 3, executors=executors_for,
                             profiles=lambda i: NodeProfile(card_name="cpu-bench", vram_bytes=8 << 30)):
            yield app, key
    finally:
        await app.stop(1.0)


def tmpdir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="helium-bench-")


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000.0
