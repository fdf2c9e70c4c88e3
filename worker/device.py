"""The compute device a worker runs on: detection, the card it advertises, determinism, what it supports.

- Detection order is cuda > mps > cpu; `detect_device(override)` (or `HELIUM_DEVICE`) forces one.
- The *card* (name + VRAM) is what the scheduler groups GPT nodes by: three nodes
  with the same card must produce the same tokens. The name a node advertises is
  its *group key* (`group_card_name`): the device name, the GPT backend and the
  versions of what changes the bits (torch, CUDA, transformers or vLLM, diffusers,
  major.minor), so vLLM and transformers nodes, or two torch releases, never share a group.
- `set_deterministic(seed)` fixes everything that changes tokens between runs
  and processes: deterministic algorithms, `CUBLAS_WORKSPACE_CONFIG`, no TF32,
  no cuDNN autotuning, and the seed of every RNG. The executor calls it before
  every task, so whatever ran before cannot leak into the next result.
- `supported_dtypes` / `supported_quantize_bits` report what the *installed*
  libraries really run on this device (probed, not assumed), so a node never
  advertises what it would then fail at.
"""

from __future__ import annotations

import os
import platform
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import structlog

__all__ = [
    "DeviceInfo",
    "group_card_name",
    "library_versions",
    "NodeProfile",
    "detect_device",
    "set_deterministic",
    "supported_dtypes",
    "quantization_refusal",
    "supported_quantize_bits",
]

log = structlog.get_logger(__name__)

CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_KINDS = ("cuda", "mps", "cpu")


@dataclass(frozen=True)
class DeviceInfo:
    """A device as the worker advertises it."""

    kind: str  # "cuda", "mps" or "cpu"
    torch_device: str  # "cuda:0", "mps", "cpu"
    card: str  # e.g. "NVIDIA H100 80GB HBM3", "Apple M2 Max", "cpu:x86_64"
    vram_bytes: int  # total device memory; host RAM for cpu and mps (unified memory)

    @property
    def card_id(self) -> str:
        """Name + memory in GiB: the key three GPT nodes must share."""
        return f"{self.card}/{round(self.vram_bytes / 2**30)}GiB"


def _major_minor(module: str) -> str | None:
    try:
        from importlib.metadata import version

        return ".".join(version(module).split("+")[0].split(".")[:2])
    except Exception:  # noqa: BLE001 - not installed
        return None


def library_versions(backend: str = "transformers") -> tuple[str, ...]:
    """What changes the bits of a result, as "name major.minor": torch, the CUDA (or ROCm) torch was built
    with, the GPT backend's library (transformers or vllm) and diffusers (SD)."""
    out = []
    torch_v = _major_minor("torch")
    if torch_v:
        out.append(f"torch {torch_v}")
        try:
            import torch

            if torch.version.cuda:
                out.append(f"cuda {torch.version.cuda}")
            elif getattr(torch.version, "hip", None):
                out.append(f"rocm {'.'.join(torch.version.hip.split('.')[:2])}")
        except ImportError:  # pragma: no cover
            pass
    for lib in ("vllm" if backend == "vllm" else "transformers", "diffusers"):
        v = _major_minor(lib)
        if v:
            out.append(f"{lib} {v}")
    return tuple(out)


def group_card_name(card: str, backend: str = "auto") -> str:
    """The card name a node advertises: the device name and everything else that changes the bits, e.g.
    "NVIDIA H100 80GB HBM3 [transformers; torch 2.13; cuda 12.8; transformers 5.25; diffusers 0.36]"."""
    backend = "transformers" if backend in ("auto", "") else backend
    return f"{card} [{'; '.join((backend, *library_versions(backend)))}]"


def detect_device(override: str | None = None) -> DeviceInfo:
    """The device to run on: `override` (or env `HELIUM_DEVICE`) if given, else the first of cuda > mps > cpu."""
    import torch

    want = (override or os.environ.get("HELIUM_DEVICE") or "").strip().lower() or None
    if want is not None:
        kind = want.split(":", 1)[0]
        if kind not in _KINDS:
            raise ValueError(f"device must be one of {', '.join(_KINDS)} (optionally cuda:N), got {want!r}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda was asked for but torch sees no CUDA device")
        if kind == "mps" and not _mps_available():
            raise ValueError("device mps was asked for but torch sees no MPS device")
    elif torch.cuda.is_available():
        want = "cuda"
    elif _mps_available():
        want = "mps"
    else:
        want = "cpu"
    kind = want.split(":", 1)[0]
    if kind == "cuda":
        index = int(want.split(":", 1)[1]) if ":" in want else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return DeviceInfo("cuda", f"cuda:{index}", props.name, int(props.total_memory))
    if kind == "mps":
        return DeviceInfo("mps", "mps", _apple_chip(), _host_memory())
    return DeviceInfo("cpu", "cpu", _cpu_name(), _host_memory())


