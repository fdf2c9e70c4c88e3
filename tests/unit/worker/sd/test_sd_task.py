"""The SD task definition: the JSON loader, the bounds, the defaults, the VRAM estimate and the JSON Schema."""

from __future__ import annotations

import base64
import copy
import io
import json
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from helium.tasks import TaskArgsError
from helium.tasks.sd import (
    DEFAULT_MAX_PIXELS,
    estimate_vram_bytes,
    load_sd_task,
    sd_defaults,
    validate_sd_task,
)

SCHEMA = json.loads((Path(__file__).parents[4] / "helium/schemas/sd_task.schema.json").read_text())


def _png_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# The issue's example, byte for byte except the elided data URL.
EXAMPLE = """
{"base_model": {"name": "stabilityai/stable-diffusion-xl-base-1.0", "variant": "fp16"},
 "prompt": "a lighthouse at dusk, oil painting", "negative_prompt": "blurry",
 "task_config": {"image_width": 1024, "image_height": 1024, "steps": 30, "seed": 42,
                 "num_images": 2, "safety_checker": true, "cfg": 7},
 "lora": {"model": "some/lora-repo", "weight_file_name": "lora.safetensors", "weight": 80},
 "controlnet": {"model": "some/controlnet", "image_dataurl": "data:image/png;base64,...", "weight": 70,
                "preprocess": {"method": "canny", "args": {"low_threshold": 100, "high_threshold": 200}}},
 "vae": "", "textual_inversion": "",
 "refiner": {"model": "stabilityai/stable-diffusion-xl-refiner-1.0", "denoising_cutoff": 80, "steps": 20},
 "scheduler": {"method": "EulerAncestralDiscreteScheduler", "args": {}},
 "dtype": "auto"}
"""


def example() -> dict:
    doc = json.loads(EXAMPLE)
    doc["controlnet"]["image_dataurl"] = _png_url()
    return doc


def test_issue_example_loads_unchanged():
    task = load_sd_task(EXAMPLE)
    assert task.base_model.name == "stabilityai/stable-diffusion-xl-base-1.0"
    assert task.base_model.variant == "fp16"
    assert task.negative_prompt == "blurry"
    c = task.task_config
    assert (c.image_width, c.image_height, c.steps, c.seed, c.num_images, c.safety_checker, c.cfg) == (
        1024, 1024, 30, 42, 2, True, 7.0)
    assert (task.lora.model, task.lora.weight_file_name, task.lora.weight) == ("some/lora-repo", "lora.safetensors", 80)
    assert task.controlnet.weight == 70 and task.controlnet.preprocess.method == "canny"
    assert dict(task.controlnet.preprocess.args) == {"low_threshold": 100, "high_threshold": 200}
    assert (task.refiner.denoising_cutoff, task.refiner.steps) == (80, 20)
    assert task.scheduler.method == "EulerAncestralDiscreteScheduler"
    assert task.dtype == "auto"
    # With a real image in place of "...", the example is valid and fits the schema.
    validate_sd_task(load_sd_task(example()))
    jsonschema.validate(example(), SCHEMA)


def test_plain_string_base_model_and_defaults():
    task = load_sd_task({"base_model": "runwayml/stable-diffusion-v1-5", "prompt": "a cat"})
    assert task.base_model.name == "runwayml/stable-diffusion-v1-5"
    validate_sd_task(task)
    full = sd_defaults(task)
    c = full.task_config
    assert (c.image_width, c.image_height, c.steps, c.seed, c.num_images, c.safety_checker, c.cfg) == (
        512, 512, 25, 0, 6, True, 5.0)
    assert full.scheduler.method == "DPMSolverMultistepScheduler"
    assert full.dtype == "auto"
    assert not task.HasField("task_config")  # defaults are filled in a copy only


def test_defaults_keep_given_values_and_fill_weights():
    task = load_sd_task({"base_model": "a/b", "prompt": "p", "task_config": {"steps": 7, "safety_checker": False},
                         "lora": {"model": "a/lora"}, "controlnet": {"model": "a/cn", "image_dataurl": _png_url()},
                         "refiner": {"model": "a/ref"}})
    full = sd_defaults(task)
    assert full.task_config.steps == 7 and full.task_config.safety_checker is False
    assert full.task_config.num_images == 6
    assert full.lora.weight == 100 and full.controlnet.weight == 100
    assert full.refiner.denoising_cutoff == 80 and full.refiner.steps == 7


