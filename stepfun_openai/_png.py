"""PNG chunks: build, walk, and read or write text, without decoding any pixels.

The package's one PNG chunk codec: provenance (``_metadata.py``) and the emulator's renderer both
use it. Standard library only, so the emulator may import it without the client. Compressed text
(``zTXt``, compressed ``iTXt``) is inflated at most to ``MAX_TEXT_BYTES``: a file is untrusted input,
and a few kilobytes of deflate can expand to gigabytes.
"""

from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

__all__ = [
    "MAX_TEXT_BYTES",
    "SIGNATURE",
    "TEXT_KINDS",
    "Chunk",
    "build_chunk",
    "iter_chunks",
    "itxt_chunk",
    "read_text",
    "set_text",
    "text_chunks",
]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
TEXT_KINDS = (b"tEXt", b"iTXt", b"zTXt")
MAX_TEXT_BYTES = 1024 * 1024
"""The most a compressed text chunk is inflated to; a larger one is skipped as unreadable."""

_IHDR_END = len(SIGNATURE) + 4 + 4 + 13 + 4


class Chunk(NamedTuple):
    """Where a chunk sits in the file: offsets, so walking a large PNG copies no image data."""

    kind: bytes
    start: int
    """Offset of the chunk's length field."""
    end: int
    """Offset just past its CRC."""

    def data(self, png: bytes) -> bytes:
        return png[self.start + 8 : self.end - 4]


def build_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def iter_chunks(png: bytes) -> list[Chunk]:
    """Every chunk up to ``IEND``; a chunk cut short ends the list. Empty without the signature."""
    if not png.startswith(SIGNATURE):
        return []
    chunks = []
    pos = len(SIGNATURE)
    while pos + 12 <= len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(png):
            break
        chunks.append(Chunk(kind, pos, end))
        if kind == b"IEND":
            break
        pos = end
    return chunks


def itxt_chunk(keyword: str, text: str) -> bytes:
    """An uncompressed ``iTXt`` chunk: UTF-8 text, no language tag."""
    # keyword NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL
    return build_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_TEXT_BYTES)
    if not inflater.eof:  # stopped at the cap, or the stream is cut short
        raise ValueError(f"compressed text truncated or larger than {MAX_TEXT_BYTES} bytes")
    return out


def _keyword(png: bytes, chunk: Chunk) -> str:
    head = png[chunk.start + 8 : min(chunk.end - 4, chunk.start + 8 + 80)]  # keywords are 1-79 bytes
    return head.split(b"\x00", 1)[0].decode("latin-1")


def _decode_text(kind: bytes, data: bytes) -> str:
    """The text of a ``tEXt``/``zTXt``/``iTXt`` chunk body (after its keyword's NUL)."""
    if kind == b"tEXt":
        return data.decode("latin-1")
    if kind == b"zTXt":
        return _inflate(data[1:]).decode("latin-1")
    compressed, rest = data[0], data[2:]
    _language, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    return (_inflate(text) if compressed else text).decode("utf-8")


def _texts(png: bytes, keyword: str | None) -> dict[str, str]:
    texts: dict[str, str] = {}
    for chunk in iter_chunks(png):
        if chunk.kind not in TEXT_KINDS or (keyword is not None and _keyword(png, chunk) != keyword):
            continue
        name, _, rest = chunk.data(png).partition(b"\x00")
        try:
            texts[name.decode("latin-1")] = _decode_text(chunk.kind, rest)
        except (zlib.error, UnicodeDecodeError, IndexError, ValueError):
            continue  # an unreadable chunk is skipped, like any text a reader does not understand
    return texts


def text_chunks(png: bytes) -> dict[str, str]:
    """Every readable ``tEXt``/``iTXt``/``zTXt`` chunk, keyword -> text (a later one wins)."""
    return _texts(png, None)


def read_text(png: bytes, keyword: str) -> str | None:
    """The text stored under ``keyword``, or ``None``; other chunks are not inflated."""
    return _texts(png, keyword).get(keyword)


def set_text(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with ``text`` in an ``iTXt`` chunk right after ``IHDR``, where a reader that stops
    early still finds it; older text chunks of that keyword are dropped. Other bytes are copied
    as they are."""
    if not png.startswith(SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG (no IHDR chunk after the signature)")
    old = [chunk for chunk in iter_chunks(png) if chunk.kind in TEXT_KINDS and _keyword(png, chunk) == keyword]
    parts = [png[:_IHDR_END], itxt_chunk(keyword, text)]
    pos = _IHDR_END
    for chunk in old:
        parts.append(png[pos : chunk.start])
        pos = chunk.end
    parts.append(png[pos:])
    return b"".join(parts)
