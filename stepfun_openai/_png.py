"""PNG chunks: build, walk, and read or write text, without decoding any pixels.

The package's one PNG chunk codec: provenance (``_metadata.py``) and the emulator's renderer both
use it. Standard library only, so the emulator may import it without the client. Compressed text
(``zTXt``, compressed ``iTXt``) is inflated at most to ``MAX_TEXT_BYTES`` a chunk and
``MAX_TEXT_TOTAL`` a file, and at most ``MAX_TEXT_CHUNKS`` text chunks are read: a file is
untrusted input, and a few kilobytes of deflate can expand to gigabytes (one chunk or thousands).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

__all__ = [
    "MAX_TEXT_BYTES",
    "MAX_TEXT_CHUNKS",
    "MAX_TEXT_TOTAL",
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
MAX_TEXT_TOTAL = 4 * 1024 * 1024
"""The most text (inflated or not) read from one file, all chunks together; the rest is ignored."""
MAX_TEXT_CHUNKS = 256
"""The most text chunks of one file that are read (a later one is ignored): thousands of small
chunks, each inflating to ``MAX_TEXT_BYTES``, would otherwise cost seconds of CPU each time."""
_MAX_TEXT_CHUNK = MAX_TEXT_BYTES + 4096
"""A text chunk longer than this (keyword, flags and deflate overhead included) is not read."""

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
    return list(_walk(_in_memory(png)))


_At = Callable[[int, int], bytes]
"""``at(offset, count)``: up to ``count`` bytes of a PNG from ``offset`` (in memory, or a file)."""


class _Source(NamedTuple):
    at: _At
    size: int


def _in_memory(png: bytes) -> _Source:
    return _Source(lambda offset, count: png[offset : offset + count], len(png))


def _in_file(handle: BinaryIO) -> _Source:
    def at(offset: int, count: int) -> bytes:
        handle.seek(offset)
        return handle.read(count)

    return _Source(at, os.fstat(handle.fileno()).st_size)


def _walk(png: _Source) -> Iterator[Chunk]:
    """:func:`iter_chunks` one at a time, reading only each chunk's 8-byte head (a large file is
    never read whole, and a file of many tiny chunks holds no list of them)."""
    if png.at(0, len(SIGNATURE)) != SIGNATURE:
        return
    pos = len(SIGNATURE)
    while pos + 12 <= png.size:
        head = png.at(pos, 8)
        if len(head) < 8:
            return
        (length,) = struct.unpack(">I", head[:4])
        kind = head[4:]
        end = pos + 12 + length
        if end > png.size:
            return
        yield Chunk(kind, pos, end)
        if kind == b"IEND":
            return
        pos = end


def itxt_chunk(keyword: str, text: str) -> bytes:
    """An uncompressed ``iTXt`` chunk: UTF-8 text, no language tag."""
    # keyword NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL
    return build_chunk(b"iTXt", keyword.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8"))


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if not inflater.eof:  # stopped at the cap, or the stream is cut short
        raise ValueError(f"compressed text truncated or larger than {limit} bytes")
    return out


def _keyword(png: _Source, chunk: Chunk) -> str:
    head = png.at(chunk.start + 8, min(chunk.end - 12 - chunk.start, 80))  # keywords are 1-79 bytes
    return head.split(b"\x00", 1)[0].decode("latin-1")


def _decode_text(kind: bytes, data: bytes, limit: int) -> bytes:
    """The text bytes of a ``tEXt``/``zTXt``/``iTXt`` chunk body (after its keyword's NUL),
    inflated to at most ``limit`` bytes."""
    if kind == b"tEXt":
        text = data
    elif kind == b"zTXt":
        text = _inflate(data[1:], limit)
    else:
        compressed, rest = data[0], data[2:]
        _language, _, rest = rest.partition(b"\x00")
        _translated, _, text = rest.partition(b"\x00")
        if compressed:
            text = _inflate(text, limit)
    if len(text) > limit:
        raise ValueError(f"text larger than {limit} bytes")
    return text


def _texts(png: _Source, keyword: str | None) -> dict[str, str]:
    texts: dict[str, str] = {}
    budget = MAX_TEXT_TOTAL  # all chunks together: many small bombs are one large bomb
    read = 0
    for chunk in _walk(png):
        if chunk.kind not in TEXT_KINDS or (keyword is not None and _keyword(png, chunk) != keyword):
            continue
        read += 1
        if read > MAX_TEXT_CHUNKS or budget <= 0:
            break
        limit = min(MAX_TEXT_BYTES, budget)
        length = chunk.end - 12 - chunk.start
        if length > _MAX_TEXT_CHUNK:  # larger than any text read: not read at all
            budget -= limit
            continue
        name, _, rest = png.at(chunk.start + 8, length).partition(b"\x00")
        try:
            text = _decode_text(chunk.kind, rest, limit)
            budget -= len(text)
            texts[name.decode("latin-1")] = text.decode("latin-1" if chunk.kind != b"iTXt" else "utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError, ValueError):
            # An unreadable chunk is skipped, like any text a reader does not understand; the
            # inflating it may have cost counts as if it had been read.
            budget -= limit
    return texts


def text_chunks(png: bytes) -> dict[str, str]:
    """Every readable ``tEXt``/``iTXt``/``zTXt`` chunk, keyword -> text (a later one wins)."""
    return _texts(_in_memory(png), None)


def read_text(png: bytes | BinaryIO, keyword: str) -> str | None:
    """The text stored under ``keyword``, or ``None``; other chunks are not inflated. ``png`` may
    be an open file (seekable, binary): only the chunks' heads and the text chunks of that keyword
    are read, so a large file costs no more than a small one."""
    source = _in_memory(png) if isinstance(png, bytes) else _in_file(png)
    return _texts(source, keyword).get(keyword)


def set_text(png: bytes, keyword: str, text: str) -> bytes:
    """``png`` with ``text`` in an ``iTXt`` chunk right after ``IHDR``, where a reader that stops
    early still finds it; older text chunks of that keyword are dropped. Other bytes are copied
    as they are."""
    if not png.startswith(SIGNATURE) or png[12:16] != b"IHDR":
        raise ValueError("not a PNG (no IHDR chunk after the signature)")
    source = _in_memory(png)
    old = [chunk for chunk in _walk(source) if chunk.kind in TEXT_KINDS and _keyword(source, chunk) == keyword]
    view = memoryview(png)  # slices of a view are not copies: the image is copied once, by join
    parts: list[bytes | memoryview] = [view[:_IHDR_END], itxt_chunk(keyword, text)]
    pos = _IHDR_END
    for chunk in old:
        parts.append(view[pos : chunk.start])
        pos = chunk.end
    parts.append(view[pos:])
    return b"".join(parts)
