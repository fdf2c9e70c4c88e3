"""A tiny Llama rigged to answer every prompt with one Hermes `<tool_call>` block (test double of a model).

The random tiny models never emit a well-formed tool call, so the tools test
needs a model that does. This one is a real `LlamaForCausalLM` with the
`llama-tools` tokenizer and chat template, plus one added token holding the
call's JSON. Its layers are zeroed (attention and MLP outputs are 0), so the
next token depends only on the current one, and the output head is a chain:

    any token -> <tool_call> -> {"name": ..., "arguments": ...} -> </tool_call> -> <|im_end|>
"""

from __future__ import annotations

import json
from pathlib import Path

CALL = {"name": "get_weather", "arguments": {"city": "Oslo"}}


def build_tool_calling_model(dest: str | Path) -> Path:
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from worker.tiny import build_tiny_tokenizer, tiny_llama_config

    dest = Path(dest)
    if (dest / "config.json").exists():
        return dest
    tok = build_tiny_tokenizer("llama-tools")
    payload = json.dumps(CALL)
    tok.add_tokens([payload])
    ids = {"bos_token_id": tok.convert_tokens_to_ids("<s>"), "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"),
           "pad_token_id": tok.convert_tokens_to_ids("<pad>")}
    chain = [tok.convert_tokens_to_ids(t) for t in ("<tool_call>", payload, "</tool_call>", "<|im_end|>")]
    config = tiny_llama_config(len(tok), context=2048, **ids)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, 0] = 1.0  # every token: state 0 -> <tool_call>
        for state, token in enumerate(chain[:3], start=1):
            emb[token].zero_()
            emb[token, state] = 1.0
        head = model.lm_head.weight
        head.zero_()
        for state, token in enumerate(chain):
            head[token, state] = 10.0
    model.generation_config = GenerationConfig(**ids)
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


def install_into_hf_cache(build, cache_dir: str | Path, repo_id: str) -> str:
    """Puts the model `build(dest)` makes into a Hugging Face hub cache (snapshot + refs/main), so workers
    list it as cached and load it by `repo_id` offline."""
    import shutil

    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    if not snapshot.exists():
        tmp = repo / "build"
        build(tmp)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), str(snapshot))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text("0" * 40)
    return repo_id


def install_tool_calling_model(cache_dir: str | Path, repo_id: str = "helium/tiny-tool-caller") -> str:
    return install_into_hf_cache(build_tool_calling_model, cache_dir, repo_id)


def install_tiny_sd(cache_dir: str | Path, repo_id: str = "helium/tiny-sd15") -> str:
    from worker.tiny_sd import install_tiny_sd_into_hf_cache

    return install_tiny_sd_into_hf_cache("sd15", cache_dir, repo_id=repo_id)
