"""SdExecutor on tiny random-weight pipelines: every field of the task is honoured, outputs are hashed right."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
import torch
from PIL import Image

from chain.signing import sd_result_hash
from worker.errors import (
    ExecutionCrashError,
    InvalidArgsError,
    ModelNotFoundError,
    OutOfMemoryError,
)
from worker.executors.base import Executor
from worker.executors.sd import SdExecutor
from worker.executors.sd._images import phash64
from worker.tiny_sd import TI_TOKEN, TINY_LORA_FILE

SD15 = "helium-tiny/sd15"
SDXL = "helium-tiny/sdxl"

# One pytest-xdist worker runs all SD tests: diffusers is imported and the tiny models built once.
pytestmark = pytest.mark.xdist_group("sd")


def task(base=SD15, *, w=64, h=64, steps=2, seed=1, n=1, **extra) -> dict:
    doc = {"base_model": base, "prompt": "a lighthouse at dusk, oil painting", "negative_prompt": "blurry",
           "task_config": {"image_width": w, "image_height": h, "steps": steps, "seed": seed, "num_images": n,
                           "cfg": 7}}
    doc.update(extra)
    return doc


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def test_is_an_executor(sd):
    run, _ = sd
    assert isinstance(run.executor, Executor) and run.executor.task_type == "sd"


def test_every_field_of_the_example_is_honoured(sd, stripes_url):
    """The issue's example, scaled down: SDXL + LoRA + ControlNet(canny) + refiner + Euler ancestral."""
    run, rec = sd
    doc = task(SDXL, w=64, h=48, steps=4, seed=42, n=2,
               lora={"model": "helium-tiny/lora-xl", "weight_file_name": TINY_LORA_FILE, "weight": 80},
               controlnet={"model": "helium-tiny/controlnet-xl", "image_dataurl": stripes_url, "weight": 70,
                           "preprocess": {"method": "canny", "args": {"low_threshold": 100, "high_threshold": 200}}},
               vae="", textual_inversion="",
               refiner={"model": "helium-tiny/sdxl-refiner", "denoising_cutoff": 50, "steps": 4},
               scheduler={"method": "EulerAncestralDiscreteScheduler", "args": {}}, dtype="auto")
    doc["base_model"] = {"name": SDXL, "variant": "fp16"}  # no fp16 files: falls back to the default weights
    out = run(doc)
    # count and size
    assert out.images == 2 and len(out.blobs) == 2 and len(out.phashes) == 2
    for i, blob in enumerate(out.blobs):
        assert blob.suffix == str(i) and blob.content_type == "image/png"
        assert Image.open(io.BytesIO(blob.data)).size == (64, 48)
    # the pipeline, the scheduler and the steps, as seen from inside the denoising loop
    base, refiner = rec.stage("base"), rec.stage("refiner")
    assert {e.pipeline for e in base} == {"StableDiffusionXLControlNetPipeline"}
    assert {e.pipeline for e in refiner} == {"StableDiffusionXLImg2ImgPipeline"}
    assert {e.scheduler for e in rec.events} == {"EulerAncestralDiscreteScheduler"}
    # cutoff 50%: the base does the first half of its 4 steps, the refiner the second half of its 4
    assert [e.step for e in base] == [0, 1] and [e.step for e in refiner] == [0, 1]
    assert min(e.timestep for e in base) > max(e.timestep for e in refiner)
    assert out.steps == 4
    # the manifest and the signed hash
    manifest = json.loads(out.output)
    assert [r["index"] for r in manifest["images"]] == [0, 1]
    for rec_, blob, ph in zip(manifest["images"], out.blobs, out.phashes, strict=True):
        assert rec_["phash"] == f"{ph:016x}" and len(rec_["phash"]) == 16
        assert rec_["sha256"] == hashlib.sha256(blob.data).hexdigest()
        assert (rec_["width"], rec_["height"]) == (64, 48)
    assert out.result_hash == sd_result_hash(list(out.phashes)) and len(out.result_hash) == 32


