"""The worker's model cache: loaded models in memory under a byte budget (LRU), and the Hugging Face disk cache.

Shared by every executor (GPT and SD). An entry is whatever an executor loads
(a model + tokenizer bundle, a diffusers pipeline), stored under a key the
executor chooses; the key's `name` is what the node advertises (the model id the
task names), its `variant` tells apart loads of the same model that differ
(dtype, quantization, device).

Budget: before a load, entries are evicted (least recently used first) until the
estimated size fits; after the load the real size replaces the estimate, and
more entries are evicted if needed. An entry larger than the whole budget is
still loaded (alone): refusing it would refuse every task for that model.
A `close()` callable (optional) is called on eviction to free device memory.

The disk cache is the Hugging Face hub cache (`HF_HUB_CACHE` / `HF_HOME`);
`cached_on_disk()` lists the model repos in it, which the scheduler prefers
(model-locality factor 1.5 vs 2 for loaded).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

__all__ = ["CacheKey", "ModelCache", "hf_cache_dir", "require_hub_model"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CacheKey:
    name: str  # the model id as tasks name it (advertised)
    variant: str = ""  # e.g. "cpu/float32/q4"


@dataclass
class _Entry:
    value: Any
    size: int
    close: Callable[[Any], None] | None


class ModelCache:
    """Loaded models under `budget_bytes`, least recently used evicted first. Thread-safe; loads are serialized."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be > 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: CacheKey) -> Any | None:
        """The loaded value for `key` (marking it most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry.value

    def get_or_load(
        self,
        key: CacheKey,
        load: Callable[[], Any],
        *,
        size_of: Callable[[Any], int],
        estimate: int = 0,
        close: Callable[[Any], None] | None = None,
    ) -> Any:
        """The value for `key`, loading it with `load()` on a miss (after making room for `estimate` bytes)."""
        with self._lock:
            hit = self.get(key)
            if hit is not None:
                return hit
            self._evict_until(self.budget_bytes - estimate)
            value = load()
            size = int(size_of(value))
            self._entries[key] = _Entry(value, size, close)
            self._evict_until(self.budget_bytes, keep=key)
            log.info("model_loaded", model=key.name, variant=key.variant, bytes=size, used=self.used_bytes())
            return value

    def evict(self, key: CacheKey) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self._close(key, entry)
        return True

    def clear(self) -> None:
        """Evict everything (e.g. to retry a load after running out of memory)."""
        with self._lock:
            keys = list(self._entries)
        for key in keys:
            self.evict(key)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def loaded(self) -> tuple[str, ...]:
        """Names of the loaded models, most recently used first, each once."""
        with self._lock:
            return tuple(dict.fromkeys(k.name for k in reversed(self._entries)))

    def keys(self) -> tuple[CacheKey, ...]:
        with self._lock:
            return tuple(self._entries)

    def _evict_until(self, limit: int, keep: CacheKey | None = None) -> None:
        while True:
            with self._lock:
                if sum(e.size for e in self._entries.values()) <= limit:
                    return
                victim = next((k for k in self._entries if k != keep), None)
                if victim is None:
                    return
                entry = self._entries.pop(victim)
            self._close(victim, entry)

    @staticmethod
    def _close(key: CacheKey, entry: _Entry) -> None:
        log.info("model_evicted", model=key.name, variant=key.variant, bytes=entry.size)
        if entry.close is not None:
            try:
                entry.close(entry.value)
            except Exception as e:  # noqa: BLE001 - eviction must not fail the task that caused it
                log.warning("model_close_failed", model=key.name, error=f"{type(e).__name__}: {e}")
        _free_device_memory()

    @staticmethod
    def cached_on_disk(cache_dir: str | Path | None = None, kind: str | None = None) -> tuple[str, ...]:
        """Model repo ids present in the Hugging Face hub cache (with at least one snapshot), sorted.

        `kind` keeps only one type: "sd" a diffusers pipeline (its snapshot has model_index.json), "gpt" a
        transformers model (config.json and no model_index.json). Each executor advertises only its own, so
        the network lists every model once, with its real type."""
        root = Path(cache_dir) if cache_dir is not None else hf_cache_dir()
        if not root.is_dir():
            return ()
        out = []
        for repo_dir in root.glob("models--*"):
            snapshots = repo_dir / "snapshots"
            if not snapshots.is_dir():
                continue
            snaps = [d for d in snapshots.iterdir() if d.is_dir()]
            if not snaps or (kind is not None and _snapshot_kind(repo_dir, snaps) != kind):
                continue
            out.append(repo_dir.name[len("models--"):].replace("--", "/"))
        return tuple(sorted(out))


def _snapshot_kind(repo_dir: Path, snaps: list[Path]) -> str | None:
    """"sd", "gpt" or None (neither) for a cached repo, read from refs/main's snapshot (else any snapshot)."""
    ref = repo_dir / "refs" / "main"
    snap = repo_dir / "snapshots" / ref.read_text().strip() if ref.is_file() else snaps[0]
    if not snap.is_dir():
        snap = snaps[0]
    if (snap / "model_index.json").exists():
        return "sd"
    if (snap / "config.json").exists():
        return "gpt"
    return None


def require_hub_model(name: str) -> str:
    """A model named by a task from the network: a hub id, never a path on this machine's disk (it would
    load from there, and its error would tell the creator what exists). Raises `TaskArgsError`. The
    executors' own API still takes local directories, for tests and benches."""
    from helium.tasks import check_model_id

    check_model_id("model", name)
    return name


def hf_cache_dir() -> Path:
    """The hub cache directory, as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME, ~/.cache/huggingface)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and torch.backends.mps.is_available():
        mps.empty_cache()
