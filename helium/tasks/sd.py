"""The Stable Diffusion task: load from JSON, validate, fill defaults, estimate VRAM.

`helium.v1.SdTask` is the schema. Its JSON form is the proto JSON mapping with
snake_case names (camelCase is accepted too), plus one convenience: a plain
string for `base_model` means `{"name": "..."}`. `helium/schemas/sd_task.schema.json`
describes the same document for applications.

    load_sd_task(doc) -> SdTask            parse; unknown fields and wrong types refused
    validate_sd_task(task, max_pixels=...) every bound; raises TaskArgsError(field, message)
    sd_defaults(task) -> SdTask            a copy with every default written in
    estimate_vram_bytes(task) -> int       what a node needs free to run it (formula below)

Every error names its field, for example
`task_config.steps must be in [1, 100], got 101`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import io
import re

from google.protobuf import json_format

from helium import boundedjson
from helium.tasks import TaskArgsError, check_model_id
from helium.tasks._shape import check_shape, json_type
from helium.v1 import sd_pb2

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DTYPES",
    "PREPROCESS_METHODS",
    "SCHEDULERS",
    "decode_data_url",
    "estimate_vram_bytes",
    "is_sdxl_name",
    "load_sd_task",
    "sd_defaults",
    "validate_sd_task",
]

SCHEDULERS = ("DPMSolverMultistepScheduler", "EulerAncestralDiscreteScheduler", "LCMScheduler")
DEFAULT_SCHEDULER = SCHEDULERS[0]
DTYPES = ("auto", "float16", "bfloat16", "float32")
PREPROCESS_METHODS = ("", "canny")
# The default size cap (width × height); a setting of whoever validates.
DEFAULT_MAX_PIXELS = 2048 * 2048
MAX_PROMPT_CHARS = 10_000
MAX_DATA_URL_CHARS = 16 * 1024 * 1024
LCM_ORIGINAL_STEPS = 50  # LCMScheduler's default original_inference_steps

DEFAULTS = {
    "image_width": 512,
    "image_height": 512,
    "steps": 25,
    "seed": 0,
    "num_images": 6,
    "safety_checker": True,
    "cfg": 5.0,
}
DEFAULT_WEIGHT = 100.0
DEFAULT_DENOISING_CUTOFF = 80.0
CANNY_DEFAULTS = {"low_threshold": 100, "high_threshold": 200}

# Inclusive bounds, by field path.
BOUNDS: dict[str, tuple[float, float]] = {
    "task_config.steps": (1, 100),
    "task_config.seed": (0, 2**31 - 1),
    "task_config.num_images": (1, 10),
    "task_config.cfg": (0, 20),
    "lora.weight": (0, 100),
    "controlnet.weight": (0, 100),
    "refiner.denoising_cutoff": (0, 100),
    "refiner.steps": (1, 100),
    "controlnet.preprocess.args.low_threshold": (0, 255),
    "controlnet.preprocess.args.high_threshold": (0, 255),
}

_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
_VARIANT = re.compile(r"^[A-Za-z0-9_-]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATA_URL = re.compile(r"^data:(image/(?:png|jpeg|jpg|webp));base64,(.*)$", re.S)


# ---------------------------------------------------------------------------------------------- load


def load_sd_task(doc: dict | str | bytes) -> sd_pb2.SdTask:
    """Parse the SD task JSON (a dict or its text). Does not check bounds: see `validate_sd_task`."""
    if isinstance(doc, bytes | str):
        try:
            doc = boundedjson.loads(doc, what="sd task")
        except boundedjson.BoundedJsonError as e:
            raise TaskArgsError("sd", str(e)) from None
    if not isinstance(doc, dict):
        raise TaskArgsError("sd", f"sd task must be a JSON object, got {type(doc).__name__}")
    doc = copy.deepcopy(doc)
    if isinstance(doc.get("base_model"), str):
        doc["base_model"] = {"name": doc["base_model"]}
    check_shape(doc, sd_pb2.SdTask.DESCRIPTOR, "", BOUNDS, unknown=True)
    try:
        return json_format.ParseDict(doc, sd_pb2.SdTask())
    except json_format.ParseError as e:  # check_shape catches the usual cases with a better message
        raise TaskArgsError("sd", f"sd task does not parse: {e}") from None


def _fmt(x: float | None) -> str:
    return str(int(x)) if isinstance(x, float | int) and float(x).is_integer() else str(x)


# ------------------------------------------------------------------------------------------ validate


def _bound(path: str, value: float) -> None:
    lo, hi = BOUNDS[path]
    if not (lo <= value <= hi):
        raise TaskArgsError(path, f"{path} must be in [{_fmt(lo)}, {_fmt(hi)}], got {_fmt(value)}")


def _model_id(path: str, name: str, *, required: bool) -> None:
    if not name:
        if required:
            raise TaskArgsError(path, f"{path} is required")
        return
    check_model_id(path, name)


def decode_data_url(url: str, field: str = "controlnet.image_dataurl") -> bytes:
    """The bytes of a base64 `data:image/...` URL; TaskArgsError naming `field` otherwise."""
    if len(url) > MAX_DATA_URL_CHARS:
        raise TaskArgsError(field, f"{field} must be at most {MAX_DATA_URL_CHARS} characters, got {len(url)}")
    m = _DATA_URL.match(url)
    if not m:
        raise TaskArgsError(field, f"{field} must be a data:image/png;base64,... or image/jpeg URL")
    try:
        return base64.b64decode(m.group(2), validate=True)
    except (binascii.Error, ValueError) as e:
        raise TaskArgsError(field, f"{field} has invalid base64: {e}") from None


def _check_image(field: str, url: str) -> None:
    from PIL import Image, UnidentifiedImageError

    data = decode_data_url(url, field)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise TaskArgsError(field, f"{field} does not decode as an image: {e}") from None


def validate_sd_task(task: sd_pb2.SdTask, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Check every field against its bound; raise TaskArgsError naming the first bad one."""
    _model_id("base_model.name", task.base_model.name, required=True)
    if not _VARIANT.match(task.base_model.variant):
        raise TaskArgsError("base_model.variant", f"base_model.variant must match [A-Za-z0-9_-]*, "
                                                  f"got {task.base_model.variant!r}")
    if not task.prompt.strip():
        raise TaskArgsError("prompt", "prompt is required")
    for field in ("prompt", "negative_prompt"):
        if len(getattr(task, field)) > MAX_PROMPT_CHARS:
            raise TaskArgsError(field, f"{field} must be at most {MAX_PROMPT_CHARS} characters")

    cfg = sd_defaults(task).task_config
    for side in ("image_width", "image_height"):
        v = getattr(cfg, side)
        if v <= 0 or v % 8:
            raise TaskArgsError(f"task_config.{side}", f"task_config.{side} must be a positive multiple "
                                                       f"of 8, got {v}")
    if cfg.image_width * cfg.image_height > max_pixels:
        raise TaskArgsError("task_config.image_width", "task_config.image_width × image_height must be at most "
                            f"{max_pixels} pixels, got {cfg.image_width}×{cfg.image_height}")
    _bound("task_config.steps", cfg.steps)
    _bound("task_config.seed", cfg.seed)
    _bound("task_config.num_images", cfg.num_images)
    _bound("task_config.cfg", cfg.cfg)

    if task.HasField("lora"):
        lora = task.lora
        _model_id("lora.model", lora.model, required=bool(lora.weight_file_name or lora.HasField("weight")))
        if lora.weight_file_name and (not _FILE_NAME.match(lora.weight_file_name) or ".." in lora.weight_file_name):
            raise TaskArgsError("lora.weight_file_name", "lora.weight_file_name must be a relative file name, "
                                f"got {lora.weight_file_name!r}")
        if lora.HasField("weight"):
            _bound("lora.weight", lora.weight)

    if task.HasField("controlnet"):
        _validate_controlnet(task.controlnet)

    _model_id("vae", task.vae, required=False)
    _model_id("textual_inversion", task.textual_inversion, required=False)

    if task.HasField("refiner"):
        ref = task.refiner
        _model_id("refiner.model", ref.model, required=ref.HasField("denoising_cutoff") or ref.HasField("steps"))
        if ref.HasField("denoising_cutoff"):
            _bound("refiner.denoising_cutoff", ref.denoising_cutoff)
        if ref.HasField("steps"):
            _bound("refiner.steps", ref.steps)

    _validate_scheduler(task.scheduler, cfg.steps)

    if task.dtype not in ("",) + DTYPES:
        raise TaskArgsError("dtype", f"dtype must be one of {', '.join(DTYPES)}, got {task.dtype!r}")


