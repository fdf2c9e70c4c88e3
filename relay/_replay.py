"""The relay's replay protection: every request nonce seen within its window, also across restarts.

A signed request is valid for `auth_window` around its timestamp, so a nonce must be remembered that long.
Kept in memory only, a restart would forget them and accept a replay still inside its window; with a
`path` (a directory beside the blobs), each nonce is also appended to a log there before the request is
served, and the ones not yet expired are read back at start. A record is the nonce and its expiry (40
bytes, one unbuffered write, no fsync: a killed process loses nothing, and a host that loses power is
back well after every window has closed). Logs rotate: once every nonce of the previous log has expired,
that log is deleted and the current one becomes the previous.
"""

from __future__ import annotations

import heapq
import os
import struct
import time
from pathlib import Path

import structlog

from relay.errors import AuthenticationError, ResourceLimitError

__all__ = ["ReplayCache"]

log = structlog.get_logger("relay.auth")

_RECORD = struct.Struct(">32sd")  # nonce, expiry (unix seconds)
_ROTATE_S = 60.0  # a log is written at least this long before it becomes the previous one


class ReplayCache:
    """Nonces seen within the window. Bounded: when full of unexpired nonces it refuses new ones
    (ResourceLimitError) rather than forget one, which would reopen a replay. With `path`, it survives a
    restart (see the module docstring)."""

    def __init__(self, max_entries: int, path: Path | None = None, now: float | None = None) -> None:
        self._max = max_entries
        self._expiry: dict[bytes, float] = {}
        self._heap: list[tuple[float, bytes]] = []
        self._dir = Path(path) if path is not None else None
        self._fd: int | None = None
        self._current: Path | None = None
        self._previous: Path | None = None
        self._previous_until = 0.0  # when every nonce of the previous log has expired
        self._current_until = 0.0
        self._current_since = 0.0
        self.unsaved = 0  # nonces the log could not take (a full disk): guarded until a restart only
        if self._dir is not None:
            try:
                self._open(time.time() if now is None else now)
            except OSError as exc:  # unreadable or no room: serve with memory only, and say so
                log.error("relay_nonce_log_unusable", path=str(self._dir), error=str(exc))

    def _open(self, now: float) -> None:
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        logs = sorted(self._dir.glob("nonces-*.log"))
        for p in logs:
            data = p.read_bytes()
            for off in range(0, len(data) - len(data) % _RECORD.size, _RECORD.size):
                nonce, expires = _RECORD.unpack_from(data, off)
                if expires >= now and expires > self._expiry.get(nonce, 0.0):
                    self._expiry[nonce] = expires
        self._heap = [(e, n) for n, e in self._expiry.items()]
        heapq.heapify(self._heap)
        # The nonces still alive go into a fresh log; the old logs go once it holds them.
        self._start_log(now)
        if self._expiry:
            self._append(b"".join(_RECORD.pack(n, e) for n, e in self._expiry.items()))
            self._current_until = max(self._expiry.values())
            os.fsync(self._fd)  # the old logs are deleted next
        for p in logs:
            p.unlink(missing_ok=True)
        if self._expiry:
            log.info("relay_nonces_recovered", path=str(self._dir), nonces=len(self._expiry))

    def _start_log(self, now: float) -> None:
        assert self._dir is not None
        if self._fd is not None:
            os.close(self._fd)
        path = self._dir / f"nonces-{time.time_ns():020d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._current, self._current_since, self._current_until = path, now, 0.0

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def __len__(self) -> int:
        return len(self._expiry)

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, nonce = heapq.heappop(self._heap)
            self._expiry.pop(nonce, None)

    def _rotate(self, now: float) -> None:
        """Once the previous log holds only expired nonces it goes, and the current log becomes it."""
        if self._fd is None or now <= self._previous_until or now < self._current_since + _ROTATE_S:
            return
        try:
            if self._previous is not None:
                self._previous.unlink(missing_ok=True)
            previous, until = self._current, self._current_until
            self._start_log(now)
            self._previous, self._previous_until = previous, until
        except OSError as exc:
            log.warning("relay_nonce_log_rotation_failed", error=str(exc))

    def add(self, nonce: bytes, expires_at: float, now: float) -> None:
        """Records `nonce` until `expires_at`; AuthenticationError if it is already recorded."""
        self._purge(now)
        if nonce in self._expiry:
            raise AuthenticationError(f"auth.nonce {nonce.hex()} was already used (replayed request)")
        if len(self._expiry) >= self._max:
            raise ResourceLimitError(f"relay nonce cache is full ({self._max} requests in the window); retry later")
        if self._fd is not None:
            self._rotate(now)
            try:
                self._append(_RECORD.pack(nonce, expires_at))
                self._current_until = max(self._current_until, expires_at)
            except OSError as exc:  # a full disk: keep serving (reads above all); memory still guards
                self.unsaved += 1
                log.warning("relay_nonce_not_persisted", error=str(exc), unsaved=self.unsaved)
        self._expiry[nonce] = expires_at
        heapq.heappush(self._heap, (expires_at, nonce))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
