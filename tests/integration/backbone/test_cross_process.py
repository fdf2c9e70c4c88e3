"""A coordinator and three workers as separate processes on loopback run a GPT task
end to end with a tiny local model, and the creator gets a ChatGPT-style response."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from eth_account import Account

from helium.client import TaskClient, load_task_file
from helium.v1 import task_pb2
from tests.support.procs import spawn

pytestmark = pytest.mark.slow


async def test_gpt_task_across_processes(tmp_path):
    from worker.tiny import install_tiny_into_hf_cache

    hf = tmp_path / "hf"
    model = install_tiny_into_hf_cache("llama-tools", hf)
    env = {"HF_HUB_CACHE": str(hf), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    coord = spawn(["-m", "coordinator", "--data-dir", str(tmp_path / "c"), "--port", "0", "--chain", "none",
                   "--log-level", "warning"], "coordinator")  # fmt: skip
    workers = []
    try:
        address = (await asyncio.to_thread(coord.wait_for, "ready", 60)).split("grpc=")[1].split()[0]
        workers = [spawn(["-m", "worker", "--coordinator", address, "--data-dir", str(tmp_path / f"w{i}"),
                          "--device", "cpu", "--log-level", "warning"], f"worker{i}", env=env) for i in range(3)]  # fmt: skip
        addrs = set()
        for w in workers:
            addrs.add((await asyncio.to_thread(w.wait_for, "ready", 180)).split("node=")[1].split()[0])
        doc = {"model": model, "messages": [{"role": "system", "content": "You are helpful."},
                                            {"role": "user", "content": "Hi"}],
               "generation_config": {"max_new_tokens": 12, "do_sample": True, "temperature": 0.7, "top_p": 0.9},
               "seed": 42}  # fmt: skip
        async with grpc.aio.insecure_channel(address) as ch:
            client = TaskClient(ch, Account.create())
            task = await client.wait(await client.submit(load_task_file(doc), fee=7), timeout=180)
        assert task.state == task_pb2.TASK_STATE_VALIDATED, task.reason
        assert set(task.result.nodes) <= addrs and len(task.result.nodes) >= 2
        resp = json.loads(task.result.output_json)
        assert resp["object"] == "chat.completion" and resp["model"] == model
        choice = resp["choices"][0]
        assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
        assert choice["finish_reason"] in ("stop", "length")
        usage = resp["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    finally:
        for w in workers:
            w.kill9()
        coord.kill9()
