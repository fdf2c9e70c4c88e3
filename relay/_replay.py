"""The relay's replay protection: every request nonce seen within its window, also across restarts.

A signed request is valid for `auth_window` around its timestamp, so a nonce must be remembered that long.
Kept in memory only, a restart would forget them and accept a replay still inside its window; with a
`path`, each nonce is also written to a small SQLite file beside the blobs (WAL; committed before the
request is served) and the ones not yet expired are read back at start. Commits are not fsynced
(``synchronous=NORMAL``): a killed process loses nothing, and a host that loses power is back well after
every window has closed.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
from pathlib import Path

import structlog

from relay.errors import AuthenticationError, ResourceLimitError

__all__ = ["ReplayCache"]

log = structlog.get_logger("relay.auth")

_PURGE_EVERY_S = 10.0  # expired rows are deleted from the file at most this often


class ReplayCache:
    """Nonces seen within the window. Bounded: when full of unexpired nonces it refuses new ones
    (ResourceLimitError) rather than forget one, which would reopen a replay. With `path`, it survives a
    restart (see the module docstring)."""

    def __init__(self, max_entries: int, path: Path | None = None, now: float | None = None) -> None:
        self._max = max_entries
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._db: sqlite3.Connection | None = None
        self._purged_at = 0.0
        self.unsaved = 0  # nonces the file could not take (a full disk): guarded until a restart only
        if path is not None:
            try:
                self._open(Path(path), time.time() if now is None else now)
            except sqlite3.Error as exc:  # unreadable or no room: serve with memory only, and say so
                log.error("relay_nonce_file_unusable", path=str(path), error=str(exc))

    def _open(self, path: Path, now: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce BLOB PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID")
        db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
        for nonce, expires in db.execute("SELECT nonce, expires FROM nonces"):
            self._expiry[bytes(nonce)] = expires
            self._heap.append((expires, bytes(nonce)))
        heapq.heapify(self._heap)
        self._db, self._purged_at = db, now
        if self._expiry:
            log.info("relay_nonces_recovered", path=str(path), nonces=len(self._expiry))

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, nonce = heapq.heappop(self._heap)
            self._expiry.pop(nonce, None)
        if self._db is not None and now - self._purged_at >= _PURGE_EVERY_S:
            self._purged_at = now
            try:
                self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            except sqlite3.Error as exc:
                log.warning("relay_nonce_purge_failed", error=str(exc))

    def add(self, nonce: bytes, expires_at: float, now: float) -> None:
        """Records `nonce` until `expires_at`; AuthenticationError if it is already recorded."""
        self._purge(now)
        if nonce in self._expiry:
            raise AuthenticationError(f"auth.nonce {nonce.hex()} was already used (replayed request)")
        if len(self._expiry) >= self._max:
            raise ResourceLimitError(f"relay nonce cache is full ({self._max} requests in the window); retry later")
        if self._db is not None:
            self._persist(nonce, expires_at)
        self._expiry[nonce] = expires_at
        heapq.heappush(self._heap, (expires_at, nonce))

    def _persist(self, nonce: bytes, expires_at: float) -> None:
        assert self._db is not None
        try:
            try:
                self._db.execute("INSERT INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires_at))
            except sqlite3.IntegrityError:  # recorded by an earlier run, expired in memory meanwhile
                self._db.execute("UPDATE nonces SET expires = ? WHERE nonce = ?", (expires_at, nonce))
        except sqlite3.Error as exc:  # a full disk: keep serving (reads above all); memory still guards
            self.unsaved += 1
            log.warning("relay_nonce_not_persisted", error=str(exc), unsaved=self.unsaved)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
