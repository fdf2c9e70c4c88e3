"""Attack 9: streamed deltas that differ from the final result. A lying node streams first: the
gateway must never complete the stream with the lie.

Real coordinator (in this process, no chain) with its embedded gateway, and three real node
sessions (`worker.session.WorkerNode` over gRPC) whose executors are test doubles: the liar starts
streaming at once and submits a hash no honest node produces; the two honest nodes answer later and
agree. The stream must end with the verification error event (the behaviour `_stream` documents).
"""

from __future__ import annotations

import json
import time

import openai
import pytest

from worker.executors.base import Job, Outcome
from worker.testing import InstantExecutor, LyingExecutor, NodeFleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MODEL = "helium/liar-test"


class StreamingLiar(LyingExecutor):
    """Streams its (wrong) answer word by word, early, then submits the wrong hash."""

    def run(self, job: Job) -> Outcome:
        time.sleep(0.3)  # let the gateway's WatchTask subscribe
        outcome = super().run(job.__class__(task_id=job.task_id, assignment_id=job.assignment_id, spec=job.spec))
        text = json.loads(outcome.output)["choices"][0]["message"]["content"]
        base = {"id": "chatcmpl-liar", "object": "chat.completion.chunk", "model": job.spec.model}
        if job.on_delta is not None:
            job.on_delta({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            for word in text.split(" "):
                job.on_delta({**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]})
                time.sleep(0.05)
        return outcome


@pytest.fixture
async def network(tmp_path):
    from coordinator.config import CoordinatorConfig
    from coordinator.server import CoordinatorApp, backbone_parts

    app = CoordinatorApp(CoordinatorConfig(data_dir=tmp_path / "coordinator", port=0, http_port=0, chain="none",
                                           heartbeat_interval_s=1.0, shutdown_grace_s=1.0), backbone_parts)
    await app.start()

    def executors(i: int):
        if i == 0:
            return [StreamingLiar("gpt", loaded_models=(MODEL,))]
        return [InstantExecutor("gpt", delay=2.0, loaded_models=(MODEL,))]

    try:
        async with NodeFleet(app.address, 3, executors=executors) as fleet:
            yield app, fleet
    finally:
        await app.stop(1.0)


async def test_a_lying_first_streamer_ends_the_stream_with_the_error_event(network, tmp_path):
    from coordinator.gateway.keys import KeyStore

    app, fleet = network
    store = KeyStore(tmp_path / "coordinator" / "gateway" / "keys.sqlite")
    key, _ = store.create("liar-test")
    store.close()
    client = openai.AsyncOpenAI(base_url=f"http://{app.http_address}/v1", api_key=key, max_retries=0, timeout=60)
    try:
        stream = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
        seen, finished = "", False
        with pytest.raises(openai.APIError) as err:
            async for chunk in stream:
                for c in chunk.choices:
                    seen += c.delta.content or ""
                    finished = finished or c.finish_reason is not None
        assert not finished  # never a final chunk after the lie
        assert seen.startswith("instant "), seen  # the liar's words did stream (the test exercised the lie)
        assert err.value.body["type"] == "verification_error"
        assert err.value.body["task_id"].startswith("0x") and "GET /v1/tasks/" in err.value.body["message"]
        done = await client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}])  # the same question, not streamed
        honest = done.parse().choices[0].message.content
        assert not seen.startswith(honest.strip())  # what streamed was the lie, not the majority's answer
    finally:
        await client.close()
