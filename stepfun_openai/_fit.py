"""``fit=True``: make an input image acceptable to the model instead of rejecting it (Pillow).

An image in a format the endpoint does not take (WebP or GIF on image2image, say) becomes PNG
(when it has transparency or few colours) or JPEG; one over the pixel limit is scaled down
keeping its aspect ratio; one over the byte limit is re-encoded as JPEG, smaller each round.
Every change is reported with an ``ImageFitWarning``. An image that already fits is returned
untouched (same bytes, nothing decoded).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

from . import catalog
from ._exceptions import StepFunValidationError, caller_stacklevel
from ._sniff import HEADER_BYTES, sniff

__all__ = ["PIL_EXTRA_HINT", "ImageFitWarning", "fit_image", "fits", "require_pillow"]

PIL_EXTRA_HINT = "pip install 'stepfun-openai[pil]'"
_MAX_DECODE_PIXELS = 16384 * 16384
"""Larger claims are refused before decoding: a header can lie (decompression bombs)."""


class ImageFitWarning(UserWarning):
    """``fit=True`` changed an input image (converted its format, scaled it, or re-encoded it)."""


def require_pillow(feature: str) -> Any:
    """``PIL.Image``, or an ``ImportError`` naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"{feature} needs Pillow: {PIL_EXTRA_HINT}") from None
    return Image


def fits(data: bytes, limits: catalog.ImageLimits) -> bool:
    """Whether the image is already acceptable as it is (judged from its header)."""
    info = sniff(data[:HEADER_BYTES])
    if info.format not in limits.formats or len(data) > limits.max_bytes:
        return False
    if info.width is None or info.height is None:
        return True
    return info.width <= limits.max_width and info.height <= limits.max_height


def fit_image(data: bytes, limits: catalog.ImageLimits, *, param: str) -> bytes:
    """``data`` as is if it fits ``limits``, else converted/scaled bytes (with a warning)."""
    if fits(data, limits):
        return data
    image_module = require_pillow(f"fit=True on {param}")
    info = sniff(data[:HEADER_BYTES])
    if info.width and info.height and info.width * info.height > _MAX_DECODE_PIXELS:
        raise StepFunValidationError(
            param,
            f"<{info.format} image claiming {info.width}x{info.height} pixels>",
            f"fit=True decodes images up to {_MAX_DECODE_PIXELS} pixels; this header claims more (corrupt or a bomb?)",
        )
    try:
        image = image_module.open(io.BytesIO(data))
        source_format = (image.format or "unknown").lower()
        image.load()
    except Exception as exc:  # Pillow raises many kinds for undecodable data
        raise StepFunValidationError(
            param, "<undecodable image data>", f"an image Pillow can read ({type(exc).__name__}: {exc})"
        ) from None
    changes: list[str] = []
    if getattr(image, "n_frames", 1) > 1:
        changes.append(f"kept the first of {image.n_frames} frames")
    width, height = image.size
    scale = min(1.0, limits.max_width / width, limits.max_height / height)
    if scale < 1.0:
        new_size = (max(1, int(width * scale)), max(1, int(height * scale)))
        image = image.resize(new_size, image_module.Resampling.LANCZOS)
        changes.append(f"scaled {width}x{height} down to {new_size[0]}x{new_size[1]}")
    out_format = source_format if source_format in limits.formats else _target_format(image, limits)
    if out_format != source_format:
        changes.append(f"converted {source_format} to {out_format}")
    encoded = _encode(image, out_format)
    quality = 90
    while len(encoded) > limits.max_bytes:
        if "jpeg" in limits.formats and (out_format != "jpeg" or quality > 60):
            if out_format != "jpeg":
                changes.append(f"re-encoded as jpeg to get under {limits.max_bytes} bytes")
            out_format = "jpeg"
            encoded = _encode(image, "jpeg", quality=quality)
            quality -= 15
            continue
        w, h = image.size
        image = image.resize((max(1, int(w * 0.8)), max(1, int(h * 0.8))), image_module.Resampling.LANCZOS)
        changes.append(f"scaled to {image.size[0]}x{image.size[1]} to get under {limits.max_bytes} bytes")
        encoded = _encode(image, out_format, quality=quality)
    if len(data) > limits.max_bytes:
        changes.append(
            f"re-encoded {out_format}: {len(data):,} -> {len(encoded):,} bytes "
            f"(the limit is {limits.max_bytes:,} bytes, {_megabytes(limits.max_bytes)})"
        )
    elif not changes:  # pragma: no cover - fits() said no, so something above changed
        changes.append(f"re-encoded {out_format}: {len(data):,} -> {len(encoded):,} bytes")
    warnings.warn(f"fit=True changed {param}: {'; '.join(changes)}", ImageFitWarning, stacklevel=caller_stacklevel())
    return encoded


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):g} MB"


def _target_format(image: Any, limits: catalog.ImageLimits) -> str:
    lossless = "A" in image.getbands() or image.mode in ("P", "1", "L", "LA") or "transparency" in image.info
    if lossless and "png" in limits.formats:
        return "png"
    return "jpeg" if "jpeg" in limits.formats else limits.formats[0]


def _encode(image: Any, fmt: str, *, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    if fmt == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, format="JPEG", quality=quality)
    elif fmt == "png":
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=fmt.upper())
    return buffer.getvalue()
