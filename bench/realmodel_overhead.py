"""Executor overhead on the real model: `GptExecutor.run` against a raw `model.generate` on SmolLM2-135M-Instruct.

The embedded default model (worker/realmodel.py; converted once by `make install`), loaded
once; both sides use the same model object, prompt ids (the chat template), seed and
generation arguments, so they produce the same tokens; runs alternate and each side keeps its
best (see bench/executor_overhead.py, whose measurement this reuses).

    python -m bench.realmodel_overhead [--rounds 6] [--tokens 32] [--threads 1]

The value and the ratio are raw `generate` CPU time over the executor's for the same tokens
(1.0: the executor adds nothing; 0.9: it costs 10 % more); wall-clock figures are printed too.
"""

from __future__ import annotations

import argparse
import json
import logging

import structlog

from bench.executor_overhead import measure

FIGURE = "realmodel_executor_overhead"


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from worker.realmodel import HUB_ID, prepare

    folder = prepare()
    m = measure(str(folder), rounds=args.rounds, tokens=args.tokens)
    print(json.dumps({"model": HUB_ID, "tokens": args.tokens, **{k: round(v, 3) for k, v in m.items()}}), flush=True)
    print(f"figure={FIGURE} value={m['cpu_ratio']:.3f} unit=ratio baseline=raw_generate ratio={m['cpu_ratio']:.3f}")


if __name__ == "__main__":
    main()
