"""Several CPU nodes in one process (a NodeFleet, or a multi-node worker) share torch's
process-wide generator: sampled tasks run concurrently must still give each node the
tokens it gives alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.unit.worker.gpt.conftest import job, make_task
from worker.models import ModelCache


def test_concurrent_sampling_in_one_process_is_deterministic(tiny):
    from worker.executors.gpt import GptExecutor

    executors = [GptExecutor(device="cpu", cache=ModelCache(2 << 30), backend="transformers") for _ in range(3)]
    try:
        tasks = [make_task(tiny["llama-tools"], seed=s, generation_config={"do_sample": True, "temperature": 1.0,
                                                                          "max_new_tokens": 16}) for s in (1, 2, 3)]  # fmt: skip
        alone = [executors[0].run(job(t)).result_hash for t in tasks]
        for _ in range(2):
            with ThreadPoolExecutor(3) as pool:
                together = list(pool.map(lambda pair: pair[0].run(job(pair[1])).result_hash,
                                         zip(executors, tasks, strict=True)))  # fmt: skip
            assert together == alone
        assert len(set(alone)) == 3
    finally:
        for ex in executors:
            ex.close()
