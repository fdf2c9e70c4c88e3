"""The worker on the real model (SmolLM2-135M-Instruct): its prompt is exactly what the tokenizer's chat
template gives (tools included), and seeded sampling, INT8 and INT4 give the same token ids in every run and
every worker process (loaded by hub id from a Hugging Face cache, offline)."""

from __future__ import annotations

import json

import pytest
from realmodel_support import collect, spawn_worker

from helium.tasks.gpt import load_gpt_task
from worker.device import detect_device
from worker.executors.gpt._prompt import tool_dicts
from worker.executors.gpt._transformers import TransformersBackend
from worker.models import ModelCache
from worker.realmodel import HUB_ID

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Capital of Italy?"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke about GPUs."}],
]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def gpt_task(model: str, messages: list[dict], **extra) -> dict:
    return {"model": model, "messages": messages, **extra}


@pytest.fixture(scope="module")
def backend_and_model(real_folder):
    backend = TransformersBackend(detect_device("cpu"), ModelCache(2 * 1024**3))
    loaded = backend.load(load_gpt_task(json.dumps(gpt_task(str(real_folder), CONVERSATIONS[0]))))
    return backend, loaded


def template_ids(tokenizer, messages, tools=None) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["user", "system", "multi-turn"])
def test_the_prompt_is_the_chat_template_exactly(backend_and_model, real_folder, messages):
    backend, loaded = backend_and_model
    prep = backend.prepare(load_gpt_task(json.dumps(gpt_task(str(real_folder), messages))), loaded)
    tok = loaded.tokenizer
    assert prep.prompt_ids == template_ids(tok, messages)
    # Without tools, the converted template renders exactly what the GGUF's own template renders.
    original = json.loads((real_folder / "helium_realmodel.json").read_text())["gguf_chat_template"]
    assert tok.decode(prep.prompt_ids) == tok.apply_chat_template(messages, chat_template=original, tokenize=False,
                                                                  add_generation_prompt=True)
    text = tok.decode(prep.prompt_ids)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>") == len(messages) + (messages[0]["role"] != "system") + 1


def test_tools_reach_the_prompt_through_the_template(backend_and_model, real_folder):
    backend, loaded = backend_and_model
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    task = load_gpt_task(json.dumps(gpt_task(str(real_folder), messages, tools=[WEATHER])))
    prep = backend.prepare(task, loaded)
    tok = loaded.tokenizer
    # The worker hands the template the tool as decoded from the task's proto (same content; its keys come in
    # the proto's field order, not the order the application wrote them).
    assert prep.prompt_ids == template_ids(tok, messages, tools=tool_dicts(task))
    text = tok.decode(prep.prompt_ids)
    assert json.loads(text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]) == WEATHER
    assert text.index("<tools>") < text.index("What is the weather in Paris?")
    without = backend.prepare(load_gpt_task(json.dumps(gpt_task(str(real_folder), messages))), loaded)
    assert "<tools>" not in tok.decode(without.prompt_ids)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_seeded_sampled_task_gives_the_same_ids_in_three_worker_processes(real_hf_cache):
    task = gpt_task(HUB_ID, CONVERSATIONS[2], seed=42, generation_config={
        "max_new_tokens": 16, "do_sample": True, "temperature": 0.9, "top_p": 0.95, "top_k": 50})
    other = {**task, "seed": 43}
    procs = [spawn_worker(real_hf_cache, task), spawn_worker(real_hf_cache, task),
             spawn_worker(real_hf_cache, task, other)]
    (a,), (b,), (c, d) = (collect(p) for p in procs)
    assert a["token_ids"] == b["token_ids"] == c["token_ids"] and len(a["token_ids"][0]) > 3
    assert a["result_hash"] == b["result_hash"] == c["result_hash"]
    assert d["token_ids"] != a["token_ids"]  # the seed matters: 16 tokens sampled from a 49,152-token vocabulary


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_int8_and_int4_run_on_the_real_weights_and_are_deterministic(real_hf_cache):
    def task(bits: int) -> dict:
        return gpt_task(HUB_ID, CONVERSATIONS[0], seed=7, quantize_bits=bits,
                        generation_config={"max_new_tokens": 12, "do_sample": True, "temperature": 0.7})

    q8a, q8b, q4a, q4b = collect(spawn_worker(real_hf_cache, task(8), task(8), task(4), task(4)))
    assert q8a["token_ids"] == q8b["token_ids"] and q8a["result_hash"] == q8b["result_hash"]
    assert q4a["token_ids"] == q4b["token_ids"] and q4a["result_hash"] == q4b["result_hash"]
    assert q8a["token_ids"][0] and q4a["token_ids"][0]
    assert q8a["token_ids"] != q4a["token_ids"]  # two different quantizations of the weights really ran
