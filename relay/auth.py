"""Who may do what on the relay.

Every request carries a :class:`RelayAuth`: the caller's address, a timestamp, a one-time nonce and an
EIP-712 ``RelayRequest`` signature over (method, task_id, slot, content_hash, timestamp, nonce), where
method is ``"Put"`` or ``"Get"`` and content_hash is the declared sha256 for Put and 32 zero bytes for
Get. The slot is signed exactly as sent.

ACL: the coordinator (``RelayConfig.coordinator_address``) may read and write everything. Anyone else
presents a ``RelayGrant`` signed by the coordinator naming the task, the caller as grantee, an expiry,
and the slots it may read and write (a pattern ending in ``*`` matches every slot with that prefix,
otherwise the slot must be equal; both are compared in canonical lower case). The coordinator gives a
creator :func:`creator_grant_slots` and each assigned worker :func:`worker_grant_slots`, so a worker
can read the input and write only its own result.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_utils import is_address, to_checksum_address

from chain.signing import (
    Domain,
    SignatureError,
    address_of,
    relay_grant_signer,
    relay_request_signer,
    sign_relay_grant,
    sign_relay_request,
)
from helium.v1 import relay_pb2, task_pb2
from relay._replay import ReplayCache
from relay.errors import AuthenticationError, InvalidRequestError, PermissionDeniedError
from relay.store._names import canonical_slot, canonical_task_id, result_slot

__all__ = [
    "GET",
    "PUT",
    "ZERO_HASH",
    "RelayAuthenticator",
    "ReplayCache",
    "build_auth",
    "creator_grant_slots",
    "make_grant",
    "slot_allowed",
    "worker_grant_slots",
]

PUT = "Put"
GET = "Get"
ZERO_HASH = bytes(32)


def _checksum_or_none(address: str) -> str | None:
    """The checksum form of `address`, None if it is not an address. Cached: EIP-55 costs a keccak per
    call and the relay sees the same few addresses over and over (only address-sized strings are kept)."""
    return _checksum(address) if len(address) <= 42 else None


@functools.lru_cache(maxsize=4096)
def _checksum(address: str) -> str | None:
    return to_checksum_address(address) if is_address(address) else None


# --- grants (issued by the coordinator) -----------------------------------------------------------------


def worker_grant_slots(worker_address: str) -> tuple[list[str], list[str]]:
    """(read, write) slots of an assigned worker: the input, and its own result slot(s)."""
    own = result_slot(worker_address)
    return ["input"], [own, f"{own}/*"]


def creator_grant_slots() -> tuple[list[str], list[str]]:
    """(read, write) slots of a task's creator: read everything of its task."""
    return ["*"], []


def make_grant(
    key: LocalAccount | bytes,
    domain: Domain,
    task_id: str | bytes,
    grantee: str,
    read_slots: Sequence[str],
    write_slots: Sequence[str],
    expires_at: int,
) -> task_pb2.RelayGrant:
    """A RelayGrant signed by `key` (the coordinator's)."""
    tid = canonical_task_id(task_id)
    read, write = list(read_slots), list(write_slots)
    sig = sign_relay_grant(key, domain, bytes.fromhex(tid[2:]), grantee, read, write, int(expires_at))
    return task_pb2.RelayGrant(
        task_id=tid,
        grantee=to_checksum_address(grantee),
        read_slots=read,
        write_slots=write,
        expires_at=int(expires_at),
        signature=sig,
    )


def slot_allowed(patterns: Sequence[str], slot: str) -> bool:
    """Whether canonical `slot` matches one of `patterns` (``prefix*`` or exact, case-insensitive)."""
    for pattern in patterns:
        p = pattern.lower()
        if (p.endswith("*") and slot.startswith(p[:-1])) or p == slot:
            return True
    return False


# --- requests (signed by every caller) -----------------------------------------------------------------


