"""Who may use the gateway and read what: brute-force lockout per client address, signed image URLs.

- `AuthThrottle`: an address that sends `max_failures` bad API keys within `window_s` is refused with
  429 (and `retry-after`) for `lockout_s`, whatever key it sends then; a good key clears its count.
  Rate limits per key (keys.RateLimiter) cannot stop a flood of guessed keys: each guess is a new key.
- `ImageUrls`: an image served as a URL is `/v1/images/{task}/{i}.png?expires=...&sig=...`, the sig an
  HMAC-SHA256 (a per-store secret) of (task, index, expires); it is good until `expires` (unix s).
Task ownership (which key created which task) lives in the key store (`KeyStore.owner`).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable

from coordinator.gateway.errors import PermissionDeniedError, RateLimitError

__all__ = ["AuthThrottle", "ImageUrls"]

class AuthThrottle:
    def __init__(self, max_failures: int = 10, window_s: float = 60.0, lockout_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = 100_000) -> None:
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self._clock = clock
        self._max_addresses = max_addresses
        self._failures: dict[str, list[float]] = {}  # address -> recent failure times
        self._locked: dict[str, float] = {}  # address -> locked until
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """RateLimitError when `address` is locked out."""
        now = self._clock()
        with self._lock:
            until = self._locked.get(address)
            if until is None:
                return
            if until <= now:
                del self._locked[address]
                return
        raise RateLimitError(f"too many invalid API keys from {address}; locked out for {until - now:.0f} s",
                             code="too_many_invalid_keys", headers={"retry-after": str(max(1, round(until - now)))})

    def failed(self, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self._max_addresses:  # a flood from many addresses: forget the oldest
                self._failures.pop(next(iter(self._failures)))
            recent = [t for t in self._failures.get(address, ()) if now - t < self.window_s] + [now]
            self._failures[address] = recent
            if len(recent) >= self.max_failures:
                self._locked[address] = now + self.lockout_s
                del self._failures[address]

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


class ImageUrls:
    def __init__(self, secret: bytes, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock

    def _sig(self, task_id: str, index: int, expires: int) -> str:
        return hmac.new(self._secret, f"{task_id}/{index}/{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, base_url: str, task_id: str, index: int) -> str:
        expires = int(self._clock() + self.ttl_s)
        return f"{base_url}/v1/images/{task_id}/{index}.png?expires={expires}&sig={self._sig(task_id, index, expires)}"

    def check(self, task_id: str, index: int, expires: int | None, sig: str | None) -> None:
        """PermissionDeniedError (403) unless the URL's signature is good and not expired."""
        if expires is None or not sig:
            raise PermissionDeniedError("image URLs are signed: use the URL the answer gave (expires, sig), or send "
                                   "the API key that created the task", param="sig")
        if not hmac.compare_digest(sig, self._sig(task_id, index, expires)):
            raise PermissionDeniedError("image URL signature is not valid", param="sig")
        if expires < self._clock():
            raise PermissionDeniedError(f"image URL expired at {expires}; read the task again for a fresh one",
                                   param="expires", code="url_expired")
