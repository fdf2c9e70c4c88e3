"""Helpers for the real-model tests: worker processes that run GPT tasks and print what they produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WORKER_PROC = ROOT / "tests" / "integration" / "gpt" / "gpt_worker_proc.py"


def spawn_worker(hf_cache: Path, *tasks: dict) -> subprocess.Popen:
    """A worker process (the GPT executor, its normal loading by hub id, offline) running `tasks` in order."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(hf_cache), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(WORKER_PROC), *(json.dumps(t) for t in tasks)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen, timeout: float = 420) -> list[dict]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]
