"""One worker process for the cross-process determinism tests: run GPT tasks, print what they produced.

    python tests/integration/gpt/gpt_worker_proc.py TASK_JSON [TASK_JSON ...] [--before OTHER_TASK_JSON]
                                                    [--device cpu] [--backend transformers]

Prints one JSON line per task: {"result_hash": hex, "token_ids": [[...] per choice], "finish": [...],
"output": {...}}. `--before` runs another task first, unreported ("whatever the worker ran before").
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--before")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="transformers")
    args = parser.parse_args()

    from helium.tasks.gpt import load_gpt_task
    from worker.executors.base import Job
    from worker.executors.gpt import GptExecutor

    ex = GptExecutor(device=args.device, backend=args.backend)
    if args.before:
        ex.run(Job(task_id="0x" + "11" * 32, assignment_id="before", spec=load_gpt_task(args.before)))
    for task in args.tasks:
        run = ex.execute(Job(task_id="0x" + "22" * 32, assignment_id="a", spec=load_gpt_task(task)))
        print(json.dumps({
            "result_hash": run.outcome.result_hash.hex(),
            "token_ids": [list(c.token_ids) for c in run.choices],
            "finish": [c.finish_reason for c in run.choices],
            "output": run.response,
        }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