def test_seed_accepts_the_proto_string_form_of_uint64():
    assert load_sd_task({"base_model": "a/b", "prompt": "p", "task_config": {"seed": "42"}}).task_config.seed == 42


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node = doc
    for p in parents:
        node = node.setdefault(p, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return doc


class _Delete:
    """Marks a field to remove; a stable repr keeps test ids equal across xdist workers."""

    def __repr__(self) -> str:
        return "<deleted>"


_DELETE = _Delete()

# (path, bad value, field named in the error, text of the message)
BAD = [
    ("task_config.steps", 0, "task_config.steps", "must be in [1, 100], got 0"),
    ("task_config.steps", 101, "task_config.steps", "must be in [1, 100], got 101"),
    ("task_config.seed", -1, "task_config.seed", "must be in [0, 2147483647], got -1"),
    ("task_config.seed", 2**31, "task_config.seed", "must be in [0, 2147483647], got 2147483648"),
    ("task_config.num_images", 0, "task_config.num_images", "must be in [1, 10], got 0"),
    ("task_config.num_images", 11, "task_config.num_images", "must be in [1, 10], got 11"),
    ("task_config.cfg", -0.5, "task_config.cfg", "must be in [0, 20], got -0.5"),
    ("task_config.cfg", 20.5, "task_config.cfg", "must be in [0, 20], got 20.5"),
    ("task_config.image_width", 1020, "task_config.image_width", "positive multiple of 8, got 1020"),
    ("task_config.image_height", 0, "task_config.image_height", "positive multiple of 8, got 0"),
    ("task_config.steps", "ten", "task_config.steps", "must be an integer"),
    ("task_config.safety_checker", "yes", "task_config.safety_checker", "must be a boolean"),
    ("task_config.colour", 1, "task_config.colour", "is not a field of SdTaskConfig"),
    ("lora.weight", 100.5, "lora.weight", "must be in [0, 100], got 100.5"),
    ("lora.weight", -1, "lora.weight", "must be in [0, 100], got -1"),
    ("lora.weight_file_name", "../../etc/passwd", "lora.weight_file_name", "relative file name"),
    ("controlnet.weight", 101, "controlnet.weight", "must be in [0, 100], got 101"),
    ("controlnet.image_dataurl", "data:image/png;base64,...", "controlnet.image_dataurl", "invalid base64"),
    ("controlnet.image_dataurl", "http://example.com/a.png", "controlnet.image_dataurl", "data:image/png;base64"),
    ("controlnet.image_dataurl", "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
     "controlnet.image_dataurl", "does not decode as an image"),
    ("controlnet.preprocess.method", "sobel", "controlnet.preprocess.method", "must be 'canny' or empty, got 'sobel'"),
    ("controlnet.preprocess.args.low_threshold", 300, "controlnet.preprocess.args.low_threshold",
     "must be in [0, 255], got 300"),
    ("controlnet.preprocess.args.blur", 3, "controlnet.preprocess.args.blur", "is not an argument of canny"),
    ("refiner.denoising_cutoff", 101, "refiner.denoising_cutoff", "must be in [0, 100], got 101"),
    ("refiner.steps", 0, "refiner.steps", "must be in [1, 100], got 0"),
    ("scheduler.method", "DDIMScheduler", "scheduler.method", "must be one of DPMSolverMultistepScheduler, "
     "EulerAncestralDiscreteScheduler, LCMScheduler, got 'DDIMScheduler'"),
    ("scheduler.args.beta_schedule", ["a"], "scheduler.args.beta_schedule", "must be a number, string or boolean"),
    ("dtype", "float8", "dtype", "must be one of auto, float16, bfloat16, float32, got 'float8'"),
    ("base_model", _DELETE, "base_model.name", "base_model.name is required"),
    ("base_model", "../../secret", "base_model.name", "must be a model id"),
    ("prompt", _DELETE, "prompt", "prompt is required"),
    ("prompt", "   ", "prompt", "prompt is required"),
    ("vae", "a/../b", "vae", "must be a model id"),
    ("mystery", 1, "mystery", "is not a field of SdTask"),
]


@pytest.mark.parametrize(("path", "value", "field", "text"), BAD, ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD])
def test_bad_field_refused_with_its_name(path, value, field, text):
    doc = _set(example(), path, value)
    with pytest.raises(TaskArgsError) as err:
        validate_sd_task(load_sd_task(doc))
    assert err.value.field == field
    assert field in str(err.value) and text in str(err.value), str(err.value)


