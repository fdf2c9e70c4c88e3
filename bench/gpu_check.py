"""The prepared GPU check: turns a short loan of a GPU machine into one JSON report of facts.

    bash bench/gpu_check.sh            # on the lent machine (installs the carried wheels first)
    python -m bench.gpu_check --out DIR [--cpu] [--only gpt_determinism,sd_phash,...]

Each check builds its models on the spot, random weights at realistic sizes, and puts them where a
worker's ordinary loading code finds a hub model (the Hugging Face cache, or the SD models folder):

- `gpt_determinism`: a ~1B-parameter Llama; three worker processes run the same greedy and seeded
  sampled tasks (one of them ran another task first) and must give identical token ids and result
  hashes, in bfloat16 and float16; another seed must differ.
- `executor_overhead`: tokens/s through `GptExecutor` against a raw `model.generate` on the same
  loaded model, same prompt, seed and length.
- `sd_phash`: an SD 1.5-shaped pipeline (~1B-parameter UNet); pHash Hamming distances between two
  executors on the card, in float16 and float32, and between the card and the CPU (float32).
- `bnb_quantized`: bitsandbytes INT8 and INT4 give the same result twice, with quantized layers.
- `proof_tolerance`: the cross-card tolerance of proof validation (reported as not built until the
  proof mode exists).
- `gpu_tests`: every `gpu`-marked test, with a JUnit XML beside the report.

`--cpu` (chosen by itself when no CUDA device is present) runs the same checks with the tiny models
and float32 on the CPU, so that CI keeps this script, its imports and its report format from rotting
between loans. One failing check never stops the others: each records its error.

The report's last line on stdout is `figure=gpu_check value=<checks passed> unit=checks
baseline=checks_run ratio=<passed/run>`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ("env", "gpt_determinism", "executor_overhead", "sd_phash", "bnb_quantized", "proof_tolerance",
          "gpu_tests")
REPORT = "gpu_check.json"
GPT_ID = "helium-check/llama"
TASK_ID = "0x" + "22" * 32


class Mode:
    """What differs between the card and the CPU run: device, dtypes, model sizes, task sizes."""

    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu
        self.device = "cpu" if cpu else "cuda"
        self.dtypes = ("float32",) if cpu else ("bfloat16", "float16")
        self.sd_dtypes = ("float32",) if cpu else ("float16", "float32")
        self.sd_kind = "sd15" if cpu else "sd15-shape"
        self.sd_size, self.sd_steps = (64, 4) if cpu else (256, 10)
        self.tokens = 8 if cpu else 64
        self.rounds = 2 if cpu else 6


# ---------------------------------------------------------------- models, built where a hub model would be


def build_llama(mode: Mode, cache: Path) -> str:
    """The tiny tools Llama (CPU) or a ~1B-parameter Llama (card) in the HF cache layout, under GPT_ID."""
    import hashlib

    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from worker.tiny import build_tiny_model, build_tiny_tokenizer, tiny_llama_config

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m"
        if mode.cpu:
            build_tiny_model("llama-tools", src)
        else:
            tok = build_tiny_tokenizer("llama-tools")
            ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
                   "pad_token_id": tok.pad_token_id}
            config = tiny_llama_config(len(tok), hidden_size=2048, layers=16, heads=32, kv_heads=8,
                                       intermediate_size=8192, context=4096, **ids)
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
            model.generation_config = GenerationConfig(**ids)
            model.save_pretrained(src, safe_serialization=True)
            tok.save_pretrained(src)
            del model
            torch.cuda.empty_cache()
        repo = cache / ("models--" + GPT_ID.replace("/", "--"))
        revision = hashlib.sha1(str(mode.cpu).encode()).hexdigest()
        snap = repo / "snapshots" / revision
        snap.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            os.replace(f, snap / f.name)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return GPT_ID


def gpt_task(model: str, *, seed: int, dtype: str, sample: bool, tokens: int, **extra) -> dict:
    gen = {"max_new_tokens": tokens, "do_sample": sample}
    if sample:
        gen |= {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "num_return_sequences": 2}
    return {"model": model, "messages": [{"role": "system", "content": "You are helpful."},
                                         {"role": "user", "content": "Write about the sea."}],
            "generation_config": gen, "seed": seed, "dtype": dtype, **extra}


# ---------------------------------------------------------------- the checks


def check_env(mode: Mode, work: Path) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "transformers", "diffusers", "accelerate", "bitsandbytes", "safetensors", "numpy"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"ok": True, "figures": {"mode": "cpu" if mode.cpu else "cuda", "card": card,
                                    "cuda": torch.version.cuda, "python": platform.python_version(),
                                    "cpus": os.cpu_count(), "versions": versions}}


def _spawn(mode: Mode, cache: Path, tasks: list[dict], before: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "bench.gpu_check", "--proc", "--device", mode.device]
    if before:
        args += ["--before", json.dumps(before)]
    return subprocess.Popen([*args, *(json.dumps(t) for t in tasks)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _collect(proc: subprocess.Popen) -> list[dict]:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"worker process exited {proc.returncode}: {err[-2000:]}")
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def check_gpt_determinism(mode: Mode, work: Path) -> dict:
    cache = work / "hf"
    model = build_llama(mode, cache)
    figures, ok = {}, True
    for dtype in mode.dtypes:
        tasks = [gpt_task(model, seed=42, dtype=dtype, sample=False, tokens=mode.tokens),
                 gpt_task(model, seed=42, dtype=dtype, sample=True, tokens=mode.tokens)]
        other = gpt_task(model, seed=43, dtype=dtype, sample=True, tokens=mode.tokens)
        warm = gpt_task(model, seed=5, dtype=dtype, sample=True, tokens=8)
        procs = [_spawn(mode, cache, tasks), _spawn(mode, cache, tasks, before=warm),
                 _spawn(mode, cache, [*tasks, other])]
        a, b, c = (_collect(p) for p in procs)
        same = [a[i]["token_ids"] == b[i]["token_ids"] == c[i]["token_ids"]
                and a[i]["result_hash"] == b[i]["result_hash"] == c[i]["result_hash"] for i in range(2)]
        differs = c[2]["result_hash"] != a[1]["result_hash"]
        figures[dtype] = {"greedy_identical": same[0], "sampled_identical": same[1], "other_seed_differs": differs,
                          "tokens": [len(t) for t in a[1]["token_ids"]]}
        ok = ok and all(same) and differs
    return {"ok": ok, "figures": figures}


def check_executor_overhead(mode: Mode, work: Path) -> dict:
    from bench.executor_overhead import measure

    cache = work / "hf"
    if not (cache / ("models--" + GPT_ID.replace("/", "--"))).exists():
        build_llama(mode, cache)
    dtype = mode.dtypes[0]
    m = measure(GPT_ID, rounds=mode.rounds, tokens=mode.tokens * 2, device=mode.device, dtype=dtype)
    return {"ok": m["tokens"] > 0, "figures": {"dtype": dtype, "tokens": m["tokens"],
                                               "helium_tok_s": round(m["helium_tok_s"], 2),
                                               "raw_tok_s": round(m["raw_tok_s"], 2),
                                               "ratio": round(m["wall_ratio"], 3)}}


def check_sd_phash(mode: Mode, work: Path) -> dict:
    import torch

    from helium.tasks.sd import load_sd_task
    from worker.executors.base import Job
    from worker.executors.sd import SdExecutor, SdExecutorConfig
    from worker.tiny_sd import TINY_NAMES, build_tiny_models

    models = work / "sd"
    if mode.cpu:
        build_tiny_models(models, kinds=(mode.sd_kind,))
    else:
        with torch.device("cuda"):
            build_tiny_models(models, kinds=(mode.sd_kind,))
    cfg = SdExecutorConfig(models_dir=models)

    def hamming(xs, ys) -> list[int]:
        return [bin(x ^ y).count("1") for x, y in zip(xs, ys, strict=True)]

    def doc(dtype: str) -> dict:
        return {"base_model": TINY_NAMES[mode.sd_kind], "prompt": "a lighthouse at dusk, oil painting",
                "dtype": dtype, "task_config": {"image_width": mode.sd_size, "image_height": mode.sd_size,
                                                "steps": mode.sd_steps, "seed": 3, "num_images": 2}}

    node_a, node_b = SdExecutor(cfg, device=mode.device), SdExecutor(cfg, device=mode.device)
    figures, ok, first = {}, True, {}
    for dtype in mode.sd_dtypes:
        t0 = time.perf_counter()
        a = node_a.run(Job("t", "a", load_sd_task(doc(dtype)))).phashes
        seconds = time.perf_counter() - t0
        b = node_b.run(Job("t", "b", load_sd_task(doc(dtype)))).phashes
        first[dtype] = a
        same = hamming(a, b)
        figures[dtype] = {"same_card": same, "seconds_per_task": round(seconds, 2)}
        ok = ok and max(same) < 5  # the validation threshold
    node_a.close()
    node_b.close()
    if not mode.cpu:
        cpu = SdExecutor(cfg, device="cpu")
        c = cpu.run(Job("t", "c", load_sd_task(doc("float32")))).phashes
        cpu.close()
        figures["cuda_fp32_vs_cpu_fp32"] = hamming(first["float32"], c)  # reported: random weights say little
    return {"ok": ok, "figures": figures}


def check_bnb_quantized(mode: Mode, work: Path) -> dict:
    try:
        import bitsandbytes as bnb
    except Exception as e:  # noqa: BLE001 - the wheel may not have travelled, or may not load
        return {"ok": None, "skipped": f"bitsandbytes not importable here: {e}"}
    from helium.tasks.gpt import load_gpt_task
    from worker.executors.base import Job
    from worker.executors.gpt import GptExecutor

    cache = work / "hf"
    if not (cache / ("models--" + GPT_ID.replace("/", "--"))).exists():
        build_llama(mode, cache)
    figures, ok = {}, True
    dtype = "float32" if mode.cpu else "float16"
    for bits in (8, 4):
        ex = GptExecutor(device=mode.device, backend="transformers")
        if bits not in ex.capabilities().quantize_bits:
            figures[f"int{bits}"] = "not offered by the executor here"
            ex.close()
            continue
        doc = gpt_task(GPT_ID, seed=42, dtype=dtype, sample=True, tokens=mode.tokens, quantize_bits=bits)
        one = ex.execute(Job(TASK_ID, "a", load_gpt_task(doc)))
        two = ex.execute(Job(TASK_ID, "a", load_gpt_task(doc)))
        (key,) = ex.cache.keys()
        layer = ex.cache.get(key).model.model.layers[0].self_attn.q_proj
        quantized = isinstance(layer, bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt)
        same = one.outcome.result_hash == two.outcome.result_hash
        figures[f"int{bits}"] = {"deterministic": same, "quantized_layers": quantized}
        ok = ok and same and quantized
        ex.close()
    return {"ok": ok, "figures": figures}


def check_proof_tolerance(mode: Mode, work: Path) -> dict:
    try:
        import worker.executors.gpt as gpt

        if not hasattr(gpt, "validate_proof"):
            raise ImportError("no proof validation in worker.executors.gpt")
    except ImportError as e:
        return {"ok": None, "skipped": f"proof validation is not built yet ({e})"}
    return {"ok": None, "skipped": "proof validation exists, but this check has not been written for it"}


def check_gpu_tests(mode: Mode, work: Path, out: Path) -> dict:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text(errors="replace"))
    xml = out / "gpu-tests.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                           "-p", "no:xdist", f"--junitxml={xml}", *files], cwd=ROOT, capture_output=True,
                          text=True, timeout=1800)
    import xml.etree.ElementTree as ET

    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        counts = {k: int(suite.get(k, 0)) for k in counts}
    tail = (proc.stdout + proc.stderr)[-1500:]
    ok = proc.returncode in (0, 5) and counts["failures"] == counts["errors"] == 0
    return {"ok": ok, "figures": {"files": files, **counts, "exit": proc.returncode}, "tail": tail}


# ---------------------------------------------------------------- driver


def run_proc(args) -> int:
    """One worker process for `gpt_determinism`: runs the tasks, prints one JSON line per task."""
    from helium.tasks.gpt import load_gpt_task
    from worker.executors.base import Job
    from worker.executors.gpt import GptExecutor

    ex = GptExecutor(device=args.device, backend="transformers")
    if args.before:
        ex.run(Job(task_id="0x" + "11" * 32, assignment_id="before", spec=load_gpt_task(args.before)))
    for task in args.tasks:
        run = ex.execute(Job(task_id=TASK_ID, assignment_id="a", spec=load_gpt_task(task)))
        print(json.dumps({"result_hash": run.outcome.result_hash.hex(),
                          "token_ids": [list(c.token_ids) for c in run.choices]}), flush=True)
    return 0


def run_checks(out: Path, *, cpu: bool, only: tuple[str, ...]) -> dict:
    import torch

    mode = Mode(cpu or not torch.cuda.is_available())
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "mode": "cpu" if mode.cpu else "cuda",
              "checks": {}}
    with tempfile.TemporaryDirectory(prefix="helium-gpu-check-") as tmp:
        work = Path(tmp)
        # Before anything imports huggingface_hub, which reads its cache folder once.
        os.environ["HF_HUB_CACHE"] = str(work / "hf")
        for name in only:
            t0 = time.perf_counter()
            print(f"check {name} ...", flush=True)
            try:
                fn = globals()[f"check_{name}"]
                result = fn(mode, work, out) if name == "gpu_tests" else fn(mode, work)
            except Exception as e:  # noqa: BLE001 - one failing check must not hide the others' facts
                result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
            result["seconds"] = round(time.perf_counter() - t0, 1)
            report["checks"][name] = result
            said = result.get("figures", result.get("skipped", result.get("error")))
            print(f"check {name}: ok={result.get('ok')} {json.dumps(said)}", flush=True)
            (out / REPORT).write_text(json.dumps(report, indent=2))  # partial reports survive a timeout
    ran = [r for r in report["checks"].values() if r.get("ok") is not None]
    report["passed"] = sum(1 for r in ran if r["ok"])
    report["run"] = len(ran)
    report["ok"] = report["passed"] == report["run"]
    (out / REPORT).write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Helium's prepared GPU check")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    ap.add_argument("--cpu", action="store_true", help="tiny models, float32, on the CPU (CI)")
    ap.add_argument("--only", default=",".join(CHECKS), help="comma-separated checks, of: " + ", ".join(CHECKS))
    ap.add_argument("--proc", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--before", help=argparse.SUPPRESS)
    ap.add_argument("tasks", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.proc:
        return run_proc(args)
    only = tuple(c for c in args.only.split(",") if c)
    unknown = [c for c in only if c not in CHECKS]
    if unknown:
        ap.error(f"--only: unknown check(s) {', '.join(unknown)}; one of {', '.join(CHECKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    report = run_checks(args.out, cpu=args.cpu, only=only)
    ratio = report["passed"] / report["run"] if report["run"] else 0.0
    print(f"figure=gpu_check value={report['passed']} unit=checks baseline=checks_run ratio={ratio:.3f}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
