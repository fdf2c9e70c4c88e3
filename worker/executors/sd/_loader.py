"""Finding and loading SD models: base pipelines, refiners, ControlNets, VAEs, LoRAs, embeddings.

A model id from a task ("owner/name") is looked up, in order, in the executor's
`models_dir` (`<models_dir>/<owner>/<name>`, the layout `worker.tiny_sd` writes)
and in the local Hugging Face cache (`local_files_only`: the worker never
downloads at run time). Not found anywhere is `ModelNotFoundError`.

Loaded models live in the worker's shared `worker.models.ModelCache` (LRU under
a byte budget), keyed by (model id, "sd-<role>/<variant>/<dtype>/<device>").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from worker.errors import InvalidArgsError, ModelNotFoundError
from worker.models import CacheKey, ModelCache

__all__ = ["SdLoader", "module_bytes"]

log = structlog.get_logger(__name__)
_ROLE_PREFIX = "sd-"


def module_bytes(obj: Any) -> int:
    """Bytes of every parameter and buffer of a model, or of every module of a pipeline."""
    import torch

    mods = [obj] if isinstance(obj, torch.nn.Module) else [
        m for m in getattr(obj, "components", {}).values() if isinstance(m, torch.nn.Module)]
    seen: set[int] = set()
    total = 0
    for m in mods:
        for t in list(m.parameters()) + list(m.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in (".safetensors", ".bin") and f.is_file())


class SdLoader:
    """Resolves model ids to local directories and loads diffusers objects through the cache."""

    def __init__(self, *, models_dir: Path | None, device: str, cache: ModelCache) -> None:
        self._models_dir = Path(models_dir) if models_dir else None
        self._device = device
        self._cache = cache

    # ------------------------------------------------------------------ resolution

    def resolve(self, name: str, field: str) -> Path:
        """The local directory of model `name`; ModelNotFoundError naming `field` if there is none."""
        if self._models_dir is not None:
            local = self._models_dir / name
            if local.is_dir():
                return local
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name, local_files_only=True))
        except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
            raise ModelNotFoundError(name, f"{field}: not in the models directory or the local cache") from e

    def cached_models(self) -> list[str]:
        """Model ids present on disk under `models_dir` (owner/name directories with weights)."""
        if self._models_dir is None or not self._models_dir.is_dir():
            return []
        out = []
        for cfg in sorted(self._models_dir.glob("*/*/*.json")):
            if cfg.name in ("model_index.json", "config.json"):
                out.append(str(cfg.parent.relative_to(self._models_dir)))
        for emb in sorted(self._models_dir.glob("*/*/*.safetensors")):
            out.append(str(emb.parent.relative_to(self._models_dir)))
        return sorted(set(out))

    def loaded_models(self) -> list[str]:
        return sorted({k.name for k in self._cache.keys() if k.variant.startswith(_ROLE_PREFIX)})

    def _get(self, role: str, name: str, path: Path, variant: str, dtype, load: Callable[[], Any]) -> Any:
        key = CacheKey(name, f"{_ROLE_PREFIX}{role}/{variant}/{str(dtype).removeprefix('torch.')}/{self._device}")
        return self._cache.get_or_load(key, load, size_of=module_bytes, estimate=_disk_bytes(path))

    # ------------------------------------------------------------------ loading

    def is_sdxl(self, path: Path) -> bool:
        index = path / "model_index.json"
        if not index.is_file():
            raise InvalidArgsError(f"base_model.name: {path.name} is not a diffusers pipeline (no model_index.json)")
        cls = json.loads(index.read_text()).get("_class_name", "")
        return "XL" in cls

    def base(self, name: str, variant: str, dtype, field: str = "base_model.name"):
        """The text-to-image pipeline of `name`, on the device, in `dtype`."""
        path = self.resolve(name, field)
        xl = self.is_sdxl(path)

        def load():
            from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

            cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
            extra = {"add_watermarker": False} if xl else {}
            pipe = _from_pretrained(cls, path, variant, dtype, field, **extra)
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(self._device)

        return self._get("base", name, path, variant, dtype, load)

    def refiner(self, name: str, dtype):
        path = self.resolve(name, "refiner.model")

        def load():
            from diffusers import StableDiffusionXLImg2ImgPipeline

            pipe = _from_pretrained(StableDiffusionXLImg2ImgPipeline, path, "", dtype, "refiner.model",
                                    add_watermarker=False)
            pipe.set_progress_bar_config(disable=True)
            return pipe.to(self._device)

        return self._get("refiner", name, path, "", dtype, load)

    def controlnet(self, name: str, dtype):
        path = self.resolve(name, "controlnet.model")

        def load():
            from diffusers import ControlNetModel

            return _from_pretrained(ControlNetModel, path, "", dtype, "controlnet.model").to(self._device)

        return self._get("controlnet", name, path, "", dtype, load)

    def vae(self, name: str, dtype):
        path = self.resolve(name, "vae")

        def load():
            from diffusers import AutoencoderKL

            sub = "vae" if (path / "vae" / "config.json").is_file() else None
            kwargs = {"subfolder": sub} if sub else {}
            return _from_pretrained(AutoencoderKL, path, "", dtype, "vae", **kwargs).to(self._device)

        return self._get("vae", name, path, "", dtype, load)

    def lora_path(self, name: str, weight_file_name: str) -> tuple[Path, str | None]:
        path = self.resolve(name, "lora.model")
        if weight_file_name and not (path / weight_file_name).is_file():
            raise ModelNotFoundError(f"{name}/{weight_file_name}", "lora.weight_file_name: no such file")
        return path, (weight_file_name or None)

    def textual_inversion_path(self, name: str) -> Path:
        return self.resolve(name, "textual_inversion")


def _dtype_kw() -> str:
    import diffusers
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__) >= Version("0.36") else "torch_dtype"


_DTYPE_KW = _dtype_kw()


def _from_pretrained(cls, path: Path, variant: str, dtype, field: str, **kwargs):
    """`cls.from_pretrained` with no network; a missing weight variant falls back to the default weights."""
    kwargs[_DTYPE_KW] = dtype
    try:
        try:
            return cls.from_pretrained(path, local_files_only=True, variant=variant or None, **kwargs)
        except (OSError, ValueError) as e:
            if not variant:
                raise
            log.info("sd_variant_missing", model=str(path), variant=variant, error=str(e))
            return cls.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidArgsError(f"{field}: cannot load {path.name} as {cls.__name__}: {e}") from e