# The schema refuses the same documents (the size cap is a setting, so it is not in the schema).
@pytest.mark.parametrize(("path", "value", "field", "text"),
                         [b for b in BAD if b[0] != "controlnet.image_dataurl" or "http" in b[1]],
                         ids=[f"{b[0]}={b[1]!r}"[:60] for b in BAD
                              if b[0] != "controlnet.image_dataurl" or "http" in b[1]])
def test_schema_refuses_what_the_loader_refuses(path, value, field, text):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_set(example(), path, value), SCHEMA)


VALID = [
    {"base_model": "a/b", "prompt": "p"},
    {"base_model": {"name": "a"}, "prompt": "p", "task_config": {}},
    {"base_model": "a/b", "prompt": "p", "task_config": {"steps": 1, "seed": 0, "num_images": 1, "cfg": 0}},
    {"base_model": "a/b", "prompt": "p", "task_config": {"steps": 100, "seed": 2**31 - 1, "num_images": 10, "cfg": 20,
                                                         "image_width": 2048, "image_height": 2048}},
    {"base_model": "a/b", "prompt": "p", "scheduler": {"method": "LCMScheduler", "args": {"timestep_spacing": "trailing"}},
     "task_config": {"steps": 4}},
    {"base_model": "a/b", "prompt": "p", "lora": {"model": "x/y", "weight": 0}, "refiner": {"model": "x/r",
                                                                                          "denoising_cutoff": 100}},
]


@pytest.mark.parametrize("doc", VALID)
def test_valid_documents_pass_loader_and_schema(doc):
    validate_sd_task(load_sd_task(doc))
    jsonschema.validate(doc, SCHEMA)


def test_size_cap_is_a_setting():
    task = load_sd_task({"base_model": "a/b", "prompt": "p", "task_config": {"image_width": 1024, "image_height": 1024}})
    validate_sd_task(task)  # default cap
    with pytest.raises(TaskArgsError) as err:
        validate_sd_task(task, max_pixels=512 * 512)
    assert err.value.field == "task_config.image_width"
    assert "at most 262144 pixels, got 1024×1024" in str(err.value)
    big = load_sd_task({"base_model": "a/b", "prompt": "p", "task_config": {"image_width": 4096, "image_height": 2048}})
    assert 4096 * 2048 > DEFAULT_MAX_PIXELS
    with pytest.raises(TaskArgsError):
        validate_sd_task(big)


def test_lcm_steps_bounded_by_original_inference_steps():
    doc = {"base_model": "a/b", "prompt": "p", "scheduler": {"method": "LCMScheduler"}, "task_config": {"steps": 60}}
    with pytest.raises(TaskArgsError) as err:
        validate_sd_task(load_sd_task(doc))
    assert err.value.field == "task_config.steps" and "<= 50" in str(err.value)


def test_canny_thresholds_must_be_ordered():
    doc = _set(example(), "controlnet.preprocess.args", {"low_threshold": 220, "high_threshold": 200})
    with pytest.raises(TaskArgsError) as err:
        validate_sd_task(load_sd_task(doc))
    assert err.value.field == "controlnet.preprocess.args.low_threshold"


def test_not_json_is_refused():
    with pytest.raises(TaskArgsError) as err:
        load_sd_task("{not json")
    assert err.value.field == "sd"


def test_vram_estimate_follows_the_documented_formula():
    sd15 = load_sd_task({"base_model": "runwayml/stable-diffusion-v1-5", "prompt": "p",
                         "task_config": {"num_images": 1}})
    # 1.2 × (2 bytes × 1.07e9 params + 2 × 1 × 512 × 512 × 1800) + 1 GiB
    assert estimate_vram_bytes(sd15) == int(1.2 * (2 * 1.07e9 + 2 * 512 * 512 * 1800)) + (1 << 30)
    xl = load_sd_task(EXAMPLE)
    more = load_sd_task(_set(json.loads(EXAMPLE), "task_config.num_images", 4))
    f32 = load_sd_task(_set(json.loads(EXAMPLE), "dtype", "float32"))
    assert estimate_vram_bytes(xl) > estimate_vram_bytes(sd15)
    assert estimate_vram_bytes(more) > estimate_vram_bytes(xl)
    assert estimate_vram_bytes(f32) > estimate_vram_bytes(xl)
    assert estimate_vram_bytes(more, batch_size=2) == estimate_vram_bytes(xl)
    # The SDXL example with refiner, ControlNet and LoRA fits a 24 GiB card but not a 16 GiB one.
    assert 16 << 30 < estimate_vram_bytes(xl) < 32 << 30
