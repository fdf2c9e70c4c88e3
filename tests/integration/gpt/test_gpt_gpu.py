"""GPU-only GPT checks (run on a lent CUDA machine): CUDA determinism across processes, bitsandbytes 4/8-bit,
vLLM batch-invariant identity under concurrent load."""

from __future__ import annotations

import json

import pytest
import torch

from tests.integration.gpt.test_gpt_determinism import collect, spawn, task_json
from worker.executors.base import Job
from worker.tiny import build_tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return str(build_tiny_model("llama-tools", tmp_path_factory.mktemp("gpu") / "llama"))


@pytest.mark.timeout(300)
def test_cuda_three_processes_agree(llama):
    procs = [spawn(task_json(llama, 42), "--device", "cuda"),
             spawn(task_json(llama, 42), "--device", "cuda", "--before", task_json(llama, 5)),
             spawn(task_json(llama, 42), task_json(llama, 43), "--device", "cuda")]
    (a,), (b,), (c, other) = (collect(p) for p in procs)
    assert a["token_ids"] == b["token_ids"] == c["token_ids"] and a["result_hash"] == b["result_hash"] == c["result_hash"]
    assert other["result_hash"] != a["result_hash"]


@pytest.mark.parametrize("bits", [4, 8])
def test_bitsandbytes_quantized_on_cuda(llama, bits):
    pytest.importorskip("bitsandbytes")
    from helium.tasks.gpt import load_gpt_task
    from worker.executors.gpt import GptExecutor

    ex = GptExecutor(device="cuda", backend="transformers")
    assert bits in ex.capabilities().quantize_bits
    doc = json.loads(task_json(llama, 42)) | {"quantize_bits": bits, "dtype": "float16"}
    first = ex.execute(Job("0x01", "a", load_gpt_task(doc)))
    again = ex.execute(Job("0x01", "a", load_gpt_task(doc)))
    assert first.outcome.result_hash == again.outcome.result_hash and first.choices[0].token_ids
    import bitsandbytes as bnb

    (key,) = ex.cache.keys()
    layer = ex.cache.get(key).model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt)
    ex.close()


@pytest.mark.timeout(600)
def test_vllm_batch_invariant_under_concurrent_load(llama):
    pytest.importorskip("vllm")
    from vllm.inputs import TokensPrompt

    from helium.tasks.gpt import load_gpt_task
    from worker.executors.gpt import GptExecutor

    ex = GptExecutor(device="cuda", backend="vllm")
    task = load_gpt_task(json.loads(task_json(llama, 42)) | {"generation_config": {
        "max_new_tokens": 24, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "num_return_sequences": 2}})
    alone = ex.execute(Job("0x01", "a", task))
    # The same request batched with 31 others in one engine step must give the same tokens.
    backend = ex.backend
    loaded = backend.load(task)
    prep = backend.prepare(task, loaded)
    others = [TokensPrompt(prompt_token_ids=prep.prompt_ids[: 5 + i]) for i in range(31)]
    outs = loaded.model.generate([TokensPrompt(prompt_token_ids=prep.prompt_ids), *others],
                                 [backend.sampling_params(prep)] * 32, use_tqdm=False)
    batched = [list(c.token_ids) for c in sorted(outs[0].outputs, key=lambda c: c.index)]
    assert [list(c.token_ids) for c in alone.choices] == [
        list(ids[: len(c.token_ids)]) for ids, c in zip(batched, alone.choices, strict=True)]
    again = ex.execute(Job("0x01", "a", task))
    assert again.outcome.result_hash == alone.outcome.result_hash
    ex.close()
