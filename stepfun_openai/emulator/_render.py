"""Deterministic stand-in images: a smooth colour field on a coarse grid, written as PNG.

Speed comes from never touching single pixels of the output: colours are computed on a grid of
at most ``GRID`` cells a side, blended there with the source and style images, and scaled up by
repeating bytes; one low-level ``zlib.compress`` then dominates the cost, as it would for any
PNG writer. Standard library only; Pillow, when installed, decodes sources the built-in PNG
reader cannot (JPEG, WebP, filtered or interlaced PNGs).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .. import _png

__all__ = ["GRID", "METADATA_KEY", "RenderCache", "RenderJob", "decode_rgb", "read_png_metadata", "render_png"]

GRID = 48
"""Cells along the longer side of the colour grid."""

_MIN_CELL = 8
METADATA_KEY = "stepfun-emulator"
_EDIT_SOURCE_KEEP = 0.65
"""How much of the input an edit keeps: edits change part of an image, not all of it."""


@dataclass(frozen=True)
class RenderJob:
    width: int
    height: int
    seed: int
    content_key: bytes
    """Everything that decides the picture except the seed (prompt, steps, ...), hashed."""
    metadata: dict[str, Any]
    source: bytes | None = None
    source_weight: float | None = None
    """Share of the generated image; 1 ignores the source, smaller stays closer to it."""
    style: bytes | None = None
    style_weight: float | None = None
    blank: bool = False
    """Moderation withheld the picture: a flat grey image instead."""


def _grid_shape(width: int, height: int) -> tuple[int, int, int]:
    # Cells of at least 8 px: small images (the usual test size) then cost a quarter as much.
    cell = max(_MIN_CELL, math.ceil(max(width, height) / GRID))
    return cell, math.ceil(width / cell), math.ceil(height / cell)


def _generated_grid(job: RenderJob, cols: int, rows: int) -> list[float]:
    # The seed alone picks the palette, so a fixed seed keeps the "style" across prompts,
    # as StepFun's guide promises; the prompt and the other parameters move the shapes.
    palette = random.Random(job.seed)
    colours = [[palette.randrange(256) for _ in range(3)] for _ in range(3)]
    content = hashlib.sha256(job.content_key + job.seed.to_bytes(8, "big")).digest()
    shapes = random.Random(int.from_bytes(content[:8], "big"))
    waves = [(shapes.uniform(0.5, 3.0), shapes.uniform(-3.0, 3.0), shapes.uniform(0, math.tau)) for _ in range(2)]
    noise = shapes.randbytes(cols * rows)
    # sin(a + b) = sin a cos b + cos a sin b: per-row and per-column tables keep the cell loop cheap.
    tables = []
    for fx, fy, phase in waves:
        col_a = [math.tau * fx * gx / cols + phase for gx in range(cols)]
        row_b = [math.tau * fy * gy / rows for gy in range(rows)]
        tables.append(
            (
                [math.sin(a) for a in col_a],
                [math.cos(a) for a in col_a],
                [math.sin(b) for b in row_b],
                [math.cos(b) for b in row_b],
            )
        )
    (s1a, c1a, s1b, c1b), (s2a, c2a, s2b, c2b) = tables
    (r0, g0, b0), (r1, g1, b1), (r2, g2, b2) = colours
    out: list[float] = []
    append = out.extend
    i = 0
    for gy in range(rows):
        sb1, cb1, sb2, cb2 = s1b[gy], c1b[gy], s2b[gy], c2b[gy]
        for gx in range(cols):
            t = 0.5 + 0.5 * (s1a[gx] * cb1 + c1a[gx] * sb1)
            u = 0.25 + 0.25 * (s2a[gx] * cb2 + c2a[gx] * sb2)
            n = (noise[i] - 128) * 0.08
            i += 1
            append(
                (
                    (r0 + (r1 - r0) * t) * (1 - u) + r2 * u + n,
                    (g0 + (g1 - g0) * t) * (1 - u) + g2 * u + n,
                    (b0 + (b1 - b0) * t) * (1 - u) + b2 * u + n,
                )
            )
    return out


def render_png(job: RenderJob) -> bytes:
    width, height = job.width, job.height
    cell, cols, rows = _grid_shape(width, height)
    if job.blank:
        grid: list[float] = [128.0] * (cols * rows * 3)
    else:
        grid = _generated_grid(job, cols, rows)
        if job.source is not None:
            source = decode_grid(job.source, cols, rows)
            keep = 1.0 - (job.source_weight if job.source_weight is not None else 1.0 - _EDIT_SOURCE_KEEP)
            grid = [g + (s - g) * keep for g, s in zip(grid, source, strict=True)]
        if job.style is not None:
            grid = _pull_towards(grid, _mean_colour(decode_grid(job.style, cols, rows)), job.style_weight or 1.0)
    cells = bytes(0 if v < 0 else 255 if v > 255 else int(v + 0.5) for v in grid)

    widths = [min(cell, width - gx * cell) for gx in range(cols)]
    lines: list[bytes] = []
    for gy in range(rows):
        base = gy * cols * 3
        line = b"\x00" + b"".join(cells[base + 3 * gx : base + 3 * gx + 3] * w for gx, w in enumerate(widths))
        lines += [line] * min(cell, height - gy * cell)
    # Level 1: the flat cells compress well anyway, and higher levels cost several times more.
    idat = zlib.compress(b"".join(lines), 1)
    text = json.dumps(job.metadata, ensure_ascii=False, sort_keys=True)
    return b"".join(
        (
            _png.SIGNATURE,
            _png.build_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
            _png.itxt_chunk(METADATA_KEY, text),
            _png.build_chunk(b"IDAT", idat),
            _png.build_chunk(b"IEND", b""),
        )
    )


def _mean_colour(grid: list[float]) -> tuple[float, float, float]:
    count = max(1, len(grid) // 3)
    return sum(grid[0::3]) / count, sum(grid[1::3]) / count, sum(grid[2::3]) / count


def _pull_towards(grid: list[float], colour: tuple[float, float, float], weight: float) -> list[float]:
    # weight is in (0, 2]; at 2 the reference's colour dominates, leaking "content" as documented.
    share = 0.4 * weight
    return [v + (colour[i % 3] - v) * share for i, v in enumerate(grid)]


def read_png_metadata(png: bytes) -> dict[str, Any] | None:
    """The request parameters the emulator stored in one of its PNGs (``None`` if absent)."""
    text = _png.read_text(png, METADATA_KEY)
    if text is None:
        return None
    value = json.loads(text)
    return value if isinstance(value, dict) else None


_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> bytes per pixel at bit depth 8


def decode_rgb(data: bytes, *, unfilter: bool = True) -> tuple[int, int, int, bytes] | None:
    """``(width, height, bytes_per_pixel, scanlines)`` of a plain 8-bit non-interlaced PNG.

    ``scanlines`` keeps each row's filter byte, all reset to 0. ``None`` for anything else, and
    with ``unfilter=False`` also for a PNG whose rows are filtered (undoing that is slow here).
    """
    chunks = _png.iter_chunks(data)
    header = chunks[0].data(data) if chunks and chunks[0].kind == b"IHDR" else b""
    if len(header) != 13:
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    bpp = _CHANNELS.get(colour)
    if depth != 8 or interlace or bpp is None or not width or not height:
        return None
    try:
        raw = zlib.decompress(b"".join(chunk.data(data) for chunk in chunks if chunk.kind == b"IDAT"))
    except zlib.error:
        return None
    stride = width * bpp
    if len(raw) < (stride + 1) * height:
        return None
    if any(raw[y * (stride + 1)] for y in range(height)):
        if not unfilter:
            return None
        raw = _unfilter(raw, width, height, bpp)
    return width, height, bpp, raw


def _unfilter(raw: bytes, width: int, height: int, bpp: int) -> bytes:
    """PNG's per-row filters undone in pure Python: slow, used only without Pillow."""
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        out.append(0)
        out += line
        prev = line
    return bytes(out)


