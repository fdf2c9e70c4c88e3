"""The chaos run, short (bench/chaos.py runs the long one): tasks through a real network of processes (a
chain node, a coordinator on it, three instant workers) while random parts are `kill -9`ed and restarted.
Every accepted task ends in a final state, the chain settles each at most once and pays each (task, node)
pair at most once, and every node's credit is the sum of what it was paid."""

from __future__ import annotations

import pytest

from bench.chaos import report, run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


async def test_kill9_of_random_parts_loses_no_task_and_pays_no_pair_twice(tmp_path):
    # 0.2 s a task on each node: about as fast as they are sent, so every kill finds tasks in flight.
    result = await run_chaos(tmp_path, tasks=60, interval_s=3.0, seed=7, final_timeout_s=150, work_s=0.2,
                             victims=["coordinator", "w1", "chain", "w0", "network"])  # each kind once
    report(result)
    assert len(result.accepted) + result.refused == 60 and len(result.accepted) >= 50, result.refused
    assert len(result.kills) == 5
    assert result.problems() == []
    assert result.final == len(result.accepted)
