"""Images per second through SdExecutor.run against the raw diffusers pipeline call, in the same run.

Two models, both random-weight and built on the spot (`worker.tiny_sd`): the tiny
SD 1.5-style pipeline and the same pipeline with a ~100M-parameter UNet. For each,
the raw call (`pipe(prompt, ..., generator=[...])` on a pipeline loaded with
`from_pretrained`) and the executor (validation, model cache, per-task pipeline view,
scheduler, PNG encoding, pHashes, result hash) run the same task, alternating, after
one warm-up each. Time is the process's CPU time (one torch thread: steady on a
shared machine; `--wall` for wall-clock). Throughput is the median over rounds; the ratio is the median over
rounds of executor / raw within the round (its two runs are back to back, so they see
the same machine load).

    python -m bench.sd_executor [--rounds N] [--threads N]

Last line: figure=sd_executor_overhead value=<executor img/s, 100M UNet> unit=images/s
baseline=raw_diffusers ratio=<executor / raw>.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from helium.tasks.sd import load_sd_task
from worker.device import set_deterministic
from worker.executors.base import Job
from worker.executors.sd import SdExecutor, SdExecutorConfig
from worker.tiny_sd import TINY_NAMES, build_tiny_models

CASES = {
    # kind: (width, height, steps, images)
    "sd15": (64, 64, 4, 4),
    "sd15-100m": (64, 64, 3, 2),
}


# CPU seconds of this process: with one torch thread the work is single-threaded and CPU-bound, and unlike
# wall time this does not count the time other processes on a shared machine take the core away.
# `--wall` switches to wall-clock time (for a quiet machine).
_clock = time.process_time


def _raw_pipeline(path: Path):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _bench(kind: str, models: Path, executor: SdExecutor, rounds: int) -> tuple[float, float]:
    w, h, steps, n = CASES[kind]
    doc = {
        "base_model": TINY_NAMES[kind],
        "prompt": "a lighthouse at dusk, oil painting",
        "negative_prompt": "blurry",
        "task_config": {
            "image_width": w,
            "image_height": h,
            "steps": steps,
            "seed": 42,
            "num_images": n,
            "cfg": 7,
            "safety_checker": False,
        },
    }
    task = load_sd_task(doc)
    pipe = _raw_pipeline(models / TINY_NAMES[kind])

    def raw() -> float:
        t = _clock()
        gens = [torch.Generator("cpu").manual_seed(42 + i) for i in range(n)]
        with torch.inference_mode():
            out = pipe(
                prompt=doc["prompt"],
                negative_prompt=doc["negative_prompt"],
                width=w,
                height=h,
                num_inference_steps=steps,
                guidance_scale=7,
                num_images_per_prompt=n,
                generator=gens,
            )
        assert len(out.images) == n
        return n / (_clock() - t)

    def helium() -> float:
        t = _clock()
        out = executor.run(Job(task_id="bench", assignment_id="bench", spec=task))
        assert out.images == n
        return n / (_clock() - t)

    raw(), helium()  # warm-up: model loads, lazy imports, allocator
    raw_ips, exec_ips = [], []
    for r in range(rounds):
        for fn, acc in (
            ((raw, raw_ips), (helium, exec_ips)) if r % 2 == 0 else ((helium, exec_ips), (raw, raw_ips))
        ):
            acc.append(fn())
    print(f"  {kind} rounds (img/s): executor={[round(x, 3) for x in exec_ips]} "
          f"raw={[round(x, 3) for x in raw_ips]}", flush=True)
    # Each round's two runs are back to back, so they share the machine's load: compare within rounds.
    paired = statistics.median(e / r for e, r in zip(exec_ips, raw_ips, strict=True))
    return statistics.median(exec_ips), statistics.median(raw_ips), paired


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 keeps the timing steady on a shared machine",
    )
    ap.add_argument("--only", choices=tuple(CASES), help="run one model only")
    ap.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.wall or args.threads != 1:
        global _clock
        _clock = time.perf_counter
    set_deterministic(0)
    with tempfile.TemporaryDirectory(prefix="helium-sd-bench-") as tmp:
        models = Path(tmp)
        kinds = (args.only,) if args.only else tuple(CASES)
        build_tiny_models(models, kinds=kinds)
        executor = SdExecutor(SdExecutorConfig(models_dir=models), device="cpu")
        results = {}
        for kind in kinds:
            exec_ips, raw_ips, ratio = _bench(kind, models, executor, args.rounds)
            results[kind] = (exec_ips, ratio)
            w, h, steps, n = CASES[kind]
            print(
                f"{kind}: {w}x{h} steps={steps} images={n}  executor={exec_ips:.3f} img/s  "
                f"raw_diffusers={raw_ips:.3f} img/s  ratio={ratio:.3f}",
                flush=True,
            )
        executor.close()
    exec_ips, ratio = results[kinds[-1]]
    print(
        f"figure=sd_executor_overhead value={exec_ips:.3f} unit=images/s baseline=raw_diffusers "
        f"ratio={ratio:.3f}"
    )


if __name__ == "__main__":
    main()
