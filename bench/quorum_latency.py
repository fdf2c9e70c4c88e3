"""Time to the validated answer (early quorum: two matching results of three) against the slowest execution.

Each request goes through the gateway (non-streaming) to three real nodes with
real `GptExecutor`s on the same tiny model. The answer returns when two results
match; the benchmark then polls the task until the third node has submitted
too, and records when that was (from the same start). The ratio is what the
early quorum saves: the creator never waits for the straggler. On a small CPU
host the three executions contend for the cores, so the slowest one lags as a
busy node would.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from bench._gateway_net import PROMPT, gateway_network, median_ms, prepare_model, tmpdir


async def measure(root: Path, model: str, runs: int, max_new_tokens: int) -> tuple[list[float], list[float]]:
    import httpx
    import openai

    from worker.executors.gpt import GptExecutor

    async with gateway_network(root, lambda i: [GptExecutor("cpu")]) as (app, key):
        base = f"http://{app.http_address}"
        client = openai.AsyncOpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
        http = httpx.AsyncClient(base_url=base, headers={"authorization": f"Bearer {key}"}, timeout=10)

        async def once(seed: int) -> tuple[float, float]:
            start = time.perf_counter()
            done = await client.chat.completions.create(model=model, messages=PROMPT, max_tokens=max_new_tokens,
                                                        seed=seed, temperature=0)
            validated = time.perf_counter() - start
            task_id = done.model_extra["helium"]["task_id"]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                task = (await http.get(f"/v1/tasks/{task_id}")).json()
                if sum(a["state"] in ("submitted", "errored", "expired") for a in task["assignments"]) >= 3:
                    return validated, time.perf_counter() - start
                await asyncio.sleep(0.005)
            raise TimeoutError(f"task {task_id}: the third node did not finish within 60 s")

        try:
            await once(1)  # warm-up: every node loads the model
            validated, slowest = [], []
            for i in range(runs):
                v, s = await once(100 + i)
                validated.append(v)
                slowest.append(s)
                await asyncio.sleep(0.2)  # let the straggler's stream settle before the next task
            return validated, slowest
        finally:
            await client.close()
            await http.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quorum_latency", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args(argv)
    with tmpdir() as tmp:
        root = Path(tmp)
        model = prepare_model(root)
        validated, slowest = asyncio.run(measure(root, model, args.runs, args.max_tokens))
    v, s = median_ms(validated), median_ms(slowest)
    print(f"validated_answer   median {v:8.1f} ms  runs={[round(x * 1000, 1) for x in validated]}")
    print(f"slowest_execution  median {s:8.1f} ms  runs={[round(x * 1000, 1) for x in slowest]}")
    print(f"figure=time_to_quorum value={v:.1f} unit=ms baseline=slowest_execution ratio={v / s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
