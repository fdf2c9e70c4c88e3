"""Ethereum identity and EIP-712 signing for every part of Helium.

Everything that is signed in the network uses one EIP-712 domain,
``{name: "Helium", version: "1", chainId, verifyingContract: TaskLedger}``, so a
signature made by a worker, a creator or the coordinator is checked the same way
in Python (here) and in the contracts (``ecrecover`` through OpenZeppelin).

Typed messages:

- ``Task(bytes32 taskId, bytes32 argsHash, uint256 fee, uint256 nonce, uint256 deadline)``
  by the creator: authorizes the fee of one task.
- ``Result(bytes32 taskId, bytes32 resultHash, address node)`` by a node.
- ``Cancel(bytes32 taskId)`` by the creator.
- ``TaskRead(bytes32 taskId, uint256 timestamp)`` by the creator: reads its own task (GetTask, WatchTask).
- ``Register(bytes32 challenge, address node, bytes32 infoHash)`` by a node joining.
- ``NodeControl(address node, uint8 action, uint256 timestamp)`` by a node (pause, resume, quit).
- ``RelayRequest(string method, bytes32 taskId, string slot, bytes32 contentHash,
  uint256 timestamp, bytes32 nonce)`` by any relay caller.
- ``RelayGrant(bytes32 taskId, address grantee, string readSlots, string writeSlots,
  uint256 expiresAt)`` by the coordinator; slot lists are joined with ``\\n``.

A task id is ``keccak256(abi.encode(creator, nonce, argsHash))``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import coincurve
import sha3  # safe-pysha3: keccak256 in C, ~9x faster per call than pycryptodome's
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

__all__ = [
    "DEV_DOMAIN",
    "INVALID_ARGS_HASH",
    "Domain",
    "SignatureError",
    "address_of",
    "cancel_signer",
    "compact_signature",
    "compute_task_id",
    "load_or_create_key",
    "node_control_signer",
    "register_signer",
    "relay_grant_signer",
    "relay_request_signer",
    "result_digest",
    "result_signer",
    "sd_result_hash",
    "sign_cancel",
    "sign_node_control",
    "sign_register",
    "sign_relay_grant",
    "sign_relay_request",
    "sign_result",
    "sign_task",
    "sign_task_read",
    "task_digest",
    "task_read_signer",
    "task_signer",
]

ZERO_ADDRESS = "0x" + "00" * 20

# The result hash a node signs when it finds the task's args invalid (settled like any validated result).
INVALID_ARGS_HASH: bytes = keccak(b"helium:invalid-args")


class SignatureError(ValueError):
    """A signature that cannot be decoded or recovered."""


@dataclass(frozen=True)
class Domain:
    """The EIP-712 domain of one Helium network (one chain, one TaskLedger)."""

    chain_id: int
    verifying_contract: str
    name: str = "Helium"
    version: str = "1"

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


# Used by tests and by a network with no chain configured yet.
DEV_DOMAIN = Domain(chain_id=31337, verifying_contract=ZERO_ADDRESS)

_TYPES: dict[str, list[dict[str, str]]] = {
    "Task": [
        {"name": "taskId", "type": "bytes32"},
        {"name": "argsHash", "type": "bytes32"},
        {"name": "fee", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ],
    "Result": [
        {"name": "taskId", "type": "bytes32"},
        {"name": "resultHash", "type": "bytes32"},
        {"name": "node", "type": "address"},
    ],
    "Cancel": [{"name": "taskId", "type": "bytes32"}],
    "TaskRead": [{"name": "taskId", "type": "bytes32"}, {"name": "timestamp", "type": "uint256"}],
    "Register": [
        {"name": "challenge", "type": "bytes32"},
        {"name": "node", "type": "address"},
        {"name": "infoHash", "type": "bytes32"},
    ],
    "NodeControl": [
        {"name": "node", "type": "address"},
        {"name": "action", "type": "uint8"},
        {"name": "timestamp", "type": "uint256"},
    ],
    "RelayRequest": [
        {"name": "method", "type": "string"},
        {"name": "taskId", "type": "bytes32"},
        {"name": "slot", "type": "string"},
        {"name": "contentHash", "type": "bytes32"},
        {"name": "timestamp", "type": "uint256"},
        {"name": "nonce", "type": "bytes32"},
    ],
    "RelayGrant": [
        {"name": "taskId", "type": "bytes32"},
        {"name": "grantee", "type": "address"},
        {"name": "readSlots", "type": "string"},
        {"name": "writeSlots", "type": "string"},
        {"name": "expiresAt", "type": "uint256"},
    ],
}


def _b32(value: bytes | str, field: str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value.removeprefix("0x"))
    if len(value) != 32:
        raise SignatureError(f"{field} must be 32 bytes, got {len(value)}")
    return value


# --- fast EIP-712 -------------------------------------------------------------------------------
# Every Helium type has only static fields (bytes32, uint, address) and strings, so the EIP-712
# digest is computed directly: typeHash and domain separators are cached, fields are packed by
# hand. `tests/unit/test_signing_fast.py` pins these digests to eth_account's generic encoder.

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _keccak(data: bytes) -> bytes:
    return sha3.keccak_256(data).digest()


def _encode_type(primary: str) -> bytes:
    fields = ",".join(f"{f['type']} {f['name']}" for f in _TYPES[primary])
    return f"{primary}({fields})".encode()


_TYPE_HASHES = {name: _keccak(_encode_type(name)) for name in _TYPES}
_DOMAIN_TYPE_HASH = _keccak(b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")


@functools.lru_cache(maxsize=64)
def _domain_separator(domain: Domain) -> bytes:
    return _keccak(
        _DOMAIN_TYPE_HASH
        + _keccak(domain.name.encode())
        + _keccak(domain.version.encode())
        + domain.chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(domain.verifying_contract[2:])
    )


def _field(typ: str, value) -> bytes:
    if typ == "bytes32":
        return bytes(value)
    if typ == "address":
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) else bytes(value)
        if len(raw) != 20:
            raise SignatureError(f"not an address: {value!r}")
        return bytes(12) + raw
    if typ == "string":
        return _keccak(value.encode())
    if typ.startswith("uint"):
        if value < 0:
            raise SignatureError(f"{typ} cannot be negative: {value}")
        return int(value).to_bytes(32, "big")
    raise SignatureError(f"unsupported EIP-712 field type {typ}")


def _digest(domain: Domain, primary: str, message: dict) -> bytes:
    struct = _TYPE_HASHES[primary] + b"".join(_field(f["type"], message[f["name"]]) for f in _TYPES[primary])
    return _keccak(b"\x19\x01" + _domain_separator(domain) + _keccak(struct))


@functools.lru_cache(maxsize=1024)
def _private_key(secret: bytes) -> coincurve.PrivateKey:
    return coincurve.PrivateKey(secret)


@functools.lru_cache(maxsize=65536)
def _checksum(raw: bytes) -> str:
    return to_checksum_address(raw)


def _sign(key: LocalAccount | bytes, domain: Domain, primary: str, message: dict) -> bytes:
    private_key = bytes(key.key) if isinstance(key, LocalAccount) else bytes(key)
    sig = _private_key(private_key).sign_recoverable(_digest(domain, primary, message), hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def _recover(domain: Domain, primary: str, message: dict, signature: bytes) -> str:
    if len(signature) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(signature)}")
    v = signature[64]
    if v not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {v}")
    if int.from_bytes(signature[32:64], "big") > _SECP256K1_N // 2:
        raise SignatureError("signature s is in the upper half of the curve order (malleable)")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), _digest(domain, primary, message), hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exceptions for bad points
        raise SignatureError(f"cannot recover {primary} signature: {exc}") from exc
    return _checksum(_keccak(pub.format(compressed=False)[1:])[-20:])


def address_of(key: LocalAccount | bytes) -> str:
    return key.address if isinstance(key, LocalAccount) else Account.from_key(key).address


def compute_task_id(creator: str, nonce: int, args_hash: bytes) -> bytes:
    """keccak256(abi.encode(address creator, uint256 nonce, bytes32 argsHash)), packed by hand: the three
    are static ABI types, so the encoding is three 32-byte words."""
    raw = bytes.fromhex(creator.removeprefix("0x"))
    if len(raw) != 20:
        raise SignatureError(f"creator must be a 20-byte address, got {creator!r}")
    if not 0 <= nonce < 2**256:
        raise SignatureError(f"nonce must be a uint256, got {nonce}")
    return _keccak(bytes(12) + raw + nonce.to_bytes(32, "big") + _b32(args_hash, "args_hash"))


def load_or_create_key(path: str | os.PathLike) -> LocalAccount:
    """Loads the hex private key at `path`, creating it (mode 0600, atomically) on first run."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        account = Account.create()
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(p)
        with os.fdopen(fd, "w") as f:
            f.write(account.key.hex())
            f.flush()
            os.fsync(f.fileno())
        return account
    return Account.from_key(bytes.fromhex(p.read_text().strip().removeprefix("0x")))


