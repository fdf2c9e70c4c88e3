"""Cross-process determinism: separate worker processes give the same GPT task identical token ids and result
hash (one of them ran another task first); a different seed gives a different hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.tiny import build_tiny_model

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("gpt_worker_proc.py")


def task_json(model: str, seed: int) -> str:
    return json.dumps({
        "model": model,
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}],
        "generation_config": {"max_new_tokens": 24, "do_sample": True, "temperature": 0.7, "top_p": 0.9,
                              "top_k": 50, "min_p": 0.05, "typical_p": 1.0, "num_beams": 1,
                              "repetition_penalty": 1.1, "num_return_sequences": 2, "stop_strings": ["###"]},
        "seed": seed, "dtype": "float32"})


def spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.strip().splitlines() if line.startswith("{")]


@pytest.mark.timeout(300)
def test_three_processes_agree_and_another_seed_differs(tmp_path):
    llama = str(build_tiny_model("llama-tools", tmp_path / "llama"))
    gpt2 = str(build_tiny_model("gpt2-plain", tmp_path / "gpt2"))
    before = json.dumps({"model": gpt2, "messages": [{"role": "user", "content": "warm up"}],
                         "generation_config": {"max_new_tokens": 8, "do_sample": True}, "seed": 7})
    procs = [spawn(task_json(llama, 42)), spawn(task_json(llama, 42), "--before", before),
             spawn(task_json(llama, 42), task_json(llama, 43))]
    (a,), (b,), (c, other) = (collect(p) for p in procs)
    assert a["token_ids"] == b["token_ids"] == c["token_ids"]
    assert len(a["token_ids"]) == 2 and all(a["token_ids"])
    assert a["result_hash"] == b["result_hash"] == c["result_hash"]
    assert a["output"]["choices"] == b["output"]["choices"] == c["output"]["choices"]
    assert a["output"]["id"] == b["output"]["id"]
    assert other["result_hash"] != a["result_hash"] and other["token_ids"] != a["token_ids"]