def set_deterministic(seed: int, torch_device: str | None = None) -> None:
    """Fix algorithms and seeds so the same task gives the same tokens on the same card, in any process.

    With a CUDA `torch_device`, only that device's generator is seeded, so nodes on other GPUs of the
    same process keep theirs; otherwise the process-wide generators are (callers serialize those)."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.set_float32_matmul_precision("highest")
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy ships with torch installs
        pass
    if torch_device and torch_device.startswith("cuda"):
        with torch.cuda.device(torch_device):
            torch.cuda.manual_seed(seed % 2**64)  # this GPU's generator only
        return
    torch.manual_seed(seed % 2**64)  # seeds the CPU, CUDA and MPS generators


@cache
def supported_dtypes(torch_device: str) -> tuple[str, ...]:
    """The `dtype` values a task may ask for on this device, probed with a real matmul in each."""
    import torch

    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    ok = ["auto"]
    for name, dtype in names.items():
        try:
            a = torch.ones((4, 4), dtype=dtype, device=torch_device)
            float((a @ a).sum())
            if torch_device.startswith("cuda") and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                continue
            ok.append(name)
        except (RuntimeError, TypeError) as e:
            log.info("dtype_unsupported", device=torch_device, dtype=name, error=str(e))
    return tuple(ok)


# Quantizations that run but do not give the same tokens in every process: a node must not advertise
# them, since three nodes must agree. Measured here (bitsandbytes 0.50.2, torch 2.13, x86 CPU): both
# load and run on CPU, but the same greedy/sampled task on a tiny Llama diverged after a few tokens
# in 1 of 6 fresh processes with 4-bit NF4 weights (float32 compute) and in 1 of 3 with INT8 weights
# (bfloat16), while the unquantized model gave identical tokens in every process.
# Quantization refused outright on a kind of device, with the reason. bitsandbytes >= 0.46 has CPU kernels
# for 4 and 8 bits that give the same tokens in every process (tests/integration/gpt/test_gpt_quantized.py);
# it has no MPS kernels.
UNSUPPORTED_QUANTIZATION = {
    ("mps", 4): "bitsandbytes has no 4-bit kernels for Apple MPS",
    ("mps", 8): "bitsandbytes has no 8-bit kernels for Apple MPS",
}


def quantization_refusal(device_kind: str, bits: int) -> str | None:
    """Why `bits`-bit quantization is refused on this kind of device, or None when it is allowed."""
    return UNSUPPORTED_QUANTIZATION.get((device_kind, bits))


@cache
def supported_quantize_bits(torch_device: str) -> tuple[int, ...]:
    """4/8-bit bitsandbytes quantization this device can run reproducibly, probed with a real quantized layer.

    bitsandbytes >= 0.46 has CPU kernels for both (0.50.2 loads and runs INT8 and INT4 models on CPU);
    CUDA has both; MPS has none in the releases we know of (`UNSUPPORTED_QUANTIZATION`).
    """
    candidates = [b for b in (4, 8) if not quantization_refusal(torch_device.split(":", 1)[0], b)]
    if not candidates:
        return ()
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        return ()
    out = []
    for bits in candidates:
        try:
            # The probe's layers draw their init weights: never from the generator a task's sampling uses.
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                if bits == 8:
                    layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False, threshold=6.0)
                else:
                    layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
                layer = layer.to(torch_device)
                x = torch.ones((2, 64), device=torch_device,
                               dtype=torch.float16 if bits == 8 and torch_device != "cpu" else torch.float32)
                y = layer(x)
                if not bool(torch.isfinite(y).all()):
                    raise RuntimeError("non-finite output")
            out.append(bits)
        except Exception as e:  # noqa: BLE001 - any failure means "not supported here"
            log.info("quantization_unsupported", device=torch_device, bits=bits, error=f"{type(e).__name__}: {e}")
    return tuple(out)


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 0


def _cpu_name() -> str:
    """The CPU model: floating-point kernels (and so tokens) can differ between CPU families."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return "cpu:" + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"cpu:{platform.processor() or platform.machine() or 'unknown'}"


def _apple_chip() -> str:
    import subprocess

    try:
        out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        return out or "Apple"
    except (OSError, subprocess.SubprocessError):
        return "Apple"


@dataclass(frozen=True)
class NodeProfile:
    """The hardware a node reports: honest card name and VRAM, and the torch device string."""

    card_name: str
    vram_bytes: int
    device: str = "cpu"
    # Free device memory now, in bytes; None: report vram_bytes.
    free_vram: Callable[[], int] | None = None

    def free_vram_bytes(self) -> int:
        if self.free_vram is None:
            return self.vram_bytes
        try:
            return int(self.free_vram())
        except Exception:  # a driver hiccup must not kill the heartbeat
            return 0