def decode_grid(data: bytes, cols: int, rows: int) -> list[float]:
    """An image sampled onto a ``cols`` x ``rows`` grid of RGB values.

    Tries, in order: the built-in reader for plain PNGs whose rows are unfiltered (the
    emulator's own output: fast), Pillow, the built-in reader with pure-Python unfiltering,
    and finally a single colour derived from the bytes so that any source still matters.
    """
    decoded = decode_rgb(data, unfilter=False)
    if decoded is None:
        pillow = _pillow_grid(data, cols, rows)
        if pillow is not None:
            return pillow
        decoded = decode_rgb(data)
    if decoded is None:
        colour = [float(b) for b in hashlib.sha256(data).digest()[:3]]
        return colour * (cols * rows)
    width, height, bpp, raw = decoded
    stride = width * bpp + 1
    out: list[float] = []
    xs = [min(width - 1, (2 * gx + 1) * width // (2 * cols)) * bpp + 1 for gx in range(cols)]
    for gy in range(rows):
        base = min(height - 1, (2 * gy + 1) * height // (2 * rows)) * stride
        for x in xs:
            if bpp >= 3:
                out += raw[base + x : base + x + 3]
            else:
                out += [raw[base + x]] * 3
    return [float(v) for v in out]


def _pillow_grid(data: bytes, cols: int, rows: int) -> list[float] | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (cols, rows))  # JPEG: decode at a reduced scale
            small = image.convert("RGB").resize((cols, rows))
            return [float(v) for v in small.tobytes()]
    except Exception:
        return None


class RenderCache:
    """A small LRU of rendered PNGs: clients that retry or poll repeat identical requests."""

    def __init__(self, capacity: int = 64) -> None:
        self._capacity = capacity
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def render(self, key: bytes, job: RenderJob) -> bytes:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
                return png
        png = render_png(job)
        with self._lock:
            self._items[key] = png
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return png