# --- Task -----------------------------------------------------------------------------------------


def _task_msg(task_id: bytes, args_hash: bytes, fee: int, nonce: int, deadline: int) -> dict:
    return {
        "taskId": _b32(task_id, "task_id"),
        "argsHash": _b32(args_hash, "args_hash"),
        "fee": int(fee),
        "nonce": int(nonce),
        "deadline": int(deadline),
    }


def sign_task(key, domain: Domain, task_id: bytes, args_hash: bytes, fee: int, nonce: int, deadline: int) -> bytes:
    return _sign(key, domain, "Task", _task_msg(task_id, args_hash, fee, nonce, deadline))


def task_signer(
    domain: Domain, task_id: bytes, args_hash: bytes, fee: int, nonce: int, deadline: int, signature: bytes
) -> str:
    return _recover(domain, "Task", _task_msg(task_id, args_hash, fee, nonce, deadline), signature)


# --- Result ---------------------------------------------------------------------------------------


def sign_result(key, domain: Domain, task_id: bytes, result_hash: bytes) -> bytes:
    msg = {"taskId": _b32(task_id, "task_id"), "resultHash": _b32(result_hash, "result_hash"), "node": address_of(key)}
    return _sign(key, domain, "Result", msg)


def result_signer(domain: Domain, task_id: bytes, result_hash: bytes, node: str, signature: bytes) -> str:
    msg = {
        "taskId": _b32(task_id, "task_id"),
        "resultHash": _b32(result_hash, "result_hash"),
        "node": node,  # packed from its 20 raw bytes; checksum casing is irrelevant to the digest
    }
    return _recover(domain, "Result", msg, signature)


