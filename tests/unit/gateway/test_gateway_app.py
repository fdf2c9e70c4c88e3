"""The gateway app on a real port, in front of a scripted coordinator on a real gRPC port."""

from __future__ import annotations

import asyncio
import re

import httpx
import openai
import pytest
from gateway_fakes import MIN_FEE, NODES
from prometheus_client.parser import text_string_to_metric_families

from coordinator.gateway import serve_gateway
from coordinator.gateway.keys import KeyStore

_OPEN: list[openai.AsyncOpenAI] = []


def _client(gateway, key, **kw) -> openai.AsyncOpenAI:
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=20, **kw)
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients():
    yield
    while _OPEN:
        await _OPEN.pop().close()


MSG = [{"role": "user", "content": "hello"}]


async def test_plain_completion_is_the_validated_answer_with_its_helium_info(gateway, api_key, fake_coordinator):
    raw = await _client(gateway, api_key).chat.completions.with_raw_response.create(model="tiny", messages=MSG,
                                                                                    seed=3)
    done = raw.parse()
    assert done.choices[0].message.content == "echo 0 seed=3: hello"
    assert raw.headers["x-helium-validation"] == "quorum 2/3"
    helium = done.model_extra["helium"]
    assert raw.headers["x-helium-task-id"] == helium["task_id"] and helium["task_id"] in fake_coordinator.tasks
    assert helium["nodes"] == NODES[:2] and len(helium["assignments"]) == 3
    req = fake_coordinator.created[-1]
    assert int(req.fee) >= MIN_FEE and req.args.gpt.seed == 3  # signed by the gateway wallet (checked by the fake)


async def test_streamed_chunks_concatenate_to_the_validated_content(gateway, api_key):
    stream = await _client(gateway, api_key).chat.completions.create(model="tiny", messages=MSG, n=2,
                                                                      temperature=0.5, stream=True)
    parts: dict[int, str] = {0: "", 1: ""}
    finishes, helium, fingerprints = {}, None, set()
    async for chunk in stream:
        fingerprints.add(chunk.system_fingerprint)
        for c in chunk.choices:
            parts[c.index] += c.delta.content or ""
            if c.finish_reason:
                finishes[c.index] = c.finish_reason
        helium = (chunk.model_extra or {}).get("helium") or helium
    seed = helium["seed"]  # drawn by the gateway for a request without one, and reported
    assert parts == {0: f"echo 0 seed={seed}: hello", 1: f"echo 1 seed={seed}: hello"}
    assert fingerprints == {f"helium-seed-{seed}"}
    assert finishes == {0: "stop", 1: "stop"} and helium["validation"] == "quorum 2/3"
    assert helium["streamed_by"] == NODES[0]


async def test_a_lying_streamer_ends_the_stream_with_an_error(gateway, api_key):
    stream = await _client(gateway, api_key).chat.completions.create(model="liar", messages=MSG, stream=True)
    seen = ""
    with pytest.raises(openai.APIError) as err:
        async for chunk in stream:
            for c in chunk.choices:
                seen += c.delta.content or ""
                assert c.finish_reason is None
    assert seen.startswith("LIE") and "not validated" in str(err.value)
    assert err.value.body["type"] == "verification_error"


async def test_slow_streamer_is_completed_from_the_validated_answer(gateway, api_key):
    stream = await _client(gateway, api_key).chat.completions.create(model="slow-streamer", messages=MSG, stream=True)
    text = "".join([c.delta.content or "" async for chunk in stream for c in chunk.choices])
    assert re.fullmatch(r"echo 0 seed=\d+: hello", text), text


