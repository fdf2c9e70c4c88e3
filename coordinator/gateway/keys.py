"""API keys of the gateway, their limits, and the gateway wallet's nonce counter (one SQLite file).

- A key is `sk-helium-<43 url-safe chars>` (256 random bits). Only
  HMAC-SHA256(pepper, key) is stored; the pepper is 32 random bytes made when
  the store is created and kept in the same file (a leaked key table alone
  cannot be tested against guesses from another store). The key is shown once,
  by `create`.
- Rate limit: a token bucket per key, `rate_per_min` requests per minute with a
  burst of the same size. It lives in memory, per gateway process: a restart
  refills the buckets, which is harmless at this granularity.
- Spending limit (wei, optional): before a task is sent, its fee is reserved
  (`spent + reserved + fee <= limit`, in one IMMEDIATE transaction, so two
  gateways on one file cannot overspend). A validated task commits its fee
  (moves it from reserved to spent); an aborted, cancelled or refused task
  releases it. A reservation left behind by a crash stays reserved (the safe
  side) until `release` is called for it.
- Task owners: the key that created each task; `GET /v1/tasks/{id}` and image reads answer only that
  key (another key gets 404, as for a task that does not exist).
- Wallet nonces: `next_nonce()` returns max(last + 1, unix microseconds) and
  stores it, so nonces stay unique across restarts even if the file is lost
  (the clock moves on), and across two gateways sharing this file.
  Two gateways with the same creator key but different files could collide in
  the same microsecond: run one key per file.
Wei amounts are stored as decimal text (they exceed SQLite's 64-bit integers).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from coordinator.gateway.errors import AuthenticationError, PaymentRequiredError, RateLimitError

__all__ = ["ApiKey", "KeyStore", "RateLimiter", "KEY_PREFIX"]

KEY_PREFIX = "sk-helium-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    rate_per_min INTEGER NOT NULL,
    spend_limit_wei TEXT,
    spent_wei TEXT NOT NULL DEFAULT '0',
    reserved_wei TEXT NOT NULL DEFAULT '0'
);
CREATE TABLE IF NOT EXISTS task_owners (
    task_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    task_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL REFERENCES api_keys(id),
    fee_wei TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    hint: str
    created_at: int
    revoked_at: int | None
    rate_per_min: int
    spend_limit_wei: int | None
    spent_wei: int
    reserved_wei: int

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def as_dict(self) -> dict:
        return {
            "id": self.id, "name": self.name, "hint": self.hint, "created_at": self.created_at,
            "revoked": self.revoked, "rate_per_min": self.rate_per_min,
            "spend_limit_wei": None if self.spend_limit_wei is None else str(self.spend_limit_wei),
            "spent_wei": str(self.spent_wei), "reserved_wei": str(self.reserved_wei),
        }


def _row_to_key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"], name=row["name"], hint=row["hint"], created_at=row["created_at"],
        revoked_at=row["revoked_at"], rate_per_min=row["rate_per_min"],
        spend_limit_wei=None if row["spend_limit_wei"] is None else int(row["spend_limit_wei"]),
        spent_wei=int(row["spent_wei"]), reserved_wei=int(row["reserved_wei"]),
    )


class KeyStore:
    """SQLite-backed API keys. Thread-safe; each call opens a short transaction with a deadline."""

    def __init__(self, path: str | os.PathLike, *, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit is not fsynced; power loss may drop the last commits (never corrupts).
        # Nonces stay unique anyway (time floor); a lost reservation only loosens a spending limit once.
        self._db.execute("PRAGMA synchronous=NORMAL")
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            self._db.execute(stmt)
        with self._tx() as db:
            if db.execute("SELECT v FROM meta WHERE k='pepper'").fetchone() is None:
                db.execute("INSERT INTO meta(k, v) VALUES ('pepper', ?)", (secrets.token_hex(32),))
            self._pepper = bytes.fromhex(db.execute("SELECT v FROM meta WHERE k='pepper'").fetchone()[0])
        try:
            os.chmod(self.path, 0o600)
        except OSError:
            pass

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _hash(self, key: str) -> str:
        return hmac.new(self._pepper, key.encode(), hashlib.sha256).hexdigest()

    # --- keys -------------------------------------------------------------------------------------

    def create(self, name: str, *, rate_per_min: int = 60, spend_limit_wei: int | None = None) -> tuple[str, ApiKey]:
        """Makes a key; returns (the secret key, shown only now, and its record)."""
        if rate_per_min < 1:
            raise ValueError(f"rate_per_min must be >= 1, got {rate_per_min}")
        if spend_limit_wei is not None and spend_limit_wei < 0:
            raise ValueError(f"spend_limit_wei must be >= 0, got {spend_limit_wei}")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        hint = secret[: len(KEY_PREFIX) + 4] + "…" + secret[-4:]
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys(id, name, key_hash, hint, created_at, rate_per_min, spend_limit_wei)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, self._hash(secret), hint, int(time.time()), rate_per_min,
                 None if spend_limit_wei is None else str(spend_limit_wei)),
            )
        return secret, self.get(key_id)

    def get(self, key_id: str) -> ApiKey:
        with self._lock:
            row = self._db.execute("SELECT * FROM api_keys WHERE id=?", (key_id,)).fetchone()
        if row is None:
            raise KeyError(key_id)
        return _row_to_key(row)

    def list(self) -> list[ApiKey]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM api_keys ORDER BY created_at, id").fetchall()
        return [_row_to_key(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        with self._tx() as db:
            cur = db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                             (int(time.time()), key_id))
            if cur.rowcount == 0 and db.execute("SELECT 1 FROM api_keys WHERE id=?", (key_id,)).fetchone() is None:
                raise KeyError(key_id)
        return self.get(key_id)

    def authenticate(self, secret: str | None) -> ApiKey:
        """The key's record; AuthenticationError when missing, unknown or revoked."""
        if not secret:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer sk-helium-...'")
        with self._lock:
            row = self._db.execute("SELECT * FROM api_keys WHERE key_hash=?", (self._hash(secret),)).fetchone()
        if row is None:
            raise AuthenticationError("invalid API key")
        key = _row_to_key(row)
        if key.revoked:
            raise AuthenticationError(f"API key {key.id} has been revoked", code="api_key_revoked")
        return key

    # --- spending ---------------------------------------------------------------------------------

    def reserve(self, key_id: str, task_id: str, fee_wei: int) -> None:
        """Reserves `fee_wei` against the key's spending limit; PaymentRequiredError if it would exceed it."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM api_keys WHERE id=?", (key_id,)).fetchone()
            if row is None:
                raise AuthenticationError("invalid API key")
            key = _row_to_key(row)
            if key.spend_limit_wei is not None and key.spent_wei + key.reserved_wei + fee_wei > key.spend_limit_wei:
                raise PaymentRequiredError(
                    f"API key {key.id} spending limit reached: limit {key.spend_limit_wei} wei, spent "
                    f"{key.spent_wei}, reserved {key.reserved_wei}, this request's fee {fee_wei}",
                    code="spending_limit_reached", param="fee",
                )
            db.execute("INSERT INTO reservations(task_id, key_id, fee_wei, created_at) VALUES (?, ?, ?, ?)",
                       (task_id, key_id, str(fee_wei), int(time.time())))
            db.execute("UPDATE api_keys SET reserved_wei=? WHERE id=?", (str(key.reserved_wei + fee_wei), key_id))

    def _finish(self, task_id: str, commit: bool) -> bool:
        with self._tx() as db:
            res = db.execute("SELECT * FROM reservations WHERE task_id=?", (task_id,)).fetchone()
            if res is None:
                return False
            key = _row_to_key(db.execute("SELECT * FROM api_keys WHERE id=?", (res["key_id"],)).fetchone())
            fee = int(res["fee_wei"])
            spent = key.spent_wei + fee if commit else key.spent_wei
            db.execute("UPDATE api_keys SET reserved_wei=?, spent_wei=? WHERE id=?",
                       (str(max(0, key.reserved_wei - fee)), str(spent), key.id))
            db.execute("DELETE FROM reservations WHERE task_id=?", (task_id,))
            return True

    def commit(self, task_id: str) -> bool:
        """The task was validated: its reserved fee is spent. False when nothing was reserved for it."""
        return self._finish(task_id, commit=True)

    def release(self, task_id: str) -> bool:
        """The task was aborted, cancelled or refused: its reserved fee is freed."""
        return self._finish(task_id, commit=False)

    def pending_reservations(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT task_id FROM reservations ORDER BY created_at")]

    # --- task owners ------------------------------------------------------------------------------

    def own(self, task_id: str, key_id: str) -> None:
        """Records that `key_id` created `task_id` (before the task is sent, so no read can race it)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO task_owners(task_id, key_id, created_at) VALUES (?, ?, ?)",
                       (task_id, key_id, int(time.time())))

    def owner(self, task_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT key_id FROM task_owners WHERE task_id=?", (task_id,)).fetchone()
        return None if row is None else row[0]

    def secret(self, name: str) -> bytes:
        """A random 32-byte secret made once per store (for example the image URL signing key)."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO meta(k, v) VALUES (?, ?)", (f"secret:{name}", secrets.token_hex(32)))
            return bytes.fromhex(db.execute("SELECT v FROM meta WHERE k=?", (f"secret:{name}",)).fetchone()[0])

    # --- the gateway wallet's nonces --------------------------------------------------------------

    def next_nonce(self, now_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> int:
        with self._tx() as db:
            row = db.execute("SELECT v FROM meta WHERE k='wallet_nonce'").fetchone()
            nonce = max(int(row[0]) + 1 if row else 0, now_us())
            db.execute("INSERT INTO meta(k, v) VALUES ('wallet_nonce', ?) "
                       "ON CONFLICT(k) DO UPDATE SET v=excluded.v", (str(nonce),))
        return nonce


class RateLimiter:
    """Token buckets per key: `rate_per_min` requests per minute, burst of `rate_per_min`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, last refill time)
        self._lock = threading.Lock()

    def check(self, key_id: str, rate_per_min: int) -> None:
        """Takes one token; RateLimitError (with retry-after) when the bucket is empty."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(rate_per_min), now))
            tokens = min(float(rate_per_min), tokens + (now - last) * rate_per_min / 60.0)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = (1.0 - tokens) * 60.0 / rate_per_min
                raise RateLimitError(
                    f"rate limit of {rate_per_min} requests/min reached for this API key; retry in {wait:.1f}s",
                    headers={"retry-after": str(max(1, round(wait)))},
                )
            self._buckets[key_id] = (tokens - 1.0, now)
