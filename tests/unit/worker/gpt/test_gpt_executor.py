"""GptExecutor end to end on tiny CPU models: every field of the example honoured, choices, stop strings,
finish reasons, tool calls, streaming, templates and the plain fallback, refusals and error kinds."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, GenerationMixin

from helium.v1 import worker_pb2
from tests.unit.worker.gpt.conftest import EXAMPLE, TOOL_JSON, job, make_task
from worker.errors import ExecutionCrashError, InvalidArgsError, ModelNotFoundError, OutOfMemoryError
from worker.executors.base import Executor
from worker.executors.gpt import GptExecutor, plain_prompt


def run(executor, task, **kw):
    out = executor.run(job(task, **kw))
    return out, json.loads(out.output)


@pytest.fixture
def generate_calls(monkeypatch):
    calls = []
    original = GenerationMixin.generate

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    return calls


def test_is_an_executor_and_advertises_what_it_runs(executor):
    assert isinstance(executor, Executor) and executor.task_type == "gpt"
    caps = executor.capabilities()
    assert caps.backends == ("transformers",)
    assert {"auto", "float32", "bfloat16"} <= set(caps.dtypes)
    # bitsandbytes 0.50 has CPU kernels for both (probed with a real quantized layer).
    assert caps.quantize_bits == (4, 8)
    assert caps.extra["device"] == "cpu" and caps.extra["card_id"]


def test_example_response_shape_and_every_field_reaches_generate(executor, tiny, generate_calls):
    task = make_task(tiny["llama-tools"], dtype="bfloat16", with_tools=True, generation_config={"max_new_tokens": 6})
    out, resp = run(executor, task)
    assert set(resp) == {"id", "object", "created", "model", "choices", "usage"}
    assert resp["object"] == "chat.completion" and resp["model"] == tiny["llama-tools"]
    assert resp["id"] == "chatcmpl-" + "ab" * 12
    (choice,) = resp["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    assert resp["usage"]["total_tokens"] == resp["usage"]["prompt_tokens"] + resp["usage"]["completion_tokens"]
    assert out.completion_tokens == resp["usage"]["completion_tokens"] <= 6 and len(out.result_hash) == 32
    (kw,) = generate_calls
    gen = kw["generation_config"]
    assert (gen.max_new_tokens, gen.num_beams, gen.repetition_penalty) == (6, 1, pytest.approx(1.1))
    # Sampled by the task's own generator: generate() takes the sampler's pick (greedy over a one-hot).
    (sampler,) = kw["logits_processor"]
    assert not gen.do_sample and sampler.generator.initial_seed() == 42
    warps = {type(w).__name__: w for w in sampler.warpers}
    assert warps["TemperatureLogitsWarper"].temperature == 0.7 and warps["TopKLogitsWarper"].top_k == 50
    assert warps["TopPLogitsWarper"].top_p == pytest.approx(0.9) and warps["MinPLogitsWarper"].min_p == 0.05
    assert "TypicalLogitsWarper" not in warps  # typical_p 1.0: off
    # Stop strings are ours (decoded-text criteria), not transformers' token-string ones.
    assert "stop_strings" not in kw and gen.stop_strings is None
    # dtype reached from_pretrained; the tools reached the chat template (a long tools preamble).
    loaded = executor.cache.get(next(k for k in executor.cache.keys() if "bfloat16" in k.variant))
    assert loaded.model.dtype == torch.bfloat16
    no_tools = make_task(tiny["llama-tools"], dtype="bfloat16")
    assert resp["usage"]["prompt_tokens"] > json.loads(executor.run(job(no_tools)).output)["usage"]["prompt_tokens"] + 100


BASE = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "typical_p": 1.0,
        "repetition_penalty": 1.0, "stop_strings": None, "max_new_tokens": 16}


@pytest.fixture(scope="module")
def base_run(executor, tiny):
    return executor.run(job(make_task(tiny["llama-tools"], generation_config=BASE)))


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 0.3), ("top_p", 0.05), ("top_k", 2), ("min_p", 0.9), ("typical_p", 0.2),
    ("repetition_penalty", 0.5), ("num_beams", 3), ("do_sample", False), ("max_new_tokens", 7),
])
def test_each_generation_field_changes_the_tokens(executor, tiny, field, value, base_run):
    base_out = base_run
    if field == "repetition_penalty":
        # Random weights give near-zero logits, which a penalty barely moves under sampling: compare greedy runs.
        base_out = executor.run(job(make_task(tiny["llama-tools"], generation_config={**BASE, "do_sample": False})))
        value = {"do_sample": False, field: value}
    else:
        value = {field: value}
    changed_out, changed = run(executor, make_task(tiny["llama-tools"], generation_config={**BASE, **value}))
    assert changed_out.result_hash != base_out.result_hash
    if field == "max_new_tokens":
        assert changed["usage"]["completion_tokens"] == 7 and changed["choices"][0]["finish_reason"] == "length"


def test_seed_gives_same_tokens_and_another_seed_others(executor, tiny):
    a, ra = run(executor, make_task(tiny["llama-tools"], generation_config=BASE, seed=1))
    b, rb = run(executor, make_task(tiny["llama-tools"], generation_config=BASE, seed=1))
    c, _ = run(executor, make_task(tiny["llama-tools"], generation_config=BASE, seed=2))
    assert a.result_hash == b.result_hash and ra["choices"] == rb["choices"] and a.result_hash != c.result_hash


def test_model_generation_config_fills_unset_fields(executor, tiny):
    # The tiny llama ships do_sample/temperature 0.7/top_p 0.8/top_k 20/repetition_penalty 1.05.
    unset = make_task(tiny["llama-tools"], generation_config={k: None for k in BASE} | {"max_new_tokens": 16,
                                                                                        "num_beams": None})
    spelled = make_task(tiny["llama-tools"], generation_config={
        "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
        "min_p": None, "typical_p": None, "num_beams": None, "stop_strings": None, "max_new_tokens": 16})
    other = make_task(tiny["llama-tools"], generation_config={
        "do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0,
        "min_p": None, "typical_p": None, "num_beams": None, "stop_strings": None, "max_new_tokens": 16})
    u, s, o = (executor.run(job(t)).result_hash for t in (unset, spelled, other))
    assert u == s != o


def test_several_sequences_sampled_and_from_beams(executor, tiny):
    _, resp = run(executor, make_task(tiny["llama-tools"], generation_config={**BASE, "num_return_sequences": 3}))
    assert [c["index"] for c in resp["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in resp["choices"]}) == 3
    assert resp["usage"]["completion_tokens"] == 3 * 16 or any(c["finish_reason"] == "stop" for c in resp["choices"])
    _, beams = run(executor, make_task(tiny["llama-tools"], generation_config={
        **BASE, "do_sample": False, "num_beams": 3, "num_return_sequences": 2}))
    assert len(beams["choices"]) == 2
    with pytest.raises(InvalidArgsError, match="num_return_sequences must be 1 with greedy decoding"):
        executor.run(job(make_task(tiny["llama-tools"], generation_config={**BASE, "do_sample": False,
                                                                           "num_return_sequences": 2})))


def test_stop_string_cuts_text_and_tokens(executor, tiny):
    cfg = {**BASE, "max_new_tokens": 40}
    base, resp = run(executor, make_task(tiny["llama-tools"], generation_config=cfg))
    text = resp["choices"][0]["message"]["content"]
    stop = next(text[i:i + 2] for i in range(8, len(text) - 2) if "\ufffd" not in text[i:i + 2]
                and text[i:i + 2].strip())
    cut_out, cut = run(executor, make_task(tiny["llama-tools"], generation_config={**cfg, "stop_strings": [stop]}))
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["message"]["content"] == text[:text.find(stop)]
    assert cut_out.completion_tokens < base.completion_tokens
    assert resp["choices"][0]["finish_reason"] == "length" and base.completion_tokens == 40


def test_tool_calls_parsed_end_to_end(executor, tool_model):
    out, resp = run(executor, make_task(tool_model, with_tools=True, generation_config={"stop_strings": None}))
    (choice,) = resp["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Sure"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == json.loads(TOOL_JSON)["arguments"]
    # Without tools in the task the same output stays text.
    _, plain = run(executor, make_task(tool_model, generation_config={"stop_strings": None}))
    assert "<tool_call>" in plain["choices"][0]["message"]["content"]
    assert plain["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("kind", ["llama-tools", "gpt2-plain", "system-prompt"])
def test_streamed_deltas_add_up_and_result_is_identical(executor, tiny, kind):
    task = make_task(tiny[kind], with_tools=kind == "llama-tools",
                     generation_config={**BASE, "num_return_sequences": 2, "max_new_tokens": 30,
                                        "stop_strings": ["e", "###"]})
    plain, plain_resp = run(executor, task)
    chunks = []
    streamed, resp = run(executor, task, on_delta=chunks.append)
    assert streamed.result_hash == plain.result_hash
    assert {**resp, "created": 0} == {**plain_resp, "created": 0}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == resp["id"] for c in chunks)
    for choice in resp["choices"]:
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == choice["index"]]
        assert "".join(d["delta"].get("content", "") for d in mine) == (choice["message"]["content"] or "")
        assert mine[-1]["finish_reason"] == choice["finish_reason"]
        assert len(mine) >= 3 or choice["message"]["content"] in ("", None)


def test_streamed_tool_call(executor, tool_model):
    chunks = []
    _, resp = run(executor, make_task(tool_model, with_tools=True, generation_config={"stop_strings": None}),
                  on_delta=chunks.append)
    deltas = [c["choices"][0] for c in chunks]
    assert "".join(d["delta"].get("content", "") for d in deltas) == "Sure"
    assert deltas[-1]["finish_reason"] == "tool_calls"
    assert deltas[-1]["delta"]["tool_calls"][0]["function"] == resp["choices"][0]["message"]["tool_calls"][0]["function"]


def test_templates_and_plain_fallback(executor, tiny):
    gpt2 = make_task(tiny["gpt2-plain"], with_tools=True, generation_config={"max_new_tokens": 4})
    _, resp = run(executor, gpt2)
    tok = AutoTokenizer.from_pretrained(tiny["gpt2-plain"])
    expected = plain_prompt([{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hi"}],
                            EXAMPLE["tools"])
    assert expected.startswith("Tools:\n") and expected.endswith("System: You are helpful.\n\nUser: Hi\n\nAssistant:")
    assert resp["usage"]["prompt_tokens"] == len(tok(expected)["input_ids"])
    # The system-prompt model puts its default system prompt first when the task has none.
    sys_tok = AutoTokenizer.from_pretrained(tiny["system-prompt"])
    no_system = make_task(tiny["system-prompt"], messages=[{"role": "user", "content": "Hi"}],
                          generation_config={"max_new_tokens": 2})
    _, r = run(executor, no_system)
    text = "<|system|>\nYou are a tiny test model.</s>\n<|user|>\nHi</s>\n<|assistant|>\n"
    assert r["usage"]["prompt_tokens"] == len(sys_tok(text, add_special_tokens=False)["input_ids"])


def test_prompt_longer_than_context_names_both_numbers(executor, tiny):
    task = make_task(tiny["gpt2-plain"], messages=[{"role": "user", "content": "x" * 1500}])
    with pytest.raises(InvalidArgsError, match=r"the prompt is \d+ tokens, longer than the model's context of 1024"):
        executor.run(job(task))


def test_bad_field_is_refused_before_any_model_work(executor):
    task = make_task("/nonexistent/model", generation_config={"top_p": 1.5})
    with pytest.raises(InvalidArgsError, match=r"generation_config.top_p must be in \(0, 1\], got 1.5") as err:
        executor.run(job(task))
    assert err.value.kind == worker_pb2.ERROR_KIND_INVALID_ARGS


def test_model_not_found_is_a_node_side_failure_never_an_invalid_args_vote(executor, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for model in (str(tmp_path / "nothing-here"), "helium/no-such-model"):
        with pytest.raises(ModelNotFoundError, match="model not found") as err:
            executor.run(job(make_task(model)))
        # Issue #13: hub, network and disk failures raise it too; only a property of the args may vote.
        assert err.value.kind == worker_pb2.ERROR_KIND_OUT_OF_MEMORY and not isinstance(err.value, InvalidArgsError)


@pytest.mark.parametrize("bits", [4, 8])
def test_quantization_refused_where_the_device_cannot_run_it(executor, tiny, bits, monkeypatch):
    """A device whose bitsandbytes cannot run `bits` (probe failed, or no kernels) refuses, naming the device."""
    monkeypatch.setattr(executor.backend, "quantize_bits", lambda: ())
    with pytest.raises(InvalidArgsError, match=rf"quantize_bits: {bits}-bit quantization is not supported on device "
                                               r"cpu"):
        executor.run(job(make_task(tiny["llama-tools"], quantize_bits=bits)))


@pytest.mark.parametrize("bits", [4, 8])
def test_int4_and_int8_run_on_cpu(executor, tiny, bits):
    import bitsandbytes as bnb

    task = make_task(tiny["llama-tools"], quantize_bits=bits, dtype="auto")
    first = executor.execute(job(task))
    assert first.outcome.completion_tokens > 0
    assert executor.execute(job(task)).outcome.result_hash == first.outcome.result_hash
    (key,) = [k for k in executor.cache.keys() if k.variant.endswith(f"q{bits}")]
    model = executor.cache.get(key).model
    layer_type = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer_type) for m in model.modules()), "the model was not really quantized"


def test_oom_is_a_resource_error_and_a_crash_names_its_kind(executor, tiny, monkeypatch):
    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(GenerationMixin, "generate", oom)
    with pytest.raises(OutOfMemoryError) as err:
        executor.run(job(make_task(tiny["llama-tools"])))
    assert err.value.kind == worker_pb2.ERROR_KIND_OUT_OF_MEMORY

    def crash(self, *a, **k):
        raise IndexError("index out of range in self")

    monkeypatch.setattr(GenerationMixin, "generate", crash)
    with pytest.raises(ExecutionCrashError, match="IndexError: index out of range") as err:
        executor.run(job(make_task(tiny["llama-tools"])))
    assert err.value.kind == worker_pb2.ERROR_KIND_CRASH


def test_cancellation_stops_generation(executor, tiny):
    with pytest.raises(ExecutionCrashError, match="cancelled"):
        executor.run(job(make_task(tiny["llama-tools"]), is_cancelled=lambda: True))


def test_hub_id_from_the_hf_cache_offline_and_advertised(tmp_path, monkeypatch):
    from worker.models import ModelCache
    from worker.tiny import install_tiny_into_hf_cache

    cache_dir = tmp_path / "hub"
    repo = install_tiny_into_hf_cache("gpt2-plain", cache_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    ex = GptExecutor(device="cpu", cache=ModelCache(1 << 30))
    assert ex.capabilities().cached_models == (repo,) and ex.capabilities().loaded_models == ()
    _, resp = run(ex, make_task(repo, generation_config={"max_new_tokens": 3}))
    assert resp["model"] == repo and resp["usage"]["completion_tokens"] >= 1
    assert ex.capabilities().loaded_models == (repo,)


def test_sampling_ignores_other_threads_drawing_from_the_process_wide_generator(executor, tiny):
    """Issue #13 item 9: a sampled task (the model's own config turns sampling on) gave one of three nodes
    another hash. Another thread drawing from the process-wide generator between seeding and generating
    (a model load, a capabilities probe) changed its tokens; each task now samples from its own generator.
    Fails on the old code: the draws below move the tokens."""
    import threading

    import torch

    task = make_task(tiny["llama-tools"], seed=7, generation_config={"do_sample": None, "temperature": None,
                                                                     "top_p": None, "top_k": None, "min_p": None,
                                                                     "typical_p": None, "repetition_penalty": None,
                                                                     "num_return_sequences": 2, "stop_strings": None})
    quiet = executor.execute(job(task))
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            torch.rand(64)

    t = threading.Thread(target=draw, daemon=True)
    t.start()
    try:
        noisy = [executor.execute(job(task)) for _ in range(3)]
    finally:
        stop.set()
        t.join()
    assert len(quiet.choices) == 2 and quiet.choices[0].token_ids != quiet.choices[1].token_ids  # it sampled
    assert all(r.outcome.result_hash == quiet.outcome.result_hash for r in noisy)
    model_config = executor.backend.load(task).model.generation_config
    assert model_config.do_sample is True and model_config.temperature == 0.7  # the cached defaults, untouched
