"""Tiny random-weight language models, built on the spot.

Tests, `helium dev` and `make demo` need real Hugging Face models (real
configs, real safetensors, real tokenizers, real chat templates) without a
model hub. This module builds them in a second or two, from a config and a
seed, into a directory that `from_pretrained` loads like any downloaded model.
The same (kind, seed) always gives byte-identical files.

Kinds (`TINY_KINDS`):

- ``llama-tools``: a Llama-style model whose ChatML chat template renders
  OpenAI-style tools and the Hermes/Qwen ``<tool_call>{...}</tool_call>``
  convention (like Qwen2.5-Instruct).
- ``gpt2-plain``: a GPT-2-style model with no chat template at all (the
  executor's plain fallback is used).
- ``system-prompt``: a Qwen2-style model whose Zephyr-like template puts a
  system prompt first, and a default one when the conversation has none.

The tokenizer is byte-level (every byte is a token, no merges) plus a few
special tokens, so any text round-trips. Weights are random (initializer std
0.02), so the output is gibberish; what matters is that it is real and
deterministic.

`install_tiny_into_hf_cache` writes a model into the Hugging Face hub cache
layout (blobs + snapshot symlinks + refs/main) so that a hub id such as
``helium/tiny-llama-tools`` resolves with ``HF_HUB_OFFLINE=1``, exactly as a
downloaded model does.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "TINY_HUB_IDS",
    "TINY_KINDS",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "install_tiny_into_hf_cache",
    "tiny_llama_config",
]

TINY_KINDS = ("llama-tools", "gpt2-plain", "system-prompt")
TINY_HUB_IDS = {kind: f"helium/tiny-{kind}" for kind in TINY_KINDS}
_FORMAT = 3  # bump when the files a kind produces change

# Written like Qwen2.5's template: transformers renders with trim_blocks/lstrip_blocks, so every
# newline that matters is inside a string literal.
_CHATML_TOOLS_TEMPLATE = """
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}{%- else %}{{- 'You are a helpful assistant.' }}{%- endif %}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message['role'] == 'user' or (message['role'] == 'system' and not loop.first) %}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}
{%- elif message['role'] == 'assistant' %}
{{- '<|im_start|>assistant' }}
{%- if message['content'] %}{{- '\n' + message['content'] }}{%- endif %}
{%- if message['tool_calls'] is defined and message['tool_calls'] %}
{%- for tc in message['tool_calls'] %}
{{- '\n<tool_call>\n{"name": "' + tc['function']['name'] + '", "arguments": ' }}{{- tc['function']['arguments'] | tojson }}{{- '}\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- elif message['role'] == 'tool' %}
{{- '<|im_start|>user\n<tool_response>\n' + message['content'] + '\n</tool_response><|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}
"""

_SYSTEM_PROMPT_TEMPLATE = """
{%- if messages[0]['role'] != 'system' %}{{- '<|system|>\nYou are a tiny test model.</s>\n' }}{%- endif %}
{%- for message in messages %}
{{- '<|' + message['role'] + '|>\n' + message['content'] + '</s>\n' }}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}{%- endif %}
"""

# Per kind: special tokens (bos, eos, pad), extra added tokens (normal text, kept in decoded output), template.
_TOKENS = {
    "llama-tools": {
        "bos": "<s>", "eos": "<|im_end|>", "pad": "<pad>",
        "special": ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"],
        "added": ["<tool_call>", "</tool_call>"],
        "template": _CHATML_TOOLS_TEMPLATE,
    },
    "gpt2-plain": {
        "bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": None,
        "special": ["<|endoftext|>"],
        "added": [],
        "template": None,
    },
    "system-prompt": {
        "bos": None, "eos": "</s>", "pad": "<pad>",
        "special": ["</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"],
        "added": [],
        "template": _SYSTEM_PROMPT_TEMPLATE,
    },
}


def build_tiny_tokenizer(kind: str):
    """A byte-level fast tokenizer for `kind` (a `PreTrainedTokenizerFast`), built without training."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    spec = _spec(kind)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(spec["special"])}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    for tok in spec["added"]:
        vocab[tok] = len(vocab)
    raw = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raw.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        additional_special_tokens=[t for t in spec["special"] if t not in (spec["bos"], spec["eos"], spec["pad"])],
        clean_up_tokenization_spaces=False,
        model_max_length=_context(kind),
    )
    if spec["added"]:
        tok.add_tokens(spec["added"], special_tokens=False)
    if spec["template"] is not None:
        tok.chat_template = spec["template"]
    return tok


def tiny_llama_config(vocab_size: int, *, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                      kv_heads: int = 2, intermediate_size: int = 128, context: int = 512, **ids):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=context, tie_word_embeddings=False, **ids,
    )


def build_tiny_model(kind: str, dest_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Build the tiny model `kind` into `dest_dir` (created; reused when it already holds the same build).

    Returns the directory, loadable with `AutoModelForCausalLM.from_pretrained` /
    `AutoTokenizer.from_pretrained`.
    """
    dest = Path(dest_dir)
    stamp = _stamp(kind, seed)
    marker = dest / "helium_tiny.json"
    if marker.is_file() and json.loads(marker.read_text()).get("stamp") == stamp:
        return dest
    import torch
    from transformers import GenerationConfig

    tok = build_tiny_tokenizer(kind)
    spec = _spec(kind)
    ids = {
        "bos_token_id": tok.convert_tokens_to_ids(spec["bos"]) if spec["bos"] else None,
        "eos_token_id": tok.convert_tokens_to_ids(spec["eos"]),
        "pad_token_id": tok.convert_tokens_to_ids(spec["pad"]) if spec["pad"] else None,
    }
    config = _config(kind, len(tok), ids)
    with _seeded(torch, seed):
        model = _model_class(kind)(config).eval()
    gen = GenerationConfig(
        **{k: v for k, v in ids.items() if v is not None},
        # A model's own defaults, as real instruct models ship them (tests check they apply).
        **({"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
           if kind == "llama-tools" else {}),
    )
    model.generation_config = gen
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=dest.parent if dest.parent.exists() else None))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        dest.mkdir(parents=True, exist_ok=True)
        if marker.exists():
            marker.unlink()  # a half-replaced directory must never look complete
        for f in sorted(tmp.iterdir()):
            os.replace(f, dest / f.name)
        marker.write_text(json.dumps({"kind": kind, "seed": seed, "stamp": stamp}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def install_tiny_into_hf_cache(kind: str, cache_dir: str | os.PathLike, *, seed: int = 0,
                               repo_id: str | None = None) -> str:
    """Put tiny model `kind` into a Hugging Face hub cache (`HF_HUB_CACHE` layout); returns its repo id."""
    repo_id = repo_id or TINY_HUB_IDS[kind]
    cache = Path(cache_dir)
    repo_dir = cache / ("models--" + repo_id.replace("/", "--"))
    revision = hashlib.sha1(_stamp(kind, seed).encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / revision
    if (repo_dir / "refs" / "main").is_file() and (repo_dir / "refs" / "main").read_text() == revision \
            and (snapshot / "helium_tiny.json").exists():
        return repo_id
    with tempfile.TemporaryDirectory() as tmp:
        built = build_tiny_model(kind, Path(tmp) / "m", seed=seed)
        (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        snapshot.mkdir(parents=True, exist_ok=True)
        for f in sorted(built.iterdir()):
            data = f.read_bytes()
            blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
            if not blob.exists():
                blob.write_bytes(data)
            link = snapshot / f.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(os.path.relpath(blob, snapshot))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return repo_id


def _spec(kind: str) -> dict:
    try:
        return _TOKENS[kind]
    except KeyError:
        raise ValueError(f"unknown tiny model kind {kind!r}; one of {', '.join(TINY_KINDS)}") from None


def _context(kind: str) -> int:
    return 1024 if kind == "gpt2-plain" else 2048


def _config(kind: str, vocab_size: int, ids: dict):
    from transformers import GPT2Config, Qwen2Config

    if kind == "llama-tools":
        return tiny_llama_config(vocab_size, context=_context(kind), **ids)
    if kind == "gpt2-plain":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=4, n_positions=_context(kind),
                          **{k: v for k, v in ids.items() if v is not None})
    return Qwen2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=_context(kind),
                       tie_word_embeddings=True, **ids)


def _model_class(kind: str):
    from transformers import GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM

    return {"llama-tools": LlamaForCausalLM, "gpt2-plain": GPT2LMHeadModel,
            "system-prompt": Qwen2ForCausalLM}[kind]


def _stamp(kind: str, seed: int) -> str:
    import transformers

    _spec(kind)
    return f"{kind}:{seed}:{_FORMAT}:{transformers.__version__}"


class _seeded:
    """Seed torch's CPU generator for the block and restore its state after."""

    def __init__(self, torch, seed: int) -> None:
        self.torch, self.seed = torch, seed

    def __enter__(self):
        self.state = self.torch.random.get_rng_state()
        self.torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        self.torch.random.set_rng_state(self.state)
