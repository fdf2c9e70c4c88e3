"""Same task, three separate worker processes: identical pHashes; another seed: different ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from worker.tiny_sd import build_tiny_models

REPO = Path(__file__).resolve().parents[3]

WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from helium.tasks.sd import load_sd_task
    from worker.executors.base import Job
    from worker.executors.sd import SdExecutor, SdExecutorConfig

    ex = SdExecutor(SdExecutorConfig(models_dir=Path(sys.argv[1])), device="cpu")
    out = {}
    for name, doc in json.loads(sys.argv[2]).items():
        o = ex.run(Job(task_id="t-" + name, assignment_id="a", spec=load_sd_task(doc)))
        out[name] = {"phashes": [f"{p:016x}" for p in o.phashes], "result_hash": o.result_hash.hex()}
    print(json.dumps(out))
""")


def _task(base: str, seed: int, **extra) -> dict:
    return {"base_model": base, "prompt": "a lighthouse at dusk, oil painting",
            "task_config": {"image_width": 64, "image_height": 64, "steps": 3, "seed": seed, "num_images": 3},
            **extra}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_processes_agree_and_seeds_differ(tmp_path):
    models = tmp_path / "models"
    build_tiny_models(models, kinds=("sd15", "sdxl", "sdxl-refiner"))
    euler = {"scheduler": {"method": "EulerAncestralDiscreteScheduler"}}  # draws noise at every step
    tasks = {
        "sd15_seed7": _task("helium-tiny/sd15", 7),
        "sd15_seed100": _task("helium-tiny/sd15", 100),
        "sdxl_refined": _task("helium-tiny/sdxl", 7, refiner={"model": "helium-tiny/sdxl-refiner",
                                                            "denoising_cutoff": 50, "steps": 4}, **euler),
    }
    # One thread each: three processes share the CI machine's two cores.
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(models), json.dumps(tasks)], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=500)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1] == results[2]
    r = results[0]
    assert len(r["sd15_seed7"]["phashes"]) == 3 and len(set(r["sd15_seed7"]["phashes"])) == 3
    assert set(r["sd15_seed7"]["phashes"]).isdisjoint(r["sd15_seed100"]["phashes"])
    assert r["sd15_seed7"]["result_hash"] != r["sd15_seed100"]["result_hash"]
