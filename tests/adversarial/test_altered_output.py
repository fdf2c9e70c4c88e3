"""A node signs the honest result but returns something else (issue #13 item 1): altered text under the
honest GPT hash, an altered image under the honest pHash. The coordinator recomputes the hash / pHash from
what it would return; the cheat is outvoted (never counted, never returned) and its signed result is kept."""

from __future__ import annotations

from coordinator.domain.models import AssignmentState
from tests.adversarial.conftest import gpt_args, honest, sd_args
from worker.testing import AlteredOutputExecutor, instant_result_hash


async def test_altered_text_with_the_honest_hash_is_never_the_answer(attack):
    await attack.nodes(2, honest())
    cheat = (await attack.nodes(1, lambda: AlteredOutputExecutor("gpt")))[0]
    task = await attack.run(gpt_args("what is the capital of France?"))
    assert task.result.validation == "quorum 2/3" and cheat.address not in task.result.nodes
    assert "BUY CHEAP PILLS" not in task.result.output_json and '"token_ids"' in task.result.output_json
    assert task.result.result_hash == instant_result_hash("gpt", gpt_args("what is the capital of France?").gpt)
    a = attack.assignments(task.task_id)[cheat.address]
    assert a.state == AssignmentState.ERRORED and "do not hash to the signed result hash" in a.error
    assert len(a.signature) == 65 and b"BUY CHEAP PILLS" in a.output  # kept as evidence


async def test_an_altered_image_with_the_honest_phash_is_never_the_answer(attack):
    await attack.nodes(2, honest("sd"))
    cheat = (await attack.nodes(1, lambda: AlteredOutputExecutor("sd")))[0]
    task = await attack.run(sd_args(1))
    assert task.state == 3 or task.result.validation.startswith("quorum"), task  # validated
    assert cheat.address not in task.result.nodes and len(task.result.nodes) == 2
    a = attack.assignments(task.task_id)[cheat.address]
    assert a.state == AssignmentState.ERRORED and "pHash" in a.error and a.phashes  # signed pHashes kept
