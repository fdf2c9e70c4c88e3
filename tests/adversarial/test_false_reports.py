"""False error reports (issue #13 item 2): a node that lacks the model is no invalid-args vote, and an
invalid-args report on valid args is a minority result like any other."""

from __future__ import annotations

import asyncio

from coordinator.domain.models import AssignmentState, ErrorKind
from helium.v1 import task_pb2, worker_pb2
from tests.adversarial.conftest import gpt_args, honest
from worker.testing import FailingExecutor


async def test_two_nodes_without_the_model_never_abort_the_task_nor_target_the_honest_one(attack):
    """The exact scenario: two nodes report the model missing, the third runs it. Before, the two reports
    were invalid-args votes: the task was aborted with the fee paid and slash evidence targeted the node
    that ran it. Now they are node-side failures: the task goes to other nodes and is validated."""
    missing = await attack.nodes(2, lambda: FailingExecutor(model_missing=True, delay=0.05))
    runner = (await attack.nodes(1, honest(seconds=0.6)))[0]
    tid = await attack.submit(gpt_args("needs a model"))
    await asyncio.sleep(0.2)  # dispatched to the three above; the spares join for the re-dispatch
    spares = await attack.nodes(2, honest(seconds=0.05))
    task = await attack.finished(tid)
    assert task.state in (task_pb2.TASK_STATE_VALIDATED, task_pb2.TASK_STATE_SETTLED), task.reason
    assert attack.assignments(tid)[runner.address].matched  # the node that ran it matches: never a target
    assigns = attack.assignments(tid)
    for node in missing:
        a = assigns[node.address]
        assert a.state == AssignmentState.ERRORED and a.error_kind == ErrorKind.OUT_OF_MEMORY
        assert "model not found" in a.error
    assert any(assigns[s.address].matched for s in spares if s.address in assigns)
    assert attack.evidence(tid) == []


async def test_a_false_invalid_args_report_on_valid_args_is_outvoted_and_slashed_once_confirmed(attack):
    liar = (await attack.nodes(1, lambda: FailingExecutor(worker_pb2.ERROR_KIND_INVALID_ARGS)))[0]
    await attack.nodes(2, honest(seconds=0.3))
    tid = await attack.submit(gpt_args("valid args"))
    await attack.client.wait(tid, timeout=20)
    await attack.nodes(1, honest(seconds=0.05))  # the fresh node that confirms
    task = await attack.finished(tid)
    assert task.result.validation == "quorum 2/3" and liar.address not in task.result.nodes
    assert attack.assignments(tid)[liar.address].error_kind == ErrorKind.INVALID_ARGS
    assert [e.slashed.node for e in attack.evidence(tid)] == [liar.address]