async def test_tools_produce_tool_calls(gateway, api_key):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    done = await _client(gateway, api_key).chat.completions.create(model="tiny", messages=MSG, tools=tools)
    assert done.choices[0].message.tool_calls[0].function.name == "weather"
    assert done.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(("model", "kw", "exc", "status", "code"), [
    ("tiny", {"top_p": 1.5}, openai.BadRequestError, 400, None),
    ("bad-args", {}, openai.BadRequestError, 400, "invalid_value"),
    ("tiny", {"extra_body": {"fee": 10**30}}, openai.APIStatusError, 402, "insufficient_deposit"),
    ("queue-full", {}, openai.RateLimitError, 429, "queue_full"),
    ("no-nodes", {}, openai.NotFoundError, 404, "model_not_found"),
    ("abort", {}, openai.APIStatusError, 502, "task_aborted"),
])
async def test_error_statuses_use_the_openai_shape(gateway, api_key, model, kw, exc, status, code):
    with pytest.raises(exc) as err:
        await _client(gateway, api_key).chat.completions.create(model=model, messages=MSG, **kw)
    assert err.value.status_code == status
    if code:
        assert err.value.code == code
    if status == 400:
        assert err.value.param == "top_p"


async def test_no_capable_nodes_from_the_coordinator_is_503(settings, fake_coordinator, api_key):
    import dataclasses

    server = await serve_gateway(dataclasses.replace(settings, require_listed_model=False), fake_coordinator.target)
    try:
        with pytest.raises(openai.APIStatusError) as err:
            await _client(server, api_key).chat.completions.create(model="no-nodes", messages=MSG)
        assert err.value.status_code == 503 and err.value.code == "no_capable_nodes"
    finally:
        await server.stop()


async def test_a_task_can_be_read_back_with_its_output(gateway, api_key):
    done = await _client(gateway, api_key).chat.completions.create(model="tiny", messages=MSG)
    task_id = done.model_extra["helium"]["task_id"]
    async with httpx.AsyncClient(base_url=gateway.url, headers={"authorization": f"Bearer {api_key}"}) as http:
        task = (await http.get(f"/v1/tasks/{task_id}")).json()
        text = f"echo 0 seed={done.model_extra['helium']['seed']}: hello"
        assert task["state"] == "validated" and task["output"]["choices"][0]["message"]["content"] == text
        assert (await http.get("/v1/tasks/0x" + "00" * 32)).status_code == 404


