"""The model cache (LRU under a byte budget, disk-cache listing), device detection and determinism settings,
and the tiny model builder (deterministic files)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from worker.device import (
    detect_device,
    quantization_refusal,
    set_deterministic,
    supported_dtypes,
    supported_quantize_bits,
)
from worker.models import CacheKey, ModelCache
from worker.tiny import TINY_KINDS, build_tiny_model, install_tiny_into_hf_cache


def test_lru_eviction_under_budget_and_close_called():
    closed = []
    cache = ModelCache(100)

    def load(name, size):
        return cache.get_or_load(CacheKey(name), lambda: {"name": name, "size": size}, size_of=lambda v: v["size"],
                                 close=lambda v: closed.append(v["name"]))

    load("a", 40)
    load("b", 40)
    assert cache.loaded() == ("b", "a") and cache.used_bytes() == 80
    assert cache.get(CacheKey("a"))["name"] == "a"  # a is now the most recent
    load("c", 40)  # over budget: b (least recently used) goes
    assert closed == ["b"] and cache.loaded() == ("c", "a") and cache.used_bytes() == 80
    calls = []
    cache.get_or_load(CacheKey("a"), lambda: calls.append(1), size_of=len)
    assert calls == []  # a hit never reloads
    load("huge", 500)  # bigger than the whole budget: loaded alone
    assert cache.loaded() == ("huge",) and set(closed) == {"a", "b", "c"}
    cache.clear()
    assert cache.loaded() == () and cache.used_bytes() == 0


def test_estimate_makes_room_before_loading():
    cache = ModelCache(100)
    cache.get_or_load(CacheKey("a"), lambda: 1, size_of=lambda _: 60)
    seen = []
    cache.get_or_load(CacheKey("b"), lambda: seen.append(cache.loaded()) or 2, size_of=lambda _: 30, estimate=60)
    assert seen == [()]  # a was evicted before b was loaded


def test_variants_of_one_model_are_advertised_once():
    cache = ModelCache(1000)
    for v in ("cpu/float32/q0", "cpu/bfloat16/q0"):
        cache.get_or_load(CacheKey("m", v), lambda: 0, size_of=lambda _: 1)
    assert cache.loaded() == ("m",) and len(cache.keys()) == 2


def test_cached_on_disk_lists_the_hf_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    assert ModelCache.cached_on_disk(hub) == ()
    repo = install_tiny_into_hf_cache("gpt2-plain", hub)
    (hub / "models--half--done" / "snapshots").mkdir(parents=True)  # no snapshot yet: not listed
    assert ModelCache.cached_on_disk(hub) == (repo,) == ("helium/tiny-gpt2-plain",)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert ModelCache.cached_on_disk() == (repo,)
    # Installing again is a no-op; the snapshot files are symlinks into blobs, as huggingface_hub writes them.
    assert install_tiny_into_hf_cache("gpt2-plain", hub) == repo
    snap = next((hub / "models--helium--tiny-gpt2-plain" / "snapshots").iterdir())
    assert (snap / "config.json").is_symlink() and (snap / "config.json").read_text().startswith("{")


def test_device_detection_and_override(monkeypatch):
    cpu = detect_device("cpu")
    assert cpu.kind == "cpu" and cpu.torch_device == "cpu" and cpu.vram_bytes > 0
    assert cpu.card_id.startswith("cpu:") and cpu.card_id.endswith("GiB")
    if not torch.cuda.is_available():
        assert detect_device().kind in ("cpu", "mps")
        with pytest.raises(ValueError, match="cuda was asked for"):
            detect_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        detect_device("tpu")
    monkeypatch.setenv("HELIUM_DEVICE", "cpu")
    assert detect_device().kind == "cpu"


def test_set_deterministic_fixes_algorithms_and_seeds():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        set_deterministic(123)
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        a = torch.rand(4)
        set_deterministic(123)
        assert torch.equal(a, torch.rand(4))
    finally:
        torch.use_deterministic_algorithms(before)


def test_advertised_dtypes_and_quantization_are_real():
    assert {"auto", "float32", "bfloat16"} <= set(supported_dtypes("cpu"))
    assert supported_quantize_bits("cpu") == (4, 8)
    assert quantization_refusal("cpu", 4) is None and quantization_refusal("cuda", 8) is None
    assert "MPS" in quantization_refusal("mps", 4) and "MPS" in quantization_refusal("mps", 8)


def test_tiny_models_are_byte_identical_per_seed(tmp_path):
    def digest(d):
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir())}

    for kind in TINY_KINDS:
        a = digest(build_tiny_model(kind, tmp_path / "a" / kind))
        assert a == digest(build_tiny_model(kind, tmp_path / "b" / kind))
    assert "chat_template.jinja" not in digest(tmp_path / "a" / "gpt2-plain")
    other = digest(build_tiny_model("llama-tools", tmp_path / "c", seed=1))
    assert other["model.safetensors"] != digest(tmp_path / "a" / "llama-tools")["model.safetensors"]
    with pytest.raises(ValueError, match="unknown tiny model kind"):
        build_tiny_model("bert", tmp_path / "x")


def test_the_group_key_holds_backend_and_library_versions():
    """Issue #13 item 4: vLLM and transformers nodes on one card (or two torch releases) never share a group."""
    import torch

    from worker.device import group_card_name, library_versions

    tf, vl = group_card_name("NVIDIA H100 80GB HBM3", "auto"), group_card_name("NVIDIA H100 80GB HBM3", "vllm")
    assert tf != vl and tf.startswith("NVIDIA H100 80GB HBM3 [transformers; ") and "[vllm; " in vl
    torch_mm = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    assert f"torch {torch_mm}" in library_versions() and any(v.startswith("transformers ") for v in library_versions())
    assert (torch.version.cuda is None) == all(not v.startswith("cuda ") for v in library_versions())


def test_each_executor_advertises_only_models_of_its_own_type(tmp_path, monkeypatch):
    """A GPT node must not offer an SD pipeline (and the reverse): the network lists each model once, typed."""
    from worker.tiny_sd import install_tiny_sd_into_hf_cache

    hub = tmp_path / "hub"
    gpt = install_tiny_into_hf_cache("gpt2-plain", hub)
    sd = install_tiny_sd_into_hf_cache("sd15", hub)
    assert ModelCache.cached_on_disk(hub) == tuple(sorted((gpt, sd)))
    assert ModelCache.cached_on_disk(hub, kind="gpt") == (gpt,)
    assert ModelCache.cached_on_disk(hub, kind="sd") == (sd,)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    from worker.executors.gpt import GptExecutor
    from worker.executors.sd import SdExecutor, SdExecutorConfig

    assert GptExecutor(device="cpu", backend="transformers").capabilities().cached_models == (gpt,)
    assert sd in SdExecutor(SdExecutorConfig(models_dir=tmp_path / "none"), device="cpu").capabilities().cached_models
    assert gpt not in SdExecutor(SdExecutorConfig(models_dir=tmp_path / "none"), device="cpu").capabilities().cached_models
