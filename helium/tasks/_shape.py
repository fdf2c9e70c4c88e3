"""The JSON types of a task document, checked against its message before protobuf's parser sees it.

`json_format.ParseDict` is lenient where a task must not be: `true` becomes 1 in an integer field,
"0.5" a double, "NaN" a NaN. Here every value must have its field's JSON type: integers are numbers
that are whole (never a boolean; a 64-bit integer may also be a decimal string, as the proto3 JSON
mapping writes it), doubles are finite numbers, booleans are booleans, strings are strings, messages
are objects and repeated fields arrays. An error names the field by its path, for example
`generation_config.max_new_tokens must be an integer, got boolean`. Unknown fields are left to the
parser, which names them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from helium.tasks import TaskArgsError

__all__ = ["check_shape", "json_type"]

_INT64 = frozenset({FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64})
_INTS = _INT64 | {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT32,
                  FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32}
_UNSIGNED = frozenset({FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
                       FieldDescriptor.TYPE_FIXED64})
_DECIMAL = re.compile(r"-?[0-9]{1,20}")
# Free-form JSON: any value an object member may hold.
_FREE = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})


def json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


def check_shape(doc: dict, desc: Descriptor, prefix: str = "", bounds: dict | None = None,
                unknown: bool = False) -> None:
    """Raises `TaskArgsError` at the first value whose JSON type is not its field's. Whole floats in
    integer fields and decimal strings in 64-bit ones are rewritten in place as ints (protobuf takes
    both; the rewrite lets the bounds be checked here). `bounds` (path -> (lo, hi)) words the message
    for a negative unsigned value; `unknown`: an unknown field is refused here (else the parser names it)."""
    by_name = {f.name: f for f in desc.fields} | {f.json_name: f for f in desc.fields}
    for key, value in list(doc.items()):
        fd = by_name.get(key) if isinstance(key, str) else None
        if fd is None and unknown:
            path = f"{prefix}{key}"
            raise TaskArgsError(path, f"{path} is not a field of {desc.name} "
                                      f"(fields: {', '.join(f.name for f in desc.fields)})")  # fmt: skip
        if fd is None or value is None:
            continue  # null: unset
        path = f"{prefix}{fd.name}"
        if fd.is_repeated:
            if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
                if not isinstance(value, dict):
                    raise TaskArgsError(path, f"{path} must be an object, got {json_type(value)}")
                continue
            if not isinstance(value, list):
                raise TaskArgsError(path, f"{path} must be an array, got {json_type(value)}")
            for i, item in enumerate(value):
                value[i] = _check_value(fd, item, f"{path}[{i}]", bounds, unknown)
        else:
            doc[key] = _check_value(fd, value, path, bounds, unknown)


def _check_value(fd: FieldDescriptor, value: Any, path: str, bounds: dict | None, unknown: bool) -> Any:
    t = fd.type
    if t == FieldDescriptor.TYPE_MESSAGE:
        name = fd.message_type.full_name
        if name in _FREE:
            if name == "google.protobuf.Struct" and not isinstance(value, dict):
                raise TaskArgsError(path, f"{path} must be an object, got {json_type(value)}")
            return value
        if not isinstance(value, dict):
            raise TaskArgsError(path, f"{path} must be an object, got {json_type(value)}")
        check_shape(value, fd.message_type, path + ".", bounds, unknown)
        return value
    if t == FieldDescriptor.TYPE_STRING or t == FieldDescriptor.TYPE_BYTES:
        if not isinstance(value, str):
            raise TaskArgsError(path, f"{path} must be a string, got {json_type(value)}")
        return value
    if t == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise TaskArgsError(path, f"{path} must be a boolean, got {json_type(value)}")
        return value
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise TaskArgsError(path, f"{path} must be a finite number, got {_shown(value)}")
        return value
    if t == FieldDescriptor.TYPE_ENUM:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TaskArgsError(path, f"{path} must be a string or an integer, got {json_type(value)}")
        return value
    if t in _INTS:
        number = value
        if isinstance(value, str) and t in _INT64 and _DECIMAL.fullmatch(value):
            number = int(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if isinstance(number, bool) or not isinstance(number, int):
            raise TaskArgsError(path, f"{path} must be an integer, got {_shown(value)}")
        if number < 0 and t in _UNSIGNED:
            lo, hi = (bounds or {}).get(path, (0, None))
            bound = f"in [{_num(lo)}, {_num(hi)}]" if hi is not None else ">= 0"
            raise TaskArgsError(path, f"{path} must be {bound}, got {number}")
        return number
    return value  # pragma: no cover - no other field types in the task protos


def _shown(value: Any) -> str:
    if isinstance(value, bool | dict | list) or value is None:
        return json_type(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _num(x: float | None) -> str:
    return str(int(x)) if isinstance(x, float | int) and float(x).is_integer() else str(x)
