"""The gateway's access pieces on their own: the bad-key lockout per address and signed image URLs."""

from __future__ import annotations

import pytest

from coordinator.gateway._access import AuthThrottle, ImageUrls
from coordinator.gateway.errors import PermissionDeniedError, RateLimitError
from coordinator.gateway.keys import KeyStore


def test_an_address_is_locked_out_after_max_failures_and_released_after_the_lockout():
    now = [0.0]
    t = AuthThrottle(max_failures=3, window_s=60, lockout_s=30, clock=lambda: now[0])
    for _ in range(2):
        t.check("1.2.3.4")
        t.failed("1.2.3.4")
    t.check("1.2.3.4")  # two failures: still allowed
    t.failed("1.2.3.4")
    with pytest.raises(RateLimitError) as err:
        t.check("1.2.3.4")
    assert err.value.headers["retry-after"] == "30" and err.value.code == "too_many_invalid_keys"
    t.check("5.6.7.8")  # other addresses are not affected
    now[0] = 31.0
    t.check("1.2.3.4")


def test_failures_outside_the_window_and_a_good_key_reset_the_count():
    now = [0.0]
    t = AuthThrottle(max_failures=3, window_s=10, lockout_s=30, clock=lambda: now[0])
    t.failed("a")
    t.failed("a")
    now[0] = 11.0
    t.failed("a")  # the first two are older than the window
    t.check("a")
    t.failed("a")
    t.succeeded("a")
    t.failed("a")
    t.check("a")


def test_image_urls_are_bound_to_task_index_and_expiry(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    secret = store.secret("image_urls")
    again = KeyStore(tmp_path / "keys.sqlite")
    assert again.secret("image_urls") == secret  # one per store, kept
    again.close()
    assert store.secret("other") != secret
    now = [1000.0]
    urls = ImageUrls(secret, ttl_s=60, clock=lambda: now[0])
    url = urls.url("http://h", "0xabc", 1)
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    urls.check("0xabc", 1, int(query["expires"]), query["sig"])
    for task_id, index, expires in (("0xabd", 1, int(query["expires"])), ("0xabc", 2, int(query["expires"])),
                                    ("0xabc", 1, int(query["expires"]) + 1)):
        with pytest.raises(PermissionDeniedError):
            urls.check(task_id, index, expires, query["sig"])
    with pytest.raises(PermissionDeniedError):
        ImageUrls(b"another secret" * 3, ttl_s=60, clock=lambda: now[0]).check("0xabc", 1, int(query["expires"]),
                                                                               query["sig"])
    now[0] = 1061.0
    with pytest.raises(PermissionDeniedError) as err:
        urls.check("0xabc", 1, int(query["expires"]), query["sig"])
    assert err.value.code == "url_expired"
    store.close()


@pytest.mark.parametrize("trusted", [False, True])
async def test_the_lockout_keys_on_the_forwarded_address_only_behind_a_trusted_proxy(settings, fake_coordinator,
                                                                                    api_key, trusted):
    import dataclasses

    import httpx

    from coordinator.gateway import serve_gateway

    proxies = ("127.0.0.1",) if trusted else ()  # the test client is the peer, at 127.0.0.1
    server = await serve_gateway(dataclasses.replace(settings, trusted_proxies=proxies), fake_coordinator.target)
    try:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(10):  # a flood that rotates its claimed address
                r = await http.get("/v1/tasks/0x" + "ab" * 32, headers={
                    "authorization": f"Bearer sk-helium-guess{i}", "x-forwarded-for": f"10.0.0.{i % 2 + 1}"})
                assert r.status_code in (401, 429)
            r = await http.get("/v1/tasks/0x" + "ab" * 32, headers={
                "authorization": f"Bearer {api_key}", "x-forwarded-for": "10.0.0.9"})
            # Behind a trusted proxy each client has its own count (two addresses, five failures each: none
            # locked, and a third client passes); a spoofed header from the peer itself changes nothing.
            assert r.status_code == (404 if trusted else 429)
    finally:
        await server.stop()