def sd_result_hash(phashes: Sequence[int]) -> bytes:
    """The result hash of an SD result: keccak256(abi.encodePacked(uint64[] phashes)).

    Solidity's packed encoding of an array pads every element to 32 bytes, so this is the keccak of the
    concatenated 32-byte big-endian words (NodeStaking recomputes it from the pHashes of slash evidence).
    """
    out = bytearray()
    for i, p in enumerate(phashes):
        if not 0 <= int(p) < 1 << 64:
            raise SignatureError(f"phashes[{i}] must be a uint64, got {p}")
        out += int(p).to_bytes(32, "big")
    return keccak(bytes(out))


def task_digest(domain: Domain, task_id: bytes, args_hash: bytes, fee: int, nonce: int, deadline: int) -> bytes:
    """The 32-byte EIP-712 digest of a Task (what TaskLedger.hashTask returns)."""
    return _digest(domain, "Task", _task_msg(task_id, args_hash, fee, nonce, deadline))


def result_digest(domain: Domain, task_id: bytes, result_hash: bytes, node: str) -> bytes:
    """The 32-byte EIP-712 digest of a Result (what TaskLedger.hashResult returns)."""
    msg = {
        "taskId": _b32(task_id, "task_id"),
        "resultHash": _b32(result_hash, "result_hash"),
        "node": to_checksum_address(node),
    }
    return _digest(domain, "Result", msg)


def compact_signature(signature: bytes) -> tuple[bytes, bytes]:
    """Splits a 65-byte (r, s, v) signature into its EIP-2098 compact form (r, vs), as the contracts take it."""
    if len(signature) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(signature)}")
    r, s, v = signature[:32], signature[32:64], signature[64]
    if v not in (27, 28, 0, 1):
        raise SignatureError(f"signature v must be 27 or 28, got {v}")
    parity = (v - 27) if v >= 27 else v
    vs = (int.from_bytes(s, "big") | (parity << 255)).to_bytes(32, "big")
    return bytes(r), vs


