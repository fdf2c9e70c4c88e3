"""The prepared GPU check keeps working between loans: its CPU mode runs here as on CI, with the same script,
imports and report format the lent GPU machine uses (bench/gpu_check.sh, bench/gpu_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bench import gpu_check, gpu_wheels

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cpu_mode_runs_every_check_and_writes_the_report(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("figure=gpu_check value=") and " unit=checks baseline=checks_run ratio=1.000" in last
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "cpu" and report["ok"] is True
    assert set(report["checks"]) == set(gpu_check.CHECKS)
    det = report["checks"]["gpt_determinism"]["figures"]["float32"]
    assert det == det | {"greedy_identical": True, "sampled_identical": True, "other_seed_differs": True}
    assert report["checks"]["sd_phash"]["figures"]["float32"]["same_card"] == [0, 0]
    overhead = report["checks"]["executor_overhead"]["figures"]
    assert overhead["tokens"] > 0 and overhead["helium_tok_s"] > 0 and overhead["raw_tok_s"] > 0
    assert report["checks"]["gpu_tests"]["figures"]["tests"] >= 7  # the gpu-marked tests were collected
    assert (tmp_path / "gpu_check.log").read_text().strip().endswith(last)
    assert (tmp_path / "gpu-tests.xml").exists()


def test_an_unknown_check_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit) as e:
        gpu_check.main(["--out", str(tmp_path), "--only", "env,warp_drive"])
    assert e.value.code == 2


def test_wheels_are_pinned_to_this_venv():
    pins = gpu_wheels.pins()
    assert len(pins) == len(gpu_wheels.CARRY) and all("==" in p for p in pins)
    assert any(p.startswith("structlog==") for p in pins) and any(p.startswith("diffusers==") for p in pins)


def test_slim_bnb_drops_foreign_kernels_and_their_record_lines(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.0-py3-none-any.whl"
    names = ["bitsandbytes/__init__.py", "bitsandbytes/libbitsandbytes_cpu.so",
             "bitsandbytes/libbitsandbytes_cuda130.so", "bitsandbytes/libbitsandbytes_cuda118.so",
             "bitsandbytes/libbitsandbytes_rocm64.so"]
    with zipfile.ZipFile(wheel, "w") as z:
        for n in names:
            z.writestr(n, b"x" * 1000)
        z.writestr("bitsandbytes-0.0.dist-info/RECORD", "".join(f"{n},sha256=x,1000\n" for n in names))
    assert gpu_wheels.slim_bnb(wheel) > 0
    with zipfile.ZipFile(wheel) as z:
        kept = set(z.namelist())
        record = z.read("bitsandbytes-0.0.dist-info/RECORD").decode()
    assert kept == {*names[:3], "bitsandbytes-0.0.dist-info/RECORD"}
    assert "cuda118" not in record and "rocm64" not in record and "cuda130" in record
