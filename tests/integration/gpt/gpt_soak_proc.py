"""One worker process of the determinism soak: runs GPT tasks in a shuffled order and prints their hashes.

    python tests/integration/gpt/gpt_soak_proc.py TASKS_JSON_FILE ORDER_SEED

TASKS_JSON_FILE holds [{"id": ..., "task": {...}, "stream": bool}, ...]. While the tasks run, a thread keeps
drawing from torch's process-wide generator (what a model load, a capabilities probe or another node of the
process does), and streamed tasks feed their deltas to a callback. Prints one {"id", "result_hash"} line per
task, then {"done": n}.
"""

from __future__ import annotations

import json
import random
import sys
import threading


def main() -> int:
    path, order = sys.argv[1], int(sys.argv[2])
    import torch

    from helium.tasks.gpt import load_gpt_task
    from worker.executors.base import Job
    from worker.executors.gpt import GptExecutor
    from worker.models import ModelCache

    with open(path, encoding="utf-8") as f:
        tasks = json.load(f)
    random.Random(order).shuffle(tasks)
    ex = GptExecutor(device="cpu", cache=ModelCache(1 << 30), backend="transformers")
    stop = threading.Event()

    def noise() -> None:
        while not stop.wait(0.002):
            torch.rand(16)

    threading.Thread(target=noise, daemon=True).start()
    sink: list = []
    for t in tasks:
        job = Job(task_id="0x" + t["id"].rjust(64, "0"), assignment_id="a", spec=load_gpt_task(t["task"]),
                  on_delta=sink.append if t.get("stream") else None)
        print(json.dumps({"id": t["id"], "result_hash": ex.run(job).result_hash.hex()}), flush=True)
    stop.set()
    print(json.dumps({"done": len(tasks)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