def build_auth(
    key: LocalAccount | bytes,
    domain: Domain,
    method: str,
    task_id: str | bytes,
    slot: str,
    content_hash: bytes = ZERO_HASH,
    grant: task_pb2.RelayGrant | None = None,
    now: float | None = None,
) -> relay_pb2.RelayAuth:
    """A signed RelayAuth for one request: fresh random nonce, current timestamp."""
    tid = canonical_task_id(task_id)
    nonce = secrets.token_bytes(32)
    ts = int(time.time() if now is None else now)
    sig = sign_relay_request(key, domain, method, bytes.fromhex(tid[2:]), slot, content_hash, ts, nonce)
    auth = relay_pb2.RelayAuth(address=address_of(key), timestamp=ts, nonce=nonce.hex(), signature=sig)
    if grant is not None:
        auth.grant.CopyFrom(grant)
    return auth


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its checksum address and whether it is the coordinator."""

    address: str
    is_coordinator: bool


class RelayAuthenticator:
    """Checks a RelayAuth: window, signature, replay, then the ACL. Raises AuthenticationError
    (UNAUTHENTICATED) or PermissionDeniedError (PERMISSION_DENIED) naming what was wrong."""

    def __init__(
        self,
        coordinator_address: str,
        domain: Domain,
        window: timedelta = timedelta(seconds=60),
        max_nonces: int = 1 << 18,
        max_grant_cache: int = 4096,
        clock: Callable[[], float] = time.time,
        replay_path: Path | None = None,
    ) -> None:
        """`replay_path`: the directory whose logs keep the seen nonces across restarts (relay._replay);
        None: memory only."""
        self._coordinator = to_checksum_address(coordinator_address)
        self._domain = domain
        self._window = window.total_seconds()
        self._replay = ReplayCache(max_nonces, replay_path, now=clock())
        self._clock = clock
        self._grant_signers: OrderedDict[bytes, str] = OrderedDict()
        self._max_grant_cache = max_grant_cache

    def verify(
        self, method: str, task_id: str, slot_as_sent: str, content_hash: bytes, auth: relay_pb2.RelayAuth | None
    ) -> Caller:
        """`task_id` is canonical; `slot_as_sent` is the slot exactly as the caller signed it."""
        if auth is None or not auth.address:
            raise AuthenticationError("auth is required: every relay request must be signed")
        address = _checksum_or_none(auth.address)
        if address is None:
            raise AuthenticationError(f"auth.address must be an Ethereum address, got {auth.address!r:.60}")
        now = self._clock()
        if abs(now - auth.timestamp) > self._window:
            skew = auth.timestamp - now
            raise AuthenticationError(
                f"auth.timestamp {auth.timestamp} is outside the {self._window:g} s window (relay time {int(now)}): "
                f"the caller's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} the relay's clock; "
                "sync it (NTP)"
            )
        try:
            nonce = bytes.fromhex(auth.nonce.removeprefix("0x"))
        except ValueError:
            nonce = b""
        if len(nonce) != 32:
            raise AuthenticationError(f"auth.nonce must be 32 bytes as hex, got {auth.nonce!r:.80}")
        try:
            signer = relay_request_signer(
                self._domain, method, bytes.fromhex(task_id[2:]), slot_as_sent, content_hash,
                auth.timestamp, nonce, bytes(auth.signature),
            )  # fmt: skip
        except SignatureError as exc:
            raise AuthenticationError(f"auth.signature is invalid: {exc}") from None
        if signer != address:
            raise AuthenticationError(f"auth.signature is not by auth.address {address} (recovered {signer})")
        self._replay.add(nonce, auth.timestamp + self._window + 1, now)
        caller = Caller(address, address == self._coordinator)
        if not caller.is_coordinator:
            self._check_grant(method, task_id, canonical_slot(slot_as_sent), caller, auth, now)
        return caller

    def close(self) -> None:
        """Closes the nonce file (the authenticator is not used afterwards)."""
        self._replay.close()

    def _check_grant(
        self, method: str, task_id: str, slot: str, caller: Caller, auth: relay_pb2.RelayAuth, now: float
    ) -> None:
        if not auth.HasField("grant"):
            raise PermissionDeniedError(
                f"caller {caller.address} is not the coordinator and presented no grant for task {task_id}"
            )
        g = auth.grant
        try:
            grant_task = canonical_task_id(g.task_id)
        except InvalidRequestError:
            raise PermissionDeniedError(f"grant.task_id {g.task_id!r:.80} is not a task id") from None
        if grant_task != task_id:
            raise PermissionDeniedError(f"grant is for task {grant_task}, not task {task_id}")
        if _checksum_or_none(g.grantee) != caller.address:
            raise PermissionDeniedError(f"grant.grantee {g.grantee!r:.60} is not the caller {caller.address}")
        if g.expires_at <= now:
            raise PermissionDeniedError(f"grant expired at {g.expires_at} (relay time {int(now)})")
        if self._grant_signer(g) != self._coordinator:
            raise PermissionDeniedError("grant.signature is not by the coordinator")
        patterns = g.read_slots if method == GET else g.write_slots
        if not slot_allowed(patterns, slot):
            kind = "read_slots" if method == GET else "write_slots"
            raise PermissionDeniedError(
                f"grant does not allow {method} of slot {slot!r} for {caller.address} ({kind}: {list(patterns)})"
            )

    def _grant_signer(self, g: task_pb2.RelayGrant) -> str:
        cache_key = g.SerializeToString(deterministic=True)
        signer = self._grant_signers.get(cache_key)
        if signer is not None:
            self._grant_signers.move_to_end(cache_key)
            return signer
        try:
            signer = relay_grant_signer(
                self._domain, bytes.fromhex(g.task_id[2:]), g.grantee, list(g.read_slots),
                list(g.write_slots), g.expires_at, bytes(g.signature),
            )  # fmt: skip
        except (SignatureError, ValueError) as exc:
            raise PermissionDeniedError(f"grant.signature is invalid: {exc}") from None
        self._grant_signers[cache_key] = signer
        if len(self._grant_signers) > self._max_grant_cache:
            self._grant_signers.popitem(last=False)
        return signer
