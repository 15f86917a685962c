"""Image format and pixel size from the first bytes of a file, without decoding.

Standard library only (the emulator uses it too). Reads PNG, JPEG, WebP (VP8, VP8L, VP8X) and
GIF headers. A truncated or unknown header gives ``format=None``; a header whose size fields
are missing gives ``width=height=None``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["EXTENSIONS", "HEADER_BYTES", "MIME_TYPES", "ImageInfo", "sniff"]

HEADER_BYTES = 64 * 1024
"""How much of a file to read for sniffing (JPEG's SOF marker may sit behind EXIF data)."""

MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "gif": ".gif"}
"""The suffix a file of each format is saved with."""


@dataclass(frozen=True)
class ImageInfo:
    format: str | None
    width: int | None
    height: int | None

    @property
    def mime_type(self) -> str:
        return MIME_TYPES.get(self.format or "", "application/octet-stream")


def sniff(head: bytes) -> ImageInfo:
    """Identify an image from its leading bytes (pass at least ``HEADER_BYTES`` if you have them)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) >= 24 and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return ImageInfo("png", width, height)
        return ImageInfo("png", None, None)
    if head.startswith(b"\xff\xd8"):
        width_height = _jpeg_size(head)
        return ImageInfo("jpeg", *(width_height or (None, None)))
    if head[:6] in (b"GIF87a", b"GIF89a"):
        if len(head) >= 10:
            width, height = struct.unpack("<HH", head[6:10])
            return ImageInfo("gif", width, height)
        return ImageInfo("gif", None, None)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        width_height = _webp_size(head)
        return ImageInfo("webp", *(width_height or (None, None)))
    return ImageInfo(None, None, None)


_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None
