"""The official `openai` client against `helium dev`: the gateway, a coordinator and three real workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator.gateway.keys import KeyStore

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("gateway_dev"), pytest.mark.timeout(600)]

MSG = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def key(dev) -> str:
    return dev.create_key("tests", rate_per_min=1000)


def _client(dev, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=dev.url + "/v1", api_key=key, max_retries=0, timeout=300)


def _task(dev, key: str, task_id: str) -> dict:
    return httpx.get(f"{dev.url}/v1/tasks/{task_id}", headers={"authorization": f"Bearer {key}"}, timeout=10).json()


def test_models_lists_the_dev_model_with_its_card(dev, key):
    models = {m.id: m for m in _client(dev, key).models.list().data}
    assert dev.model in models and dev.tool_model in models
    assert models[dev.model].model_extra["nodes"] == 3 and models[dev.model].model_extra["cards"]


def test_plain_completion_is_validated_by_the_quorum(dev, key):
    raw = _client(dev, key).chat.completions.with_raw_response.create(model=dev.model, messages=MSG, max_tokens=8)
    done = raw.parse()
    helium = done.model_extra["helium"]
    assert raw.headers["x-helium-task-id"] == helium["task_id"]
    assert raw.headers["x-helium-validation"] == helium["validation"] and helium["validation"].startswith("quorum")
    assert len(helium["nodes"]) >= 2 and len({a["node"] for a in helium["assignments"]}) == 3
    assert done.choices[0].message.role == "assistant" and done.choices[0].finish_reason in ("stop", "length")
    assert done.usage.completion_tokens > 0


def test_streamed_chunks_concatenate_to_the_validated_content(dev, key):
    stream = _client(dev, key).chat.completions.create(model=dev.model, messages=MSG, max_tokens=12, stream=True,
                                                       stream_options={"include_usage": True})
    text, finish, helium, usage = "", None, None, None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
        helium = (chunk.model_extra or {}).get("helium") or helium
        usage = chunk.usage or usage
    assert finish in ("stop", "length") and helium and usage.completion_tokens > 0
    validated = _task(dev, key, helium["task_id"])["output"]["choices"][0]["message"]["content"] or ""
    assert text == validated and text
    assert helium["streamed_by"] in {a["node"] for a in helium["assignments"]}


def test_n2_gives_two_choices(dev, key):
    done = _client(dev, key).chat.completions.create(model=dev.model, messages=MSG, n=2, temperature=1.0,
                                                     max_tokens=8)
    assert sorted(c.index for c in done.choices) == [0, 1]


def test_seed_gives_repeatable_output(dev, key):
    def ask(seed: int) -> str:
        return _client(dev, key).chat.completions.create(
            model=dev.model, messages=MSG, seed=seed, temperature=1.0, max_tokens=10).choices[0].message.content

    first = ask(11)
    assert ask(11) == first
    assert ask(12) != first  # random weights, 10 sampled bytes: a collision would be a 1-in-2^80 event


def test_tools_produce_tool_calls(dev, key):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    done = _client(dev, key).chat.completions.create(model=dev.tool_model, messages=MSG, tools=tools, max_tokens=8)
    call = done.choices[0].message.tool_calls[0]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Oslo"}'
    stream = _client(dev, key).chat.completions.create(model=dev.tool_model, messages=MSG, tools=tools,
                                                       max_tokens=8, stream=True)
    names, finish = [], None
    for chunk in stream:
        for c in chunk.choices:
            names += [tc.function.name for tc in c.delta.tool_calls or () if tc.function and tc.function.name]
            finish = c.finish_reason or finish
    assert names == ["get_weather"] and finish == "tool_calls"


def test_images_come_back_validated_as_b64_png_and_as_urls(dev, key):
    import base64
    import hashlib

    client = _client(dev, key)
    raw = client.images.with_raw_response.generate(model=dev.sd_model, prompt="a red cube", n=2, size="64x64",
                                                   extra_body={"steps": 2, "seed": 5})
    done = raw.parse()
    assert raw.headers["x-helium-validation"].startswith("quorum")
    pngs = [base64.b64decode(d.b64_json) for d in done.data]
    assert len(pngs) == 2 and all(p.startswith(b"\x89PNG") for p in pngs)
    task = _task(dev, key, done.model_extra["helium"]["task_id"])
    assert [hashlib.sha256(p).hexdigest() for p in pngs] == [i["sha256"] for i in task["output"]["images"]]
    urls = client.images.generate(model=dev.sd_model, prompt="a red cube", n=1, size="64x64",
                                  response_format="url", extra_body={"steps": 2, "seed": 5})
    fetched = httpx.get(urls.data[0].url, timeout=10)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert fetched.content == pngs[0]  # same seed, same first image


@pytest.mark.parametrize(("kw", "status", "code"), [
    ({"top_p": 1.5}, 400, None),
    ({"extra_body": {"fee": str(10**30)}}, 402, "insufficient_deposit"),
    ({"model": "nobody/serves-this"}, 404, "model_not_found"),
])
def test_error_statuses(dev, key, kw, status, code):
    args = {"model": dev.model, "messages": MSG, "max_tokens": 4, **kw}
    with pytest.raises(openai.APIStatusError) as err:
        _client(dev, key).chat.completions.create(**args)
    assert err.value.status_code == status
    assert err.value.code == code if code else err.value.param == "top_p"


def test_bad_revoked_rate_limited_and_overspending_keys(dev):
    with pytest.raises(openai.AuthenticationError):
        _client(dev, "sk-helium-not-a-key").chat.completions.create(model=dev.model, messages=MSG, max_tokens=4)
    store = KeyStore(dev.keys_db)
    try:
        secret, k = store.create("revoked")
        _client(dev, secret).chat.completions.create(model=dev.model, messages=MSG, max_tokens=4)
        store.revoke(k.id)
        with pytest.raises(openai.AuthenticationError):
            _client(dev, secret).chat.completions.create(model=dev.model, messages=MSG, max_tokens=4)

        slow, _ = store.create("slow", rate_per_min=1)
        _client(dev, slow).chat.completions.create(model=dev.model, messages=MSG, max_tokens=4)
        with pytest.raises(openai.RateLimitError):
            _client(dev, slow).chat.completions.create(model=dev.model, messages=MSG, max_tokens=4)

        capped, k = store.create("capped", spend_limit_wei=3 * 10**15)
        client = _client(dev, capped)
        client.chat.completions.create(model=dev.model, messages=MSG, max_tokens=4, extra_body={"fee": str(2 * 10**15)})
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model=dev.model, messages=MSG, max_tokens=4,
                                           extra_body={"fee": str(2 * 10**15)})
        assert err.value.status_code == 402 and err.value.code == "spending_limit_reached"
        client.chat.completions.create(model=dev.model, messages=MSG, max_tokens=4, extra_body={"fee": str(10**15)})
    finally:
        store.close()


def test_metrics_parse_and_move_after_a_task(dev, key):
    def total(name: str) -> float:
        text = httpx.get(dev.url + "/metrics", timeout=10).text
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

    before = total("helium_gateway_requests_total"), total("helium_gateway_answer_seconds_count")
    _client(dev, key).chat.completions.create(model=dev.model, messages=MSG, max_tokens=4)
    after = total("helium_gateway_requests_total"), total("helium_gateway_answer_seconds_count")
    assert after[0] > before[0] and after[1] > before[1]


CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not Path(CHROMIUM).exists() and shutil.which("chromium") is None,
                    reason="Debian chromium is not installed (make browser)")
def test_pages_in_headless_chromium(dev, key):
    from playwright.sync_api import sync_playwright

    artifacts = Path(__file__).resolve().parents[2] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(dev.url + "/chat")
            page.fill("#key", key)
            page.dispatch_event("#key", "change")
            page.wait_for_selector(f"#model option[value='{dev.model}']", state="attached", timeout=15_000)
            page.select_option("#model", dev.model)
            page.fill("#prompt", "Hello, network.")
            page.click("#send-button")
            mark = page.wait_for_selector("[data-testid=validated]", timeout=180_000)
            assert "quorum" in mark.inner_text()
            answer = page.locator(".msg.assistant").last
            task_id = answer.get_attribute("data-task-id")
            validated = _task(dev, key, task_id)["output"]["choices"][0]["message"]["content"] or ""
            assert answer.locator(".content").inner_text().strip() == validated.strip()
            page.screenshot(path=str(artifacts / "gateway_chat.png"), full_page=True)

            page.goto(dev.url + "/")
            page.wait_for_selector("body[data-loaded='1']", timeout=15_000)
            assert page.locator("#nodes tbody tr").count() == 3
            page.wait_for_function("document.querySelector('#task-states').innerText.includes('validated')",
                                   timeout=15_000)
            assert task_id[2:10] not in page.content()  # aggregate figures only: no task ids, no prompts
            page.screenshot(path=str(artifacts / "gateway_network.png"), full_page=True)
        finally:
            browser.close()
