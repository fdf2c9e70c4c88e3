from __future__ import annotations

import json
import sqlite3
import stat

import pytest

from coordinator.gateway import keys_cli
from coordinator.gateway.errors import AuthenticationError, PaymentRequiredError, RateLimitError
from coordinator.gateway.keys import KEY_PREFIX, KeyStore, RateLimiter


@pytest.fixture
def store(tmp_path):
    s = KeyStore(tmp_path / "keys.sqlite")
    yield s
    s.close()


def test_only_a_hash_of_the_key_is_stored(store, tmp_path):
    secret, key = store.create("app", rate_per_min=10)
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40
    assert store.authenticate(secret).id == key.id
    dump = "\n".join(sqlite3.connect(tmp_path / "keys.sqlite").iterdump())
    assert secret not in dump and secret[len(KEY_PREFIX):] not in dump
    assert stat.S_IMODE((tmp_path / "keys.sqlite").stat().st_mode) == 0o600


def test_unknown_missing_and_revoked_keys_are_401(store):
    secret, key = store.create("app")
    with pytest.raises(AuthenticationError):
        store.authenticate(None)
    with pytest.raises(AuthenticationError):
        store.authenticate(KEY_PREFIX + "nope")
    store.revoke(key.id)
    with pytest.raises(AuthenticationError) as err:
        store.authenticate(secret)
    assert err.value.status == 401 and err.value.code == "api_key_revoked"
    with pytest.raises(KeyError):
        store.revoke("key_missing")


def test_keys_survive_a_reopen_with_the_same_pepper(tmp_path):
    a = KeyStore(tmp_path / "k.sqlite")
    secret, key = a.create("app")
    a.close()
    b = KeyStore(tmp_path / "k.sqlite")
    assert b.authenticate(secret).id == key.id
    b.close()


def test_spending_limit_reserve_commit_release(store):
    _, key = store.create("app", spend_limit_wei=10**20)
    store.reserve(key.id, "0xt1", 6 * 10**19)
    with pytest.raises(PaymentRequiredError) as err:
        store.reserve(key.id, "0xt2", 5 * 10**19)  # 6e19 reserved + 5e19 > 1e20
    assert err.value.status == 402 and err.value.code == "spending_limit_reached"
    assert store.release("0xt1") and not store.release("0xt1")
    store.reserve(key.id, "0xt2", 5 * 10**19)
    assert store.commit("0xt2")
    k = store.get(key.id)
    assert (k.spent_wei, k.reserved_wei) == (5 * 10**19, 0)
    store.reserve(key.id, "0xt3", 5 * 10**19)  # exactly at the limit
    with pytest.raises(PaymentRequiredError):
        store.reserve(key.id, "0xt4", 1)
    assert store.pending_reservations() == ["0xt3"]


def test_nonces_are_unique_and_increase_across_reopens(tmp_path):
    a = KeyStore(tmp_path / "k.sqlite")
    first = [a.next_nonce(now_us=lambda: 100) for _ in range(3)]
    assert first == [100, 101, 102]
    a.close()
    b = KeyStore(tmp_path / "k.sqlite")
    assert b.next_nonce(now_us=lambda: 50) == 103  # a clock gone backwards still moves on
    assert b.next_nonce() > 10**15  # time-based floor (unix microseconds)
    b.close()


def test_rate_limiter_token_bucket():
    now = [0.0]
    rl = RateLimiter(clock=lambda: now[0])
    for _ in range(3):
        rl.check("k", 3)
    with pytest.raises(RateLimitError) as err:
        rl.check("k", 3)
    assert err.value.status == 429 and int(err.value.headers["retry-after"]) >= 1
    rl.check("other", 3)  # per key
    now[0] += 20.0  # 3/min refills one token every 20 s
    rl.check("k", 3)
    with pytest.raises(RateLimitError):
        rl.check("k", 3)


def test_keys_cli_create_list_revoke(tmp_path, capsys):
    d = str(tmp_path)
    assert keys_cli.main(["create", "--name", "app", "--rate-per-min", "5", "--spend-limit-wei", "100",
                          "--data-dir", d, "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["key"].startswith(KEY_PREFIX) and made["rate_per_min"] == 5 and made["spend_limit_wei"] == "100"
    assert keys_cli.main(["list", "--data-dir", d]) == 0
    listing = capsys.readouterr().out
    assert made["id"] in listing and "active" in listing and made["key"] not in listing
    assert keys_cli.main(["revoke", made["id"], "--data-dir", d]) == 0
    assert keys_cli.main(["list", "--data-dir", d, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])[0]["revoked"] is True
    assert keys_cli.main(["revoke", "key_nope", "--data-dir", d]) == 1
