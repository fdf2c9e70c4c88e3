"""bitsandbytes INT8 and INT4 on the CPU, across separate worker processes: the same quantized task gives the
same tokens and result hash in every process (which is what lets CPU nodes advertise quantization)."""

from __future__ import annotations

import json

import pytest

from tests.integration.gpt.test_gpt_determinism import collect, spawn
from worker.tiny import build_tiny_model


@pytest.mark.timeout(300)
def test_quantized_tasks_agree_across_processes(tmp_path):
    llama = str(build_tiny_model("llama-tools", tmp_path / "llama"))

    def task(bits: int) -> str:
        return json.dumps({"model": llama, "messages": [{"role": "user", "content": "Hi"}], "quantize_bits": bits,
                           "generation_config": {"max_new_tokens": 24, "do_sample": True, "temperature": 0.8},
                           "seed": 5})  # fmt: skip

    procs = [spawn(task(8), task(4)) for _ in range(3)]
    results = [collect(p) for p in procs]
    for bits_index in (0, 1):
        hashes = {r[bits_index]["result_hash"] for r in results}
        tokens = {json.dumps(r[bits_index]["token_ids"]) for r in results}
        assert len(hashes) == 1 and len(tokens) == 1, f"quantized run {bits_index} differs across processes"
    assert results[0][0]["token_ids"] and results[0][1]["token_ids"]
