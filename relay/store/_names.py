"""Validation and canonical forms of task ids and slot names.

A slot is a relative name of ``/``-separated segments, each made of ``a-z 0-9 . _ -`` (upper case is
accepted and folded to lower case, so an EIP-55 address names the same slot as its lower-case form),
never starting with ``.``; no empty segments, no absolute paths, at most 160 characters and 8
segments. Examples: ``input``, ``result/0xabc…``, ``result/0xabc…/0``.
"""

from __future__ import annotations

import re

from relay.errors import InvalidRequestError, InvalidSlotError

__all__ = ["MAX_SLOT_CHARS", "MAX_SLOT_SEGMENTS", "canonical_slot", "canonical_task_id", "result_slot"]

MAX_SLOT_CHARS = 160  # the file name is "<64 hex>+<slot>.sha256", within 255 bytes
MAX_SLOT_SEGMENTS = 8

_TASK_ID = re.compile(r"0x[0-9a-fA-F]{64}")
_SEGMENT_CHARS = re.compile(r"[a-z0-9._-]+")
_BAD_CHAR = re.compile(r"[^a-z0-9._/-]")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 90 else text[:87] + "..."


def canonical_task_id(task_id: str | bytes) -> str:
    """``0x`` + 64 lower-case hex digits; accepts that string (any case) or 32 raw bytes."""
    if isinstance(task_id, bytes | bytearray):
        if len(task_id) != 32:
            raise InvalidRequestError(f"task_id must be 32 bytes, got {len(task_id)}")
        return "0x" + bytes(task_id).hex()
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise InvalidRequestError(f"task_id must be 0x followed by 64 hex digits, got {_show(task_id)}")
    return task_id.lower()


def canonical_slot(slot: str) -> str:
    """The lower-case form of a valid slot name; InvalidSlotError names the slot and the rule it breaks."""
    if not isinstance(slot, str) or not slot:
        raise InvalidSlotError("slot must not be empty")
    shown = _show(slot)
    if len(slot) > MAX_SLOT_CHARS:
        raise InvalidSlotError(f"slot {shown} is longer than {MAX_SLOT_CHARS} characters")
    low = slot.lower()
    if low.startswith("/") or low.startswith("\\") or re.match(r"[a-z]:", low):
        raise InvalidSlotError(f"slot {shown} must be relative (no absolute path)")
    segments = low.split("/")
    if ".." in segments:
        raise InvalidSlotError(f"slot {shown} must not contain '..' (path traversal)")
    bad = _BAD_CHAR.search(low)
    if bad:
        raise InvalidSlotError(
            f"slot {shown} contains invalid character {bad.group()!r}; allowed: a-z A-Z 0-9 . _ - /"
        )
    if len(segments) > MAX_SLOT_SEGMENTS:
        raise InvalidSlotError(f"slot {shown} has more than {MAX_SLOT_SEGMENTS} segments")
    for seg in segments:
        if not seg:
            raise InvalidSlotError(f"slot {shown} must not contain empty segments")
        if seg.startswith(".") or not _SEGMENT_CHARS.fullmatch(seg):
            raise InvalidSlotError(f"slot {shown} segment {seg!r} must not start with '.'")
    return low


def result_slot(address: str, index: int | None = None) -> str:
    """The slot a worker writes its result to: ``result/<address>`` or ``result/<address>/<index>``."""
    slot = f"result/{address.lower()}"
    return slot if index is None else f"{slot}/{int(index)}"
