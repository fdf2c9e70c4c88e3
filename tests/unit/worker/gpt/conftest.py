"""Fixtures for the GPT executor tests: tiny models built on the spot, one CPU executor per module."""

from __future__ import annotations

import copy

import pytest

from helium.tasks.gpt import load_gpt_task
from worker.executors.base import Job
from worker.models import ModelCache
from worker.tiny import TINY_KINDS, build_tiny_model

EXAMPLE = {
    "model": "Qwen/Qwen2.5-7B-Instruct",
    "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
    "generation_config": {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7, "top_p": 0.9,
                          "top_k": 50, "min_p": 0.05, "typical_p": 1.0, "num_beams": 1,
                          "repetition_penalty": 1.1, "num_return_sequences": 1, "stop_strings": ["###"]},
    "seed": 42, "dtype": "bfloat16", "quantize_bits": 4,
}

TOOL_JSON = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: str(build_tiny_model(kind, root / kind)) for kind in TINY_KINDS}


@pytest.fixture(scope="session")
def tool_model(tiny, tmp_path_factory) -> str:
    """llama-tools rewired into a bigram machine that always answers `Sure<tool_call>{...}</tool_call>`."""
    return build_chain_model(tiny["llama-tools"], tmp_path_factory.mktemp("chain") / "m",
                             ["Ċ", "Sure", "<tool_call>", TOOL_JSON, "</tool_call>", "<|im_end|>"])


def build_chain_model(src: str, dest, chain: list[str]) -> str:
    """Test-only weights: attention and MLP outputs zeroed, so the next token depends only on the last one;
    embeddings of the chain tokens one-hot and lm_head mapping each to its successor."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    tok.add_tokens([t for t in chain if t not in tok.get_vocab()], special_tokens=False)
    model = AutoModelForCausalLM.from_pretrained(src)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    ids = tok.convert_tokens_to_ids(chain)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb, head = model.get_input_embeddings().weight, model.lm_head.weight
        head.zero_()
        for i, (cur, nxt) in enumerate(zip(ids, ids[1:], strict=False)):
            emb[cur].zero_()
            emb[cur, i] = 1.0
            head[nxt, i] = 10.0
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest)


@pytest.fixture(scope="module")
def executor():
    from worker.executors.gpt import GptExecutor

    ex = GptExecutor(device="cpu", cache=ModelCache(2 << 30), backend="transformers")
    yield ex
    ex.close()


def make_task(model: str, *, with_tools: bool = False, **changes):
    """The example task on a tiny model: float32, no quantization, 24 new tokens, tools only when asked
    (the tools preamble is ~500 byte-level tokens, slow to prefill on a small CPU)."""
    doc = copy.deepcopy(EXAMPLE)
    doc["model"] = model
    if not with_tools:
        doc.pop("tools")
    doc.pop("quantize_bits")
    doc["dtype"] = "float32"
    doc["generation_config"]["max_new_tokens"] = 24
    gen = changes.pop("generation_config", None)
    if gen is not None:
        doc["generation_config"].update(gen)
        doc["generation_config"] = {k: v for k, v in doc["generation_config"].items() if v is not None}
    doc.update(changes)
    return load_gpt_task({k: v for k, v in doc.items() if v is not None})


def job(task, *, task_id: str = "0x" + "ab" * 32, on_delta=None, is_cancelled=None) -> Job:
    kw = {"on_delta": on_delta}
    if is_cancelled is not None:
        kw["is_cancelled"] = is_cancelled
    return Job(task_id=task_id, assignment_id="a-1", spec=task, **kw)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy CI box OpenMP spin-waiting makes each
    op up to 100x slower; one thread keeps these tests fast. Restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