def _validate_controlnet(cn: sd_pb2.SdControlNet) -> None:
    if not cn.model:
        if cn.image_dataurl or cn.HasField("weight") or cn.preprocess.method:
            raise TaskArgsError("controlnet.model", "controlnet.model is required")
        return
    _model_id("controlnet.model", cn.model, required=True)
    if not cn.image_dataurl:
        raise TaskArgsError("controlnet.image_dataurl", "controlnet.image_dataurl is required with controlnet.model")
    _check_image("controlnet.image_dataurl", cn.image_dataurl)
    if cn.HasField("weight"):
        _bound("controlnet.weight", cn.weight)
    method = cn.preprocess.method
    if method not in PREPROCESS_METHODS:
        raise TaskArgsError("controlnet.preprocess.method", "controlnet.preprocess.method must be 'canny' or "
                            f"empty, got {method!r}")
    args = json_format.MessageToDict(cn.preprocess.args) if cn.preprocess.HasField("args") else {}
    if args and not method:
        raise TaskArgsError("controlnet.preprocess.args", "controlnet.preprocess.args needs a method")
    for key, value in args.items():
        path = f"controlnet.preprocess.args.{key}"
        if key not in CANNY_DEFAULTS:
            raise TaskArgsError(path, f"{path} is not an argument of canny (low_threshold, high_threshold)")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TaskArgsError(path, f"{path} must be a number, got {value!r}")
        _bound(path, value)
    lo = args.get("low_threshold", CANNY_DEFAULTS["low_threshold"])
    hi = args.get("high_threshold", CANNY_DEFAULTS["high_threshold"])
    if lo > hi:
        raise TaskArgsError("controlnet.preprocess.args.low_threshold",
                            f"controlnet.preprocess.args.low_threshold must be <= high_threshold ({_fmt(hi)}), "
                            f"got {_fmt(lo)}")