# --- Cancel, Register, NodeControl ----------------------------------------------------------------


def sign_cancel(key, domain: Domain, task_id: bytes) -> bytes:
    return _sign(key, domain, "Cancel", {"taskId": _b32(task_id, "task_id")})


def cancel_signer(domain: Domain, task_id: bytes, signature: bytes) -> str:
    return _recover(domain, "Cancel", {"taskId": _b32(task_id, "task_id")}, signature)


def sign_task_read(key, domain: Domain, task_id: bytes, timestamp: int) -> bytes:
    return _sign(key, domain, "TaskRead", {"taskId": _b32(task_id, "task_id"), "timestamp": int(timestamp)})


def task_read_signer(domain: Domain, task_id: bytes, timestamp: int, signature: bytes) -> str:
    return _recover(domain, "TaskRead", {"taskId": _b32(task_id, "task_id"), "timestamp": int(timestamp)}, signature)


def sign_register(key, domain: Domain, challenge: bytes, info_hash: bytes) -> bytes:
    msg = {"challenge": _b32(challenge, "challenge"), "node": address_of(key), "infoHash": _b32(info_hash, "info_hash")}
    return _sign(key, domain, "Register", msg)


def register_signer(domain: Domain, challenge: bytes, node: str, info_hash: bytes, signature: bytes) -> str:
    msg = {
        "challenge": _b32(challenge, "challenge"),
        "node": to_checksum_address(node),
        "infoHash": _b32(info_hash, "info_hash"),
    }
    return _recover(domain, "Register", msg, signature)


def sign_node_control(key, domain: Domain, action: int, timestamp: int) -> bytes:
    return _sign(key, domain, "NodeControl", {"node": address_of(key), "action": action, "timestamp": timestamp})


def node_control_signer(domain: Domain, node: str, action: int, timestamp: int, signature: bytes) -> str:
    msg = {"node": to_checksum_address(node), "action": action, "timestamp": timestamp}
    return _recover(domain, "NodeControl", msg, signature)


# --- Relay ----------------------------------------------------------------------------------------


def _relay_msg(method: str, task_id: bytes, slot: str, content_hash: bytes, timestamp: int, nonce: bytes) -> dict:
    return {
        "method": method,
        "taskId": _b32(task_id, "task_id"),
        "slot": slot,
        "contentHash": _b32(content_hash, "content_hash"),
        "timestamp": int(timestamp),
        "nonce": _b32(nonce, "nonce"),
    }


def sign_relay_request(
    key, domain: Domain, method: str, task_id: bytes, slot: str, content_hash: bytes, timestamp: int, nonce: bytes
) -> bytes:
    return _sign(key, domain, "RelayRequest", _relay_msg(method, task_id, slot, content_hash, timestamp, nonce))


def relay_request_signer(
    domain: Domain,
    method: str,
    task_id: bytes,
    slot: str,
    content_hash: bytes,
    timestamp: int,
    nonce: bytes,
    signature: bytes,
) -> str:
    return _recover(domain, "RelayRequest", _relay_msg(method, task_id, slot, content_hash, timestamp, nonce), signature)


def _grant_msg(task_id: bytes, grantee: str, read: Sequence[str], write: Sequence[str], expires_at: int) -> dict:
    return {
        "taskId": _b32(task_id, "task_id"),
        "grantee": to_checksum_address(grantee),
        "readSlots": "\n".join(read),
        "writeSlots": "\n".join(write),
        "expiresAt": int(expires_at),
    }


def sign_relay_grant(
    key, domain: Domain, task_id: bytes, grantee: str, read: Sequence[str], write: Sequence[str], expires_at: int
) -> bytes:
    return _sign(key, domain, "RelayGrant", _grant_msg(task_id, grantee, read, write, expires_at))


def relay_grant_signer(
    domain: Domain,
    task_id: bytes,
    grantee: str,
    read: Sequence[str],
    write: Sequence[str],
    expires_at: int,
    signature: bytes,
) -> str:
    return _recover(domain, "RelayGrant", _grant_msg(task_id, grantee, read, write, expires_at), signature)
