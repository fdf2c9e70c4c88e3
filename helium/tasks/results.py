"""What a result binds: the GPT result hash and the SD image pHash, computed the same way by the worker
that signs and by the coordinator and gateway that check what they return.

GPT result hash (32 bytes, what nodes sign and compare)::

    sha256( b"helium.gpt.result.v2"
            || u32be(number of choices)
            || for each choice, by index:
                 str(finish_reason)
                 || u32be(number of token ids) || u32be(id) for each id
                 || str(content), or u32be(0xFFFFFFFF) when content is null
                 || str(canonical JSON of the tool calls, "[]" when none) )

where str(s) = u32be(len(utf8(s))) || utf8(s) and canonical JSON has sorted keys, no whitespace and
UTF-8 text. It covers the generated token ids, the finish reasons AND the text the response returns,
never the response `id`, `created`, `usage` or the model name. The chat.completion document carries
each choice's `token_ids`, so anyone holding the output recomputes the hash (`gpt_output_problem`):
altered text under an honest hash, or honest text under another hash, both fail.

SD: an image's pHash is the 64-bit DCT perceptual hash of its decoded pixels (`phash64`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["GPT_HASH_DOMAIN", "HashedChoice", "choices_of_output", "gpt_output_problem", "gpt_result_hash",
           "phash64", "sd_images_problem"]  # fmt: skip

GPT_HASH_DOMAIN = b"helium.gpt.result.v2"
_NULL = 0xFFFFFFFF


@dataclass(frozen=True)
class HashedChoice:
    """What the hash covers of one choice."""

    index: int
    token_ids: tuple[int, ...]
    finish_reason: str
    content: str | None
    tool_calls: tuple[dict, ...] = field(default=())


def _str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">I", len(b)) + b


def canonical_tool_calls(calls: Sequence[dict]) -> str:
    return json.dumps(list(calls), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def gpt_result_hash(choices: Sequence) -> bytes:
    """The result hash of choices (anything with index, token_ids, finish_reason, content, tool_calls)."""
    h = hashlib.sha256(GPT_HASH_DOMAIN)
    h.update(struct.pack(">I", len(choices)))
    for c in sorted(choices, key=lambda c: c.index):
        h.update(_str(c.finish_reason))
        h.update(struct.pack(f">I{len(c.token_ids)}I", len(c.token_ids), *c.token_ids))
        h.update(struct.pack(">I", _NULL) if c.content is None else _str(c.content))
        h.update(_str(canonical_tool_calls(c.tool_calls or ())))
    return h.digest()


def choices_of_output(output: bytes) -> list[HashedChoice]:
    """The hashed parts of a chat.completion document's choices; ValueError naming what is malformed."""
    try:
        doc = json.loads(output)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"output is not JSON: {e}") from None
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError("output.choices must be a non-empty list")
    out = []
    for i, c in enumerate(choices):
        msg = c.get("message") if isinstance(c, dict) else None
        ids = c.get("token_ids") if isinstance(c, dict) else None
        if not isinstance(msg, dict) or not isinstance(ids, list):
            raise ValueError(f"output.choices[{i}] needs a message and its token_ids")
        if not all(type(t) is int and 0 <= t < 2**32 for t in ids):
            raise ValueError(f"output.choices[{i}].token_ids must be integers in [0, 2^32)")
        index, reason, content = c.get("index"), c.get("finish_reason"), msg.get("content")
        calls = msg.get("tool_calls") or []
        if type(index) is not int or not isinstance(reason, str) or not (content is None or isinstance(content, str)):
            raise ValueError(f"output.choices[{i}]: index, finish_reason or message.content has the wrong type")
        if not isinstance(calls, list) or not all(isinstance(x, dict) for x in calls):
            raise ValueError(f"output.choices[{i}].message.tool_calls must be a list of objects")
        out.append(HashedChoice(index, tuple(ids), reason, content, tuple(calls)))
    if sorted(c.index for c in out) != list(range(len(out))):
        raise ValueError("output.choices indexes must be 0..n-1, each once")
    return out


def gpt_output_problem(output: bytes, result_hash: bytes) -> str:
    """Why this GPT output is not the one `result_hash` was computed from, or "" when it is."""
    try:
        choices = choices_of_output(output)
    except ValueError as e:
        return str(e)
    if gpt_result_hash(choices) != result_hash:
        return "the output's token ids and text do not hash to the signed result hash"
    return ""


def phash64(png: bytes) -> int:
    """The 64-bit DCT perceptual hash of an image, from its decoded pixels (any node can recompute it).

    imagehash.phash's algorithm (grayscale, Lanczos to 32x32, 2-D DCT-II, the 8x8 low frequencies against
    their median, first coefficient the most significant bit), with the DCT as a numpy matrix product:
    no scipy import (a second of a coordinator's event loop)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        pixels = np.asarray(img.convert("RGB").convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    dct = _DCT32() @ pixels @ _DCT32().T
    low = dct[:8, :8]
    bits = (low > np.median(low)).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


@functools.cache
def _DCT32():  # noqa: N802 - a constant, built on first use
    import numpy as np

    k, n = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / 64)


def sd_images_problem(images: Sequence[bytes], phashes: Sequence[int]) -> str:
    """Why these images are not the ones whose pHashes were signed (index by index), or "" when they are."""
    if len(images) > len(phashes):
        return f"{len(images)} images stored for {len(phashes)} signed pHashes"
    for i, (png, want) in enumerate(zip(images, phashes, strict=False)):
        try:
            got = phash64(png)
        except Exception as e:  # noqa: BLE001 - any undecodable image is a wrong result
            return f"image {i} does not decode: {type(e).__name__}"
        if got != want:
            return f"image {i} has pHash {got:016x}, the node signed {want:016x}"
    return ""