def _validate_scheduler(sched: sd_pb2.SdScheduler, steps: int) -> None:
    method = sched.method or DEFAULT_SCHEDULER
    if method not in SCHEDULERS:
        raise TaskArgsError("scheduler.method", f"scheduler.method must be one of {', '.join(SCHEDULERS)}, "
                            f"got {sched.method!r}")
    args = json_format.MessageToDict(sched.args) if sched.HasField("args") else {}
    for key, value in args.items():
        path = f"scheduler.args.{key}"
        if not _IDENT.match(key):
            raise TaskArgsError(path, f"{path} is not a valid argument name")
        if not isinstance(value, bool | int | float | str):
            raise TaskArgsError(path, f"{path} must be a number, string or boolean, got {json_type(value)}")
    if method == "LCMScheduler":
        orig = args.get("original_inference_steps", LCM_ORIGINAL_STEPS)
        if isinstance(orig, bool) or not isinstance(orig, int | float) or orig < 1:
            raise TaskArgsError("scheduler.args.original_inference_steps",
                                f"scheduler.args.original_inference_steps must be a positive integer, got {orig!r}")
        if steps > orig:
            raise TaskArgsError("task_config.steps", f"task_config.steps must be <= {_fmt(orig)} (original_inference"
                                f"_steps) with LCMScheduler, got {steps}")


