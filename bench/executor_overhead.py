"""Executor overhead: tokens/s through `GptExecutor.run` against raw `model.generate` on the same model.

Same process, same loaded model object, same prompt ids, same seed and generation
arguments (so both produce the same tokens), runs alternated so that machine
noise hits both; each side's figure is its best run (the least disturbed by
other load). Two models: the tiny Llama from `worker.tiny`, and a ~100M-parameter
random Llama built from a config (the figure).

    python -m bench.executor_overhead [--rounds 4] [--tokens 16] [--threads 1]

One intra-op thread by default: on a shared CI box OpenMP spin-waiting turns
other load into large, one-sided noise; `--threads 0` keeps torch's default.
The ratio is taken from process CPU time (best run each side), which other
processes on a busy box cannot inflate; the wall-clock ratio is printed too.
The value is Helium's wall-clock tokens/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import structlog

FIGURE = "executor_overhead"


def build_100m(dest: Path) -> tuple[str, int]:
    import torch

    from worker.tiny import build_tiny_tokenizer, tiny_llama_config

    tok = build_tiny_tokenizer("llama-tools")
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config = tiny_llama_config(
        len(tok),
        hidden_size=768,
        layers=12,
        heads=12,
        kv_heads=12,
        intermediate_size=2304,
        context=2048,
        **ids,
    )
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    return str(dest), params


def measure(model_dir: str, *, rounds: int, tokens: int, device: str = "cpu", dtype: str = "float32") -> dict:
    """Best-of-`rounds` tokens/s through the executor and through raw `generate` on the same loaded model
    (`device` "cuda" too: the GPU check uses this), and their wall and CPU-time ratios."""
    import torch

    from helium.tasks.gpt import load_gpt_task
    from worker.executors.base import Job
    from worker.executors.gpt import GptExecutor
    from worker.models import ModelCache

    ex = GptExecutor(device=device, cache=ModelCache(8 << 30), backend="transformers")
    task = load_gpt_task(
        {
            "model": model_dir,
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "generation_config": {"max_new_tokens": tokens, "do_sample": True},
            "seed": 1,
            "dtype": dtype,
        }
    )
    job = Job(task_id="0x" + "cd" * 32, assignment_id="bench", spec=task)
    first = ex.execute(job)  # loads the model, warms up
    loaded = ex.backend.load(task)
    prep = ex.backend.prepare(task, loaded)
    ids = torch.tensor([prep.prompt_ids], device=loaded.model.device)

    def raw() -> int:
        torch.manual_seed(task.seed)
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **prep.kwargs)
        return out.shape[1] - ids.shape[1]

    def helium() -> int:
        return ex.run(job).completion_tokens

    raw()
    wall = {"helium": float("inf"), "raw": float("inf")}
    cpu = {"helium": float("inf"), "raw": float("inf")}
    counts = {}
    for r in range(rounds):
        order = (("helium", helium), ("raw", raw)) if r % 2 == 0 else (("raw", raw), ("helium", helium))
        for name, fn in order:
            t0, c0 = time.perf_counter(), time.process_time()
            counts[name] = fn()
            wall[name] = min(wall[name], time.perf_counter() - t0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    assert counts["helium"] == counts["raw"] == first.outcome.completion_tokens, counts
    ex.close()
    n = counts["helium"]
    return {"tokens": n, "helium_tok_s": n / wall["helium"], "raw_tok_s": n / wall["raw"],
            "wall_ratio": wall["raw"] / wall["helium"], "cpu_ratio": cpu["raw"] / cpu["helium"]}


def main() -> None:
    import logging

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from worker.tiny import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tiny = str(build_tiny_model("llama-tools", Path(tmp) / "tiny"))
        m = measure(tiny, rounds=args.rounds * 2, tokens=args.tokens * 4)
        print(json.dumps({"model": "tiny-llama", **{k: round(v, 3) for k, v in m.items()}}), flush=True)
        big, params = build_100m(Path(tmp) / "llama100m")
        m = measure(big, rounds=args.rounds, tokens=args.tokens)
        print(json.dumps({"model": "llama-100m", "params": params, **{k: round(v, 3) for k, v in m.items()}}),
              flush=True)
    print(f"figure={FIGURE} value={m['helium_tok_s']:.2f} unit=tokens/s baseline=raw_generate "
          f"ratio={m['cpu_ratio']:.3f}")


if __name__ == "__main__":
    main()