@pytest.mark.parametrize("steps", [1, 3])
def test_step_count_observed_through_the_callback(sd, steps):
    run, rec = sd
    out = run(task(steps=steps, scheduler={"method": "EulerAncestralDiscreteScheduler"}))
    assert [e.step for e in rec.stage("base")] == list(range(steps))
    assert out.steps == steps


@pytest.mark.parametrize("method", ["DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler", "LCMScheduler"])
def test_scheduler_class(sd, method):
    run, rec = sd
    run(task(scheduler={"method": method}))
    assert {e.scheduler for e in rec.events} == {method}


def test_default_scheduler_is_dpm_solver_and_args_reach_it(sd):
    run, rec = sd
    run(task())
    assert {e.scheduler for e in rec.events} == {"DPMSolverMultistepScheduler"}
    euler = {"method": "EulerAncestralDiscreteScheduler"}
    run(task(steps=3, scheduler={**euler, "args": {"timestep_spacing": "leading"}}))
    assert [e.timestep for e in rec.events] == [667.0, 334.0, 1.0]
    run(task(steps=3, scheduler={**euler, "args": {"timestep_spacing": "trailing"}}))
    assert [e.timestep for e in rec.events] == [999.0, 666.0, 332.0]


def test_unknown_scheduler_argument_is_invalid(sd):
    run, _ = sd
    with pytest.raises(InvalidArgsError, match="scheduler.args.flux_capacitor is not an argument of LCMScheduler"):
        run(task(scheduler={"method": "LCMScheduler", "args": {"flux_capacitor": 1}}))


def test_size_and_count(sd):
    run, _ = sd
    out = run(task(w=48, h=80, n=3))
    assert out.images == 3 and [Image.open(io.BytesIO(b.data)).size for b in out.blobs] == [(48, 80)] * 3


def test_lora_changes_the_output_at_its_weight_and_leaves_the_cache_clean(sd):
    run, _ = sd
    plain = run(task()).phashes
    lora = {"model": "helium-tiny/lora", "weight_file_name": TINY_LORA_FILE}
    full = run(task(lora={**lora, "weight": 100})).phashes
    half = run(task(lora={**lora, "weight": 40})).phashes
    zero = run(task(lora={**lora, "weight": 0})).phashes
    assert full != plain and half != full
    assert sum(hamming(a, b) for a, b in zip(full, plain, strict=True)) > 0
    assert zero == plain  # adapter scale weight/100 = 0
    assert run(task()).phashes == plain  # unloaded after the task


def test_controlnet_conditioning_changes_the_output(sd, stripes_url, rings_url):
    run, rec = sd
    plain = run(task()).phashes
    cn = {"model": "helium-tiny/controlnet", "preprocess": {"method": "canny"}}
    stripes = run(task(controlnet={**cn, "image_dataurl": stripes_url})).phashes
    assert {e.pipeline for e in rec.events} == {"StableDiffusionControlNetPipeline"}
    rings = run(task(controlnet={**cn, "image_dataurl": rings_url})).phashes
    off = run(task(controlnet={**cn, "image_dataurl": rings_url, "weight": 0})).phashes
    assert stripes != plain and rings != plain and stripes != rings
    assert off == plain  # conditioning scale weight/100 = 0
    raw = run(task(controlnet={"model": "helium-tiny/controlnet", "image_dataurl": rings_url})).phashes
    assert raw != rings  # no preprocessing: the image itself conditions


