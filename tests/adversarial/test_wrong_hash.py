"""A node answers a wrong result (another hash): outvoted; slashed only once a confirming re-run on a fresh
node makes three matching results disagree with it (issue #13 item 9), never on one disagreement."""

from __future__ import annotations

from tests.adversarial.conftest import gpt_args, honest
from worker.testing import LyingExecutor


async def test_a_wrong_hash_is_outvoted_but_not_slashed_without_a_confirming_run(attack):
    await attack.nodes(2, honest())
    liar = (await attack.nodes(1, lambda: LyingExecutor("gpt")))[0]
    task = await attack.run(gpt_args("q1"))
    assert task.result.validation == "quorum 2/3" and liar.address not in task.result.nodes
    a = attack.assignments(task.task_id)[liar.address]
    assert a.state.value == "submitted" and not a.matched
    assert attack.evidence(task.task_id) == []  # only two matching results: no stake lost on one disagreement


async def test_a_wrong_hash_confirmed_by_a_fresh_node_becomes_slash_evidence(attack):
    await attack.nodes(2, honest(seconds=0.3))
    liar = (await attack.nodes(1, lambda: LyingExecutor("gpt")))[0]
    tid = await attack.submit(gpt_args("q2"))
    await attack.client.wait(tid, timeout=20)
    spare = (await attack.nodes(1, honest(seconds=0.05)))[0]  # free once the liar disagrees
    task = await attack.finished(tid)
    assigns = attack.assignments(tid)
    assert assigns[spare.address].matched and sum(a.matched for a in assigns.values()) == 3
    ev = attack.evidence(tid)
    assert [e.slashed.node for e in ev] == [liar.address]
    assert all(x.node != liar.address for e in ev for x in e.agreeing) and task.result.nodes