# ------------------------------------------------------------------------------------------ defaults


def sd_defaults(task: sd_pb2.SdTask) -> sd_pb2.SdTask:
    """A copy of `task` with every default written in (task_config, scheduler, dtype, weights, refiner)."""
    out = sd_pb2.SdTask()
    out.CopyFrom(task)
    cfg = out.task_config
    for name, value in DEFAULTS.items():
        if not cfg.HasField(name):
            setattr(cfg, name, value)
    if not out.scheduler.method:
        out.scheduler.method = DEFAULT_SCHEDULER
    if not out.dtype:
        out.dtype = "auto"
    if out.lora.model and not out.lora.HasField("weight"):
        out.lora.weight = DEFAULT_WEIGHT
    if out.controlnet.model and not out.controlnet.HasField("weight"):
        out.controlnet.weight = DEFAULT_WEIGHT
    if out.refiner.model:
        if not out.refiner.HasField("denoising_cutoff"):
            out.refiner.denoising_cutoff = DEFAULT_DENOISING_CUTOFF
        if not out.refiner.HasField("steps"):
            out.refiner.steps = cfg.steps
    return out


# ------------------------------------------------------------------------------------------ VRAM


def is_sdxl_name(name: str) -> bool:
    """The family guess used by the estimate: a model id that says "xl" is SDXL-style."""
    return "xl" in name.lower()


# Parameter counts of the public models (diffusers' weights), the estimate's constants.
_PARAMS = {
    "sd15": 1.07e9,  # UNet 860M + CLIP-L text 123M + VAE 84M
    "sdxl": 3.50e9,  # UNet 2.57B + CLIP-L 123M + OpenCLIP-bigG 695M + VAE 84M
    "refiner": 3.10e9,  # UNet 2.3B + OpenCLIP-bigG 695M + VAE 84M
    "controlnet_sd15": 0.36e9,
    "controlnet_sdxl": 1.25e9,
    "lora": 0.05e9,
    "vae": 0.084e9,
}
# Activation bytes per output pixel per image, per byte of dtype (CFG doubles the batch; VAE decode included).
_ACT_PER_PIXEL = {"sd15": 1800, "sdxl": 1200}
_OVERHEAD = 1 << 30  # CUDA context, allocator slack


def estimate_vram_bytes(task: sd_pb2.SdTask, *, batch_size: int | None = None) -> int:
    """The GPU memory a node needs free to run `task`.

        bpp      = 4 if dtype == float32 else 2          (auto → half precision on GPUs)
        family   = sdxl if is_sdxl_name(base_model.name) or a refiner is given, else sd15
        weights  = bpp × (params[family] + params[refiner]? + params[controlnet_family]? + params[lora]?
                          + params[vae]?)
        acts     = bpp × batch × width × height × act_per_pixel[family]   (batch = num_images, or batch_size
                   when the executor runs images in smaller batches)
        estimate = 1.2 × (weights + acts) + 1 GiB

    The constants are the public SD 1.5 / SDXL parameter counts and a per-pixel activation
    footprint measured with SDPA attention; the 20% covers allocator fragmentation.
    """
    t = sd_defaults(task)
    bpp = 4 if t.dtype == "float32" else 2
    xl = is_sdxl_name(t.base_model.name) or bool(t.refiner.model)
    family = "sdxl" if xl else "sd15"
    params = _PARAMS[family]
    if t.refiner.model:
        params += _PARAMS["refiner"]
    if t.controlnet.model:
        params += _PARAMS["controlnet_sdxl" if xl else "controlnet_sd15"]
    if t.lora.model:
        params += _PARAMS["lora"]
    if t.vae:
        params += _PARAMS["vae"]
    cfg = t.task_config
    batch = min(cfg.num_images, batch_size or cfg.num_images)
    acts = bpp * batch * cfg.image_width * cfg.image_height * _ACT_PER_PIXEL[family]
    return int(1.2 * (bpp * params + acts)) + _OVERHEAD

