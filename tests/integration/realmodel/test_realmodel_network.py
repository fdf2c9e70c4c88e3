"""The real model through a real network: `helium dev --model real` (coordinator, relay, gateway and three
worker processes) answers the capital-of-France question correctly, validated by the quorum, and its verified
stream gives the same text as the non-streamed answer."""

from __future__ import annotations

import httpx
import openai
import pytest

from coordinator.demo import DevProcess
from worker.realmodel import HUB_ID

# Same xdist group as the other tests that start `helium dev`: two networks at once overload a 2-core runner.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gateway_dev"), pytest.mark.timeout(600)]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def dev(tmp_path_factory, real_folder):
    data = tmp_path_factory.mktemp("realmodel-dev")
    net = DevProcess(data, gpt_model="real", ready_timeout_s=300, extra_args=("--chain", "none")).start()
    yield net
    assert net.stop() == 0, (data / "dev.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def client(dev) -> openai.OpenAI:
    key = dev.create_key("realmodel", rate_per_min=1000)
    client = openai.OpenAI(base_url=dev.url + "/v1", api_key=key, max_retries=0, timeout=300)
    client.helium_key = key
    return client


def stream_text(client, **kw) -> tuple[str, dict]:
    text, helium = "", None
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            text += c.delta.content or ""
        helium = (chunk.model_extra or {}).get("helium") or helium
    return text, helium


def test_the_capital_of_france_is_paris_validated_by_the_quorum(dev, client):
    assert dev.model == HUB_ID
    text, helium = stream_text(client, model=dev.model, messages=QUESTION, max_tokens=24, temperature=0, seed=1)
    assert "Paris" in text, text
    assert helium["validation"].startswith("quorum") and len(helium["nodes"]) >= 2
    assert len({a["node"] for a in helium["assignments"]}) == 3
    task = httpx.get(f"{dev.url}/v1/tasks/{helium['task_id']}", timeout=10,
                     headers={"authorization": f"Bearer {client.helium_key}"}).json()
    assert task["output"]["choices"][0]["message"]["content"] == text


def test_the_verified_stream_matches_the_non_streamed_answer(dev, client):
    ask = {"model": dev.model, "messages": [{"role": "user", "content": "Write a short poem about the sea."}],
           "max_tokens": 20, "temperature": 0.8, "seed": 5}
    streamed, helium = stream_text(client, **ask)
    whole = client.chat.completions.create(**ask)
    assert streamed and streamed == whole.choices[0].message.content
    assert helium["validation"].startswith("quorum") and whole.model_extra["helium"]["validation"].startswith("quorum")