def test_refiner_runs_its_steps(sd):
    run, rec = sd
    no_ref = run(task(SDXL, steps=4, scheduler={"method": "EulerAncestralDiscreteScheduler"}))
    out = run(task(SDXL, steps=4, scheduler={"method": "EulerAncestralDiscreteScheduler"},
                   refiner={"model": "helium-tiny/sdxl-refiner", "denoising_cutoff": 25, "steps": 8}))
    base, ref = rec.stage("base"), rec.stage("refiner")
    assert len(base) == 1 and len(ref) == 6  # 25% of 4 base steps; 75% of 8 refiner steps
    assert out.steps == 7 and out.phashes != no_ref.phashes
    full = run(task(SDXL, steps=4, refiner={"model": "helium-tiny/sdxl-refiner", "denoising_cutoff": 100}))
    assert rec.stage("refiner") == [] and full.steps == 4  # cutoff 100: the base does everything


def test_refiner_needs_an_sdxl_base(sd):
    run, _ = sd
    with pytest.raises(InvalidArgsError, match="refiner.model: a refiner needs an SDXL-style base model"):
        run(task(refiner={"model": "helium-tiny/sdxl-refiner"}))


def test_vae_override_changes_the_output(sd):
    run, _ = sd
    assert run(task(vae="helium-tiny/vae")).phashes != run(task()).phashes


def test_textual_inversion_is_loaded_and_unloaded(sd):
    run, _ = sd
    prompt = f"a {TI_TOKEN} at dusk"
    without = run({**task(), "prompt": prompt}).phashes
    with_ti = run({**task(), "prompt": prompt, "textual_inversion": "helium-tiny/textual-inversion"}).phashes
    assert with_ti != without
    assert run({**task(), "prompt": prompt}).phashes == without
    # twice in a row: the token is taken out after each task, so loading it again works
    assert run({**task(), "prompt": prompt, "textual_inversion": "helium-tiny/textual-inversion"}).phashes == with_ti


def test_safety_checker_switch(sd_models_dir, sd):
    from worker.tiny_sd import build_tiny_sd

    build_tiny_sd("sd15-safety", sd_models_dir / "helium-tiny/sd15-safety")
    run, _ = sd
    doc = task("helium-tiny/sd15-safety", n=2)
    on = run(_cfg(doc, safety_checker=True))
    off = run(_cfg(doc, safety_checker=False))
    assert [r["nsfw"] for r in json.loads(on.output)["images"]] == [True, True]
    assert all(Image.open(io.BytesIO(b.data)).getextrema() == ((0, 0),) * 3 for b in on.blobs)  # blacked out
    assert [r["nsfw"] for r in json.loads(off.output)["images"]] == [False, False]
    assert on.phashes != off.phashes


def _cfg(doc: dict, **values) -> dict:
    return {**doc, "task_config": {**doc["task_config"], **values}}


def test_seed_per_image_and_batching_does_not_change_images(sd_models_dir, sd):
    run, _ = sd
    four = run(task(n=4, seed=10)).phashes
    assert len(set(four)) == 4
    assert run(task(n=1, seed=12)).phashes == (four[2],)  # image i uses seed + i
    small = SdExecutor(run.executor.config.__class__(models_dir=sd_models_dir, max_batch=3), device="cpu")
    from helium.tasks.sd import load_sd_task
    from worker.executors.base import Job

    assert small.run(Job("t", "a", load_sd_task(task(n=4, seed=10)))).phashes == four


def test_phashes_survive_png_round_trip(sd):
    run, _ = sd
    out = run(task(n=2, w=96, h=64))
    for blob, ph in zip(out.blobs, out.phashes, strict=True):
        img = Image.open(io.BytesIO(blob.data))
        again = io.BytesIO()
        img.save(again, format="PNG", compress_level=1)
        assert phash64(again.getvalue()) == ph == phash64(blob.data)


def test_different_seeds_give_different_phashes(sd):
    run, _ = sd
    assert run(task(seed=1)).phashes != run(task(seed=2)).phashes
    assert run(task(seed=1)).phashes == run(task(seed=1)).phashes


