"""JSON from untrusted hands: size and nesting depth are checked before the parser runs.

`json.loads` recurses once per nesting level, in C. A small body of 100,000 `[` is enough to
overflow the stack of a process whose recursion limit was raised (see `helium._limits`), and even
at the default limit it costs a RecursionError deep inside a framework. So every entry point that
parses JSON a stranger wrote (the gateway's bodies, the CLI's task file) goes through `loads`:

- more than `max_bytes` bytes: `JsonTooLarge` (HTTP 413);
- nested deeper than `max_depth` arrays/objects: `JsonTooDeep`;
- not UTF-8, not JSON, or NaN/Infinity (not JSON either): `JsonInvalid`.

All three are `BoundedJsonError`, a `ValueError`. The depth scan runs in C (bytes methods only), a few ms
per MiB for ordinary JSON.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "BoundedJsonError",
    "JsonInvalid",
    "JsonTooDeep",
    "JsonTooLarge",
    "check_depth",
    "load_file",
    "loads",
]

DEFAULT_MAX_BYTES = 16 << 20
# Task JSON nests about 6 levels; tool parameter schemas a few more. protobuf's JSON parser stops at 100.
DEFAULT_MAX_DEPTH = 64

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")

class BoundedJsonError(ValueError):
    """JSON refused before or while parsing; `reason` is a short machine-readable word."""

    reason = "invalid_json"
    # The parser's own error (line, column) when the text is not JSON.
    decode_error: json.JSONDecodeError | None = None


class JsonTooLarge(BoundedJsonError):
    reason = "too_large"


class JsonTooDeep(BoundedJsonError):
    reason = "too_deep"


class JsonInvalid(BoundedJsonError):
    reason = "invalid_json"


def check_depth(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH, what: str = "JSON") -> int:
    """An upper bound of the nesting of arrays/objects in `data` (outside strings); `JsonTooDeep` past
    `max_depth`. An unclosed `[` still counts (the parser recurses into it before it finds the end).

    Strings are dropped by splitting on the quotes left once escapes are gone (what follows an
    unterminated quote is string content to the parser too); then each pass deletes the innermost
    `[]` pairs, so passes plus the openings left unmatched bound the depth. Everything runs in C."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(_AS_SQUARE, _NOT_BRACKETS)
    passes = 0
    while b"[]" in brackets and passes <= max_depth:
        brackets = brackets.replace(b"[]", b"")
        passes += 1
    depth = passes + brackets.count(b"[")
    if depth > max_depth:
        raise JsonTooDeep(f"{what} is nested more than {max_depth} levels deep")
    return depth


def _no_constant(name: str) -> Any:
    raise JsonInvalid(f"{name} is not a JSON number")


def loads(data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
          what: str = "JSON") -> Any:
    """`json.loads` for untrusted input; `what` names the input in the errors (e.g. "task file")."""
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as e:
            raise JsonInvalid(f"{what} is not valid UTF-8 ({e.reason})") from None
    if len(data) > max_bytes:
        raise JsonTooLarge(f"{what} is {len(data)} bytes; at most {max_bytes} are allowed")
    check_depth(data, max_depth, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonInvalid(f"{what} is not valid UTF-8 (byte {e.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except BoundedJsonError:
        raise
    except RecursionError:  # unreachable after check_depth; kept so a parser change cannot crash a caller
        raise JsonTooDeep(f"{what} is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and int() past sys.get_int_max_str_digits()
        err = JsonInvalid(f"{what} is not valid JSON: {e}")
        err.decode_error = e if isinstance(e, json.JSONDecodeError) else None
        raise err from None


def load_file(path: str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH,
              what: str = "JSON file") -> Any:
    """`loads` of a file (`-`: stdin), reading at most `max_bytes` + 1 bytes of it."""
    import sys

    if path == "-":
        data = sys.stdin.buffer.read(max_bytes + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    return loads(data, max_bytes=max_bytes, max_depth=max_depth, what=what)
