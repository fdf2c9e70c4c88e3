"""The chat and network pages in headless Debian Chromium, against a scripted coordinator."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from coordinator.gateway.keys import KeyStore

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None and not Path(CHROMIUM).exists(),
                                reason="Debian chromium is not installed (make browser)")


async def test_chat_page_streams_and_marks_the_answer_validated_and_network_page_lists_nodes(gateway, settings):
    from playwright.async_api import async_playwright

    store = KeyStore(settings.keys_db_path)
    secret, _ = store.create("page")
    store.close()
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(gateway.url + "/chat")
            await page.fill("#key", secret)
            await page.dispatch_event("#key", "change")
            await page.wait_for_selector("#model option[value=tiny]", state="attached", timeout=10_000)
            await page.select_option("#model", "tiny")
            await page.fill("#prompt", "hello")
            await page.click("#send-button")
            mark = await page.wait_for_selector("[data-testid=validated]", timeout=15_000)
            assert "quorum 2/3" in await mark.inner_text()
            answer = page.locator(".msg.assistant .content").last
            # No seed given: the gateway draws a fresh one for each request (regenerate gives a new answer).
            assert re.fullmatch(r"echo 0 seed=\d+: hello", await answer.inner_text())
            assert (await page.locator(".msg.assistant .task-id").last.inner_text()).startswith("0x")
            await page.screenshot(path=str(ARTIFACTS / "gateway_chat_fake.png"), full_page=True)

            await page.goto(gateway.url + "/")
            await page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
            assert await page.locator("#nodes tbody tr").count() == 3
            assert "cpu" in await page.locator("#cards").inner_text()
            # Aggregates only: the task counts, never a task id or a prompt (those are the creators').
            await page.wait_for_function("document.querySelector('#task-states').innerText.length > 0")
            body = await page.locator("body").inner_text()
            assert "hello" not in body and not re.search(r"0x[0-9a-f]{64}", body)
            await page.screenshot(path=str(ARTIFACTS / "gateway_network_fake.png"), full_page=True)
        finally:
            await browser.close()