def test_bad_args_are_invalid_args_naming_the_field(sd):
    run, _ = sd
    with pytest.raises(InvalidArgsError, match=r"task_config.steps must be in \[1, 100\], got 0"):
        run(task(steps=0))
    with pytest.raises(InvalidArgsError, match="task_config.image_width must be a positive multiple of 8, got 60"):
        run(task(w=60))


def test_size_cap_setting_of_the_executor(sd_models_dir):
    from helium.tasks.sd import load_sd_task
    from worker.executors.base import Job
    from worker.executors.sd import SdExecutorConfig

    ex = SdExecutor(SdExecutorConfig(models_dir=sd_models_dir, max_pixels=64 * 64), device="cpu")
    assert ex.capabilities().extra["max_pixels"] == 64 * 64
    with pytest.raises(InvalidArgsError, match="at most 4096 pixels, got 64×72"):
        ex.run(Job("t", "a", load_sd_task(task(h=72))))


@pytest.mark.parametrize(("field", "value"), [("base_model", "nobody/nothing"), ("vae", "nobody/vae"),
                                              ("lora", {"model": "nobody/lora"}),
                                              ("refiner", {"model": "nobody/refiner"})])
def test_unknown_model_is_model_not_found(sd, field, value):
    run, _ = sd
    doc = task(SDXL) | {field: value}
    with pytest.raises(ModelNotFoundError, match="nobody/"):
        run(doc)


def test_missing_lora_file_is_model_not_found(sd):
    run, _ = sd
    with pytest.raises(ModelNotFoundError, match="lora.weight_file_name"):
        run(task(lora={"model": "helium-tiny/lora", "weight_file_name": "other.safetensors"}))


def test_lora_for_another_architecture_is_invalid_args(sd):
    run, _ = sd
    with pytest.raises(InvalidArgsError, match="lora.model"):
        run(task(lora={"model": "helium-tiny/lora-xl", "weight_file_name": TINY_LORA_FILE}))
    assert run(task()).phashes == run(task()).phashes  # the pipeline is still usable


def test_oom_and_crash_are_translated(sd, monkeypatch):
    run, _ = sd

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(SdExecutor, "_generate", oom)
    with pytest.raises(OutOfMemoryError):
        run(task())

    def crash(*a, **k):
        raise RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR")

    monkeypatch.setattr(SdExecutor, "_generate", crash)
    with pytest.raises(ExecutionCrashError, match="CUDNN_STATUS_INTERNAL_ERROR"):
        run(task())


def test_cancel_between_steps(sd):
    run, rec = sd
    with pytest.raises(ExecutionCrashError, match="cancelled"):
        run(task(steps=5), is_cancelled=lambda: True)
    assert len(rec.events) == 1


def test_capabilities(sd):
    run, _ = sd
    run(task())
    caps = run.executor.capabilities()
    assert caps.task_type == "sd" and caps.backends == ("diffusers",)
    assert "float32" in caps.dtypes and "auto" not in caps.dtypes
    assert SD15 in caps.loaded_models and "helium-tiny/lora" in caps.cached_models
    assert caps.extra["vram_bytes"] > 0 and caps.extra["max_pixels"] > 0
    assert set(caps.extra["schedulers"]) == {"DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler",
                                             "LCMScheduler"}


def test_shared_cache_close_evicts_only_sd_models(sd_models_dir):
    from helium.tasks.sd import load_sd_task
    from worker.executors.base import Job
    from worker.executors.sd import SdExecutorConfig
    from worker.models import CacheKey, ModelCache

    cache = ModelCache(1 << 30)
    cache.get_or_load(CacheKey("some/llm", "cpu/float32"), lambda: object(), size_of=lambda _: 10)
    ex = SdExecutor(SdExecutorConfig(models_dir=sd_models_dir), cache=cache, device="cpu")
    ex.run(Job("t", "a", load_sd_task(task())))
    assert set(cache.loaded()) == {"some/llm", SD15}
    assert ex.capabilities().loaded_models == (SD15,)
    ex.close()
    assert cache.loaded() == ("some/llm",)
