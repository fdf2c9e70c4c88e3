"""A lean ABI encoder (and 32-byte word decoders) for the types the Helium contracts use.

eth_abi validates and dispatches per value through several layers; encoding a settle batch of 50 tasks
(~1,500 values) costs milliseconds of the coordinator's event loop, as much as the rest of a task's
settlement. ``encoder(types)`` compiles the types once into plain functions that give eth_abi's bytes for
values eth_abi accepts (tests compare them); for anything it does not handle it raises, and callers fall
back to eth_abi (whose error then reaches the caller).

Handled: ``uintN``, ``intN``, ``address``, ``bool``, ``bytesN``, ``bytes``, ``string``, tuples, ``T[]`` and
``T[k]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

__all__ = ["encoder", "word_decoder"]

Enc = Callable[[Any], bytes]
_ZERO = b"\x00" * 32


class Unsupported(ValueError):
    """A value or type this encoder leaves to eth_abi."""


def _split_tuple(body: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(body[start:i])
            start = i + 1
    if body:
        parts.append(body[start:])
    return parts


def _uint(bits: int) -> Enc:
    limit = 1 << bits

    def enc(v: Any) -> bytes:
        if type(v) is not int or not 0 <= v < limit:
            raise Unsupported(f"uint{bits}: {v!r}")
        return v.to_bytes(32, "big")

    return enc


def _int(bits: int) -> Enc:
    lo, hi = -(1 << (bits - 1)), 1 << (bits - 1)

    def enc(v: Any) -> bytes:
        if type(v) is not int or not lo <= v < hi:
            raise Unsupported(f"int{bits}: {v!r}")
        return v.to_bytes(32, "big", signed=True)

    return enc


def _address(v: Any) -> bytes:
    if isinstance(v, str) and len(v) == 42 and v[:2] in ("0x", "0X"):
        return b"\x00" * 12 + bytes.fromhex(v[2:])
    if isinstance(v, bytes | bytearray) and len(v) == 20:
        return b"\x00" * 12 + bytes(v)
    raise Unsupported(f"address: {v!r}")


def _bool(v: Any) -> bytes:
    if type(v) is not bool:
        raise Unsupported(f"bool: {v!r}")
    return (1 if v else 0).to_bytes(32, "big")


def _fixed_bytes(n: int) -> Enc:
    def enc(v: Any) -> bytes:
        if not isinstance(v, bytes | bytearray) or len(v) > n:
            raise Unsupported(f"bytes{n}: {v!r}")
        return bytes(v).ljust(32, b"\x00")

    return enc


def _dyn_bytes(v: Any) -> bytes:
    if isinstance(v, str):
        v = v.encode()
    elif not isinstance(v, bytes | bytearray):
        raise Unsupported(f"bytes: {v!r}")
    n = len(v)
    return n.to_bytes(32, "big") + bytes(v) + b"\x00" * (-n % 32)


def _array(dyn_item: bool, item: Enc) -> Enc:
    def enc(values: Any) -> bytes:
        if isinstance(values, str | bytes | bytearray):
            raise Unsupported("array: a string or bytes value")
        n = len(values)
        if not dyn_item:
            return n.to_bytes(32, "big") + b"".join(item(v) for v in values)
        return n.to_bytes(32, "big") + _tuple([(True, 32, item)] * n)(values)

    return enc


def _fixed_array(k: int, dyn_item: bool, item: Enc) -> Enc:
    inner = _tuple([(True, 32, item)] * k) if dyn_item else None

    def enc(values: Any) -> bytes:
        if isinstance(values, str | bytes | bytearray) or len(values) != k:
            raise Unsupported(f"array[{k}]: {values!r}")
        return inner(values) if inner is not None else b"".join(item(v) for v in values)

    return enc


@lru_cache(maxsize=512)
def _compile(t: str) -> tuple[bool, int, Enc]:
    """(dynamic, static size in bytes, encoder) of the ABI type `t`."""
    if t.endswith("]"):
        base, _, dim = t[:-1].rpartition("[")
        dyn, size, item = _compile(base)
        if dim == "":
            return True, 32, _array(dyn, item)
        k = int(dim)
        return dyn, (32 if dyn else size * k), _fixed_array(k, dyn, item)
    if t.startswith("("):
        comps = [_compile(c) for c in _split_tuple(t[1:-1])]
        dyn = any(c[0] for c in comps)
        if not dyn:
            encs = [c[2] for c in comps]

            def static_tuple(values: Any) -> bytes:
                if len(values) != len(encs):
                    raise Unsupported(f"expected {len(encs)} values, got {len(values)}")
                return b"".join(e(v) for e, v in zip(encs, values, strict=True))

            return False, sum(c[1] for c in comps), static_tuple
        return True, 32, _tuple([(c[0], c[1], c[2]) for c in comps])
    if t == "address":
        return False, 32, _address
    if t == "bool":
        return False, 32, _bool
    if t in ("bytes", "string"):
        return True, 32, _dyn_bytes
    if t.startswith("uint"):
        return False, 32, _uint(int(t[4:] or 256))
    if t.startswith("int"):
        return False, 32, _int(int(t[3:] or 256))
    if t.startswith("bytes") and t[5:].isdigit():
        return False, 32, _fixed_bytes(int(t[5:]))
    raise Unsupported(f"type {t}")


def _tuple(comps: Sequence[tuple[bool, int, Enc]]) -> Enc:
    head_size = sum(32 if dyn else size for dyn, size, _ in comps)

    def enc(values: Any) -> bytes:
        if len(values) != len(comps):
            raise Unsupported(f"expected {len(comps)} values, got {len(values)}")
        heads, tails, offset = [], [], head_size
        for (dyn, _, e), v in zip(comps, values, strict=True):
            if dyn:
                data = e(v)
                heads.append(offset.to_bytes(32, "big"))
                tails.append(data)
                offset += len(data)
            else:
                heads.append(e(v))
        return b"".join(heads) + b"".join(tails)

    return enc


def encoder(types: Sequence[str]) -> Enc:
    """The encoder of a list of values of `types` (a function's arguments); raises Unsupported (a
    ValueError) for a type or a value it leaves to eth_abi."""
    return _compile("(" + ",".join(types) + ")")[2]


def word_decoder(t: str) -> Callable[[bytes], Any] | None:
    """A decoder of one 32-byte word of the static type `t` as eth_abi decodes it (addresses lower-case
    hex), raising Unsupported on a word eth_abi would refuse (dirty padding); None for other types."""
    if t == "address":

        def address(w: bytes) -> str:
            if w[:12] != _ZERO[:12]:
                raise Unsupported("address padding")
            return "0x" + w[12:].hex()

        return address
    if t == "bool":

        def boolean(w: bytes) -> bool:
            if w[:31] != _ZERO[:31] or w[31] > 1:
                raise Unsupported("bool padding")
            return w[31] == 1

        return boolean
    if t.startswith("uint") and (t[4:] or "256").isdigit():
        bits = int(t[4:] or 256)
        limit = 1 << bits

        def uint(w: bytes) -> int:
            v = int.from_bytes(w, "big")
            if v >= limit:
                raise Unsupported(f"{t} out of range")
            return v

        return uint
    if t.startswith("bytes") and t[5:].isdigit():
        n = int(t[5:])

        def fixed(w: bytes) -> bytes:
            if w[n:] != _ZERO[n:]:
                raise Unsupported(f"{t} padding")
            return bytes(w[:n])

        return fixed
    return None
