"""The gateway never pretends (issue #13 item 7): a parameter is honoured or refused, a request without a
seed gets a fresh one (reported), a model of the wrong type or an unknown model is refused at intake.

A real coordinator with its embedded gateway on a real port, real node sessions with test-double
executors, and the official `openai` client (with its default retries where they matter).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.adversarial._access_harness import GPT_MODEL, SD_MODEL, access_net

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MSG = [{"role": "user", "content": "hi"}]


def _single_type_nodes(i: int):
    """Nodes 0-2 serve only the GPT model, nodes 3-5 only the SD model: ListModels types are right."""
    from worker.testing import InstantExecutor

    return [InstantExecutor("gpt", loaded_models=(GPT_MODEL,))] if i < 3 else [
        InstantExecutor("sd", loaded_models=(SD_MODEL,))]


async def test_every_unhonoured_parameter_is_a_400_naming_it(tmp_path):
    chat_cases = [
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"store": True}, "store"),
        ({"extra_body": {"frobnicate": 1}}, "frobnicate"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ]
    image_cases = [({"quality": "hd"}, "quality"), ({"style": "vivid"}, "style"),
                   ({"extra_body": {"background": "transparent"}}, "background")]
    async with access_net(tmp_path) as net:
        client = openai.AsyncOpenAI(base_url=net.url + "/v1", api_key=net.create_key("k"), max_retries=0, timeout=30)
        for kw, param in chat_cases:
            with pytest.raises(openai.BadRequestError) as err:
                await client.chat.completions.create(model=GPT_MODEL, messages=MSG, **kw)
            assert err.value.param == param and err.value.body["type"] == "invalid_request_error", (param, err.value)
            assert param in err.value.body["message"]
        for kw, param in image_cases:
            with pytest.raises(openai.BadRequestError) as err:
                await client.images.generate(model=SD_MODEL, prompt="a cat", size="64x64", **kw)
            assert err.value.param == param, (param, err.value)
        assert sum(net.app.store.count_tasks_by_state().values()) == 0  # nothing was sent to the nodes
        # What Helium does anyway is accepted.
        ok = await client.chat.completions.create(model=GPT_MODEL, messages=MSG, parallel_tool_calls=True,
                                                  modalities=["text"], store=False, user="u-1")
        assert ok.choices[0].message.content


async def test_without_a_seed_each_request_draws_a_fresh_one_and_reports_it(tmp_path):
    async with access_net(tmp_path) as net:
        client = openai.AsyncOpenAI(base_url=net.url + "/v1", api_key=net.create_key("k"), max_retries=0, timeout=30)
        answers = [await client.chat.completions.create(model=GPT_MODEL, messages=MSG, temperature=0.8)
                   for _ in range(3)]
        seeds = [a.model_extra["helium"]["seed"] for a in answers]
        assert len(set(seeds)) == 3  # "regenerate" gives a new answer...
        assert len({a.choices[0].message.content for a in answers}) == 3
        assert [a.system_fingerprint for a in answers] == [f"helium-seed-{s}" for s in seeds]
        again = await client.chat.completions.create(model=GPT_MODEL, messages=MSG, temperature=0.8, seed=seeds[0])
        # ...and the reported seed gives the same answer again.
        assert again.choices[0].message.content == answers[0].choices[0].message.content
        image = await client.images.generate(model=SD_MODEL, prompt="a cat", size="64x64")
        assert isinstance(image.model_extra["helium"]["seed"], int)


async def test_a_model_of_another_type_is_refused_at_intake_and_listed_once(tmp_path):
    async with access_net(tmp_path, executors=_single_type_nodes, nodes=6) as net:
        client = openai.AsyncOpenAI(base_url=net.url + "/v1", api_key=net.create_key("k"), max_retries=0, timeout=30)
        with pytest.raises(openai.BadRequestError) as err:
            await client.chat.completions.create(model=SD_MODEL, messages=MSG)
        assert err.value.param == "model" and err.value.code == "model_type_mismatch"
        assert "/v1/images/generations" in err.value.body["message"]
        with pytest.raises(openai.BadRequestError) as err:
            await client.images.generate(model=GPT_MODEL, prompt="a cat", size="64x64")
        assert err.value.param == "model" and err.value.code == "model_type_mismatch"
        assert sum(net.app.store.count_tasks_by_state().values()) == 0  # no node ran anything
        models = (await client.models.list()).data
        assert sorted(m.id for m in models) == sorted([GPT_MODEL, SD_MODEL])
        assert {m.id: m.model_extra["type"] for m in models} == {GPT_MODEL: "gpt", SD_MODEL: "sd"}


async def test_an_unknown_model_is_404_model_not_found_and_not_retried(tmp_path):
    async with access_net(tmp_path) as net:
        sent = []

        async def count(request: httpx.Request) -> None:
            sent.append(request.url.path)

        http = httpx.AsyncClient(event_hooks={"request": [count]})
        # The official client's default retries (2): a 503 would be sent three times, a 404 once.
        client = openai.AsyncOpenAI(base_url=net.url + "/v1", api_key=net.create_key("k"), http_client=http)
        async with http:
            with pytest.raises(openai.NotFoundError) as err:
                await client.chat.completions.create(model="helium/no-such-model", messages=MSG)
        assert err.value.code == "model_not_found" and err.value.param == "model"
        assert err.value.body["type"] == "invalid_request_error"
        assert sent == ["/v1/chat/completions"]
        assert sum(net.app.store.count_tasks_by_state().values()) == 0
