"""Time to first token through the gateway, against calling the GPT executor directly (same run, same model).

Gateway path: the official `openai` client streams a chat completion from the
gateway, which signs the task and sends it to the coordinator, which dispatches
it to three nodes; the first node's tokens come back over WatchTask and SSE.
Baseline: `GptExecutor.run` in this process with an `on_delta` callback, on the
same tiny model and the same (greedy) task. Both are warmed up, and their runs
alternate so that host noise hits both alike. On a small CPU host the three
nodes share its cores, which the ratio includes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench._gateway_net import PROMPT, gateway_network, gpt_task, median_ms, prepare_model, tmpdir


def _direct_once(ex, model: str, max_new_tokens: int, i: int) -> float:
    from worker.executors.base import Job

    first: list[float] = []

    def on_delta(chunk: dict) -> None:
        if not first and any((c.get("delta") or {}).get("content") for c in chunk.get("choices", ())):
            first.append(time.perf_counter())

    spec = gpt_task(model, max_new_tokens, seed=100 + i)
    start = time.perf_counter()
    ex.run(Job(task_id=f"0x{i:064x}", assignment_id=str(i), spec=spec, on_delta=on_delta))
    return (first[0] if first else time.perf_counter()) - start


async def measure(root: Path, model: str, runs: int, max_new_tokens: int) -> tuple[list[float], list[float]]:
    import openai

    from worker.executors.gpt import GptExecutor

    direct_ex = GptExecutor("cpu")
    async with gateway_network(root, lambda i: [GptExecutor("cpu")]) as (app, key):
        client = openai.AsyncOpenAI(base_url=f"http://{app.http_address}/v1", api_key=key, max_retries=0,
                                    timeout=120)

        async def through(seed: int) -> float:
            start = time.perf_counter()
            first = None
            stream = await client.chat.completions.create(model=model, messages=PROMPT, stream=True, seed=seed,
                                                          max_tokens=max_new_tokens, temperature=0)
            async for chunk in stream:
                if first is None and any(c.delta.content for c in chunk.choices):
                    first = time.perf_counter()
            return (first or time.perf_counter()) - start

        try:
            for i in range(2):  # warm-up: model loads, first-call allocations
                await through(i + 1)
                await asyncio.to_thread(_direct_once, direct_ex, model, max_new_tokens, 10_000 + i)
            direct, gateway = [], []
            for i in range(runs):
                direct.append(await asyncio.to_thread(_direct_once, direct_ex, model, max_new_tokens, i))
                gateway.append(await through(100 + i))
            return direct, gateway
        finally:
            await client.close()
            direct_ex.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_ttft", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=16)
    args = p.parse_args(argv)
    with tmpdir() as tmp:
        root = Path(tmp)
        model = prepare_model(root)
        direct, through = asyncio.run(measure(root, model, args.runs, args.max_tokens))
    d, g = median_ms(direct), median_ms(through)
    print(f"executor_direct  median TTFT {d:8.1f} ms  runs={[round(x * 1000, 1) for x in direct]}")
    print(f"through_gateway  median TTFT {g:8.1f} ms  runs={[round(x * 1000, 1) for x in through]}")
    print(f"figure=gateway_ttft value={g:.1f} unit=ms baseline=executor_direct ratio={g / d:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
