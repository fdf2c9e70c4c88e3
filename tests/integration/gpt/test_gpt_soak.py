"""Determinism soak (issue #13 item 9): 210 mixed GPT tasks (greedy, sampled by the task or by the model's own
config, beams, tools, n > 1, long prompts, stop strings, streamed) in a different order on each of three worker
processes, with another thread drawing from the process-wide generator. Every task must give the same result
hash on all three; the results then go through the coordinator's validation and settlement rules, and no
node may be slashed. Prints `soak tasks=... mismatches=... false_slashes=...`. Before the tools fix
(worker/executors/gpt/_prompt.py) 30 of 240 tasks differed, every one a tools task: the schema's protobuf map
order is random per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.service import validation
from coordinator.service.judging import CONFIRMATIONS
from worker.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("gpt_soak_proc.py")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def soak_tasks(models: dict[str, str], count: int = 210) -> list[dict]:
    kinds = [
        ("greedy", {"do_sample": False}),
        ("sampled", {"do_sample": True, "temperature": 0.9, "top_p": 0.95, "top_k": 40}),
        ("model_default", {}),  # the model's own generation_config turns sampling on
        ("beams", {"do_sample": False, "num_beams": 3, "num_return_sequences": 2}),
        ("n3", {"do_sample": True, "num_return_sequences": 3, "min_p": 0.05}),
        ("stop", {"do_sample": True, "stop_strings": ["e"], "repetition_penalty": 1.2}),
    ]
    out = []
    for i in range(count):
        name, gen = kinds[i % len(kinds)]
        model = models["llama-tools"] if i % 5 else models[("gpt2-plain", "system-prompt")[i % 2]]
        long = i % 4 == 0
        doc = {"model": model, "seed": i, "dtype": "float32",
               "messages": [{"role": "user", "content": ("Tell me about Paris. " * (12 if long else 1)) + str(i)}],
               "generation_config": {"max_new_tokens": 6 + i % 7, **gen}}
        if i % 3 == 0 and model == models["llama-tools"]:
            doc["tools"] = TOOLS  # a ~600-token prompt, as in the report
        out.append({"id": f"{i:04x}", "task": doc, "stream": i % 2 == 0 and name != "beams"})
    return out


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_three_processes_in_different_orders_agree_on_every_task(tmp_path):
    models = {k: str(build_tiny_model(k, tmp_path / k)) for k in ("llama-tools", "gpt2-plain", "system-prompt")}
    tasks = soak_tasks(models)
    (tmp_path / "tasks.json").write_text(json.dumps(tasks))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), str(tmp_path / "tasks.json"), str(order)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for order in (1, 2, 3)]  # fmt: skip
    runs = []
    for p in procs:
        out, err = p.communicate(timeout=1100)  # ~30 s of CPU each; a shared host may stretch it
        assert p.returncode == 0, err[-3000:]
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        assert lines[-1] == {"done": len(tasks)}
        runs.append({x["id"]: bytes.fromhex(x["result_hash"]) for x in lines[:-1]})
    mismatches = slashes = 0
    differing = []
    for t in tasks:
        hashes = [r[t["id"]] for r in runs]
        if len(set(hashes)) > 1:
            differing.append((t["id"], sorted(t["task"]["generation_config"]), "tools" in t["task"]))
        subs = [validation.Submission(f"node{k}", k + 1, h) for k, h in enumerate(hashes)]
        decision = validation.decide("gpt", subs)
        mismatches += len(set(hashes)) > 1
        # Settlement's rule: evidence only against a result that CONFIRMATIONS matching ones disagree with.
        slashes += bool(decision.outliers) and len(decision.winners) >= CONFIRMATIONS
    print(f"soak tasks={len(tasks)} processes=3 mismatches={mismatches} false_slashes={slashes}")
    assert mismatches == 0 and slashes == 0, differing[:10]
