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
from collections.abc import Callable
from typing import Any

from . import catalog
from ._exceptions import StepFunValidationError, caller_stacklevel
from ._sniff import HEADER_BYTES, sniff

__all__ = [
    "MAX_DECODE_PIXELS",
    "PIL_EXTRA_HINT",
    "ImageFitWarning",
    "fit_image",
    "fits",
    "open_image",
    "require_pillow",
]

PIL_EXTRA_HINT = "pip install 'stepfun-openai[pil]'"
MAX_DECODE_PIXELS = 8192 * 8192
"""The most pixels the package lets Pillow decode (``fit=True`` inputs, ``to_pil()`` results):
67,108,864, four times the largest image any model takes or makes (4096x4096), and below Pillow's
own warning (``Image.MAX_IMAGE_PIXELS``, 89 million). A few kilobytes of PNG or GIF can claim
billions of pixels (a decompression bomb): such an image is refused from its header, before a
pixel is decoded, at 4 bytes a pixel 256 MiB at most."""


class ImageFitWarning(UserWarning):
    """``fit=True`` changed an input image (converted its format, scaled it, or re-encoded it)."""


def require_pillow(feature: str) -> Any:
    """``PIL.Image``, or an ``ImportError`` naming the extra that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"{feature} needs Pillow: {PIL_EXTRA_HINT}") from None
    return Image


def open_image(
    data: bytes,
    *,
    too_large: Callable[[str, str | None], Exception],
    undecodable: Callable[[Exception], Exception],
) -> Any:
    """``data`` decoded by Pillow (``PIL.Image.Image``, loaded), if it has at most
    ``MAX_DECODE_PIXELS`` pixels: judged from the header (``_sniff``), then from the size Pillow
    reads (a JPEG's may sit beyond what the sniff saw), both before any pixel is decoded. Raises
    ``too_large(size, format)`` (``size`` e.g. ``"9000x9000 = 81,000,000 pixels"``) or
    ``undecodable(exc)``: the caller's error, which names the image."""
    image_module = require_pillow("decoding an image")
    info = sniff(data[:HEADER_BYTES])
    if info.width and info.height and info.width * info.height > MAX_DECODE_PIXELS:
        raise too_large(_pixels(info.width, info.height), info.format)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own limit (89 million pixels); ours is lower and raises below.
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            image = image_module.open(io.BytesIO(data))
    except image_module.DecompressionBombError as exc:  # Pillow's own limit, if set lower than ours
        raise too_large(f"more pixels than Pillow allows ({exc})", info.format) from None
    except Exception as exc:  # Pillow raises many kinds for undecodable data
        raise undecodable(exc) from None
    width, height = image.size
    if width * height > MAX_DECODE_PIXELS:
        image.close()
        raise too_large(_pixels(width, height), (image.format or "").lower() or None)
    try:
        image.load()
    except Exception as exc:
        raise undecodable(exc) from None
    return image


def _pixels(width: int, height: int) -> str:
    return f"{width}x{height} = {width * height:,} pixels"


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

    def too_large(size: str, fmt: str | None) -> Exception:
        return StepFunValidationError(
            param,
            f"<{fmt or 'an'} image claiming {size}>",
            f"fit=True decodes images of at most {MAX_DECODE_PIXELS:,} pixels (8192x8192): a larger one "
            "is a decompression bomb, or a photo to scale down before sending",
        )

    def undecodable(exc: Exception) -> Exception:
        return StepFunValidationError(
            param, "<undecodable image data>", f"an image Pillow can read ({type(exc).__name__}: {exc})"
        )

    image = open_image(data, too_large=too_large, undecodable=undecodable)
    source_format = (image.format or "unknown").lower()
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