async def test_a_schema_error_is_400_naming_the_field(gateway, api_key):
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        r = await http.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "robot"}]},
                            headers={"authorization": f"Bearer {api_key}"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages[0].role" and r.json()["error"]["type"] == "invalid_request_error"


async def test_bad_and_revoked_keys_are_401(gateway, settings):
    with pytest.raises(openai.AuthenticationError):
        await _client(gateway, "sk-helium-wrong").chat.completions.create(model="tiny", messages=MSG)
    store = KeyStore(settings.keys_db_path)
    secret, key = store.create("soon-revoked")
    await _client(gateway, secret).chat.completions.create(model="tiny", messages=MSG)
    store.revoke(key.id)
    with pytest.raises(openai.AuthenticationError) as err:
        await _client(gateway, secret).chat.completions.create(model="tiny", messages=MSG)
    assert err.value.code == "api_key_revoked"
    store.close()


async def test_rate_limit_is_429_and_spending_limit_is_enforced(gateway, settings):
    store = KeyStore(settings.keys_db_path)
    slow, _ = store.create("slow", rate_per_min=1)
    await _client(gateway, slow).chat.completions.create(model="tiny", messages=MSG)
    with pytest.raises(openai.RateLimitError) as err:
        await _client(gateway, slow).chat.completions.create(model="tiny", messages=MSG)
    assert err.value.response.headers["retry-after"]
    capped, key = store.create("capped", rate_per_min=100, spend_limit_wei=3500)
    client = _client(gateway, capped)
    await client.chat.completions.create(model="tiny", messages=MSG, extra_body={"fee": 1000})
    await client.chat.completions.create(model="tiny", messages=MSG, extra_body={"fee": 1000})
    with pytest.raises(openai.APIStatusError) as err:
        await client.chat.completions.create(model="tiny", messages=MSG, extra_body={"fee": 2000})
    assert err.value.status_code == 402 and err.value.code == "spending_limit_reached"
    # an aborted task releases its reservation: the key can still spend the rest
    with pytest.raises(openai.APIStatusError):
        await client.chat.completions.create(model="abort", messages=MSG, extra_body={"fee": 1000})
    deadline = asyncio.get_running_loop().time() + 5
    while store.get(key.id).reserved_wei and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert (store.get(key.id).spent_wei, store.get(key.id).reserved_wei) == (2000, 0)
    await client.chat.completions.create(model="tiny", messages=MSG, extra_body={"fee": 1500})
    store.close()


async def test_models_images_pages_and_network_data(gateway, api_key):
    models = await _client(gateway, api_key).models.list()
    by_id = {m.id: m for m in models.data}
    assert len(by_id) == len(models.data) and by_id["tiny"].model_extra["cards"][0]["name"] == "cpu"
    assert by_id["tiny"].model_extra["types"] == ["gpt", "sd"]
    with pytest.raises(openai.APIStatusError) as err:
        await _client(gateway, api_key).images.generate(model="tiny-sd", prompt="a cat", size="256x256")
    assert err.value.status_code == 404 and err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        await _client(gateway, api_key).images.generate(model="tiny-sd", prompt="a cat", size="huge")
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for page in ("/", "/chat", "/static/app.css"):
            assert (await http.get(page)).status_code == 200
        net = (await http.get("/api/network")).json()
        assert len(net["nodes"]) == 3 and net["stats"]["nodes_by_card"][0]["key"] == "cpu"
        assert (await http.get("/api/tasks")).status_code == 404  # no public list of task ids
        assert all("running_tasks" not in n and isinstance(n["running"], int) for n in net["nodes"])


async def test_images_switched_off_is_501_after_validation(settings, fake_coordinator, api_key):
    import dataclasses

    server = await serve_gateway(dataclasses.replace(settings, images_enabled=False), fake_coordinator.target)
    try:
        with pytest.raises(openai.APIStatusError) as err:
            await _client(server, api_key).images.generate(model="tiny", prompt="a cat", size="256x256")
        assert err.value.status_code == 501 and "switched off" in err.value.message
        with pytest.raises(openai.BadRequestError) as err:
            await _client(server, api_key).images.generate(model="tiny", prompt="a cat", size="7x7")
        assert err.value.param == "size"
    finally:
        await server.stop()


async def test_metrics_parse_and_move_after_a_task(gateway, api_key):
    def sample(text: str, name: str) -> float:
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

    async with httpx.AsyncClient(base_url=gateway.url) as http:
        before = (await http.get("/metrics")).text
        await _client(gateway, api_key).chat.completions.create(model="tiny", messages=MSG)
        after = (await http.get("/metrics")).text
    assert sample(after, "helium_gateway_requests_total") > sample(before, "helium_gateway_requests_total")
    assert sample(after, "helium_gateway_answer_seconds_count") > sample(before, "helium_gateway_answer_seconds_count")


async def test_keys_can_be_switched_off_and_the_coordinator_being_down_is_503(settings, fake_coordinator):
    import dataclasses

    open_settings = dataclasses.replace(settings, require_api_key=False)
    server = await serve_gateway(open_settings, fake_coordinator.target)
    try:
        done = await _client(server, "anything-not-bearer").chat.completions.create(model="tiny", messages=MSG)
        assert done.choices[0].message.content
    finally:
        await server.stop()
    down = await serve_gateway(settings, "127.0.0.1:1")
    try:
        store = KeyStore(settings.keys_db_path)
        secret, _ = store.create("x")
        store.close()
        with pytest.raises(openai.APIStatusError) as err:
            await _client(down, secret).chat.completions.create(model="tiny", messages=MSG)
        assert err.value.status_code == 503 and err.value.code == "coordinator_unavailable"
    finally:
        await down.stop()
