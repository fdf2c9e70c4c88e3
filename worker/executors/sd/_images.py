"""Image helpers of the SD executor: PNG bytes, perceptual hashes, the result hash, ControlNet inputs."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image

from chain.signing import sd_result_hash
from helium.tasks import TaskArgsError
from helium.tasks.results import phash64
from helium.tasks.sd import CANNY_DEFAULTS, decode_data_url
from worker.errors import InvalidArgsError

__all__ = ["canny", "control_image", "encode_png", "phash64", "sd_result_hash"]


def encode_png(image: Image.Image) -> bytes:
    """Deterministic PNG bytes (no text chunks or timestamps)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def image_record(index: int, png: bytes, phash: int, width: int, height: int) -> dict:
    return {"index": index, "phash": f"{phash:016x}", "sha256": hashlib.sha256(png).hexdigest(),
            "width": width, "height": height}


def canny(image: Image.Image, low: float, high: float) -> Image.Image:
    import cv2

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def control_image(dataurl: str, method: str, args: dict) -> Image.Image:
    """The ControlNet conditioning image from the task's data URL, preprocessed as asked."""
    try:
        data = decode_data_url(dataurl)
    except TaskArgsError as e:
        raise InvalidArgsError(str(e)) from None
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise InvalidArgsError(f"controlnet.image_dataurl does not decode as an image: {e}") from None
    image = image.convert("RGB")
    if method == "canny":
        low = args.get("low_threshold", CANNY_DEFAULTS["low_threshold"])
        high = args.get("high_threshold", CANNY_DEFAULTS["high_threshold"])
        image = canny(image, low, high)
    return image
