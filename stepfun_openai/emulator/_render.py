"""Deterministic stand-in images that show what was asked, written as PNG.

A text-to-image result is a colour field chosen by the seed (its palette) and the request (its
shapes), with a card naming the prompt, model, size, seed and steps; the same request and seed
give the same bytes. An image derived from a source (``image2image``, ``source_image``, edits)
is the source's own pixels mixed with that field in proportion to ``source_weight``, captioned
at its foot. A picture withheld by moderation is grey, framed and labelled CONTENT FILTERED.

Speed comes from never computing single pixels in Python: colours are computed on a grid of at
most ``GRID`` cells a side, blended there with the style image, and scaled up by repeating
bytes; a source is mixed in a scanline at a time (``bytes.translate`` scales it, big-integer
addition adds the grid's share); text is pasted as runs of bytes. One low-level
``zlib.compress`` then dominates the cost, as it would for any PNG writer. Standard library
only, text included (the bitmap font of ``_font``); Pillow, when installed, decodes and resizes
sources the built-in PNG reader cannot (JPEG, WebP, filtered or interlaced PNGs, other sizes)
and draws characters the bitmap font lacks with an installed font, if one has them.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import random
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .. import _png
from . import _font

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
    """Stored in the PNG; its ``resolved`` mapping (prompt, model, steps, endpoint) is what the
    card shows. Without one the picture has no card."""
    source: bytes | None = None
    source_weight: float | None = None
    """Share of the generated image; 1 ignores the source, smaller stays closer to it."""
    style: bytes | None = None
    style_weight: float | None = None
    blank: bool = False
    """Moderation withheld the picture: a grey image marked "CONTENT FILTERED" instead."""


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
    """The PNG for ``job``: a colour field from the seed (or the source it is derived from) and a
    card naming what was asked (prompt, model, size, seed, steps), or a marked grey image."""
    width, height = job.width, job.height
    cell, cols, rows = _grid_shape(width, height)
    pixels: list[bytes] | None = None
    if job.blank:
        grid: list[float] = [_GREY] * (cols * rows * 3)
        _frame(grid, cols, rows)
    else:
        grid = _generated_grid(job, cols, rows)
        keep = 1.0 - _source_weight(job)
        if job.source is not None:
            pixels = _source_rows(job.source, width, height)
            if pixels is None:  # undecodable here: blend with the source sampled onto the grid
                source = decode_grid(job.source, cols, rows)
                grid = [g + (s - g) * keep for g, s in zip(grid, source, strict=True)]
            else:  # the source's own pixels are kept below; the grid holds the generated share
                grid = [g * (1.0 - keep) for g in grid]
        if job.style is not None:
            share = _style_share(job.style_weight)
            colour = _mean_colour(decode_grid(job.style, cols, rows))
            grid = [v * (1.0 - share) + colour[i % 3] * share for i, v in enumerate(grid)]
            keep *= 1.0 - share
    card = _card(job)
    texts: list[_Text] = []
    panel: tuple[int, int, int, int] | None = None
    if card is not None:
        texts, panel = _layout(card, width, height, cell)
        if panel is not None and card.shade:
            _darken(grid, cols, panel, card.shade)
        else:
            panel = None
    if pixels is None:
        cells = bytes(0 if v < 0 else 255 if v > 255 else int(v + 0.5) for v in grid)
    else:
        # Each channel is floor(source * keep) + (the grid's share), added as big integers, one
        # scanline at a time: no byte can carry into its neighbour while the two parts sum to at
        # most 255, which the cap on the grid's share guarantees.
        room = 255 - int(255 * keep)
        cells = bytes(0 if v < 0 else room if v > room else int(v) for v in grid)

    widths = [min(cell, width - gx * cell) for gx in range(cols)]
    base_lines = []
    for gy in range(rows):
        base = gy * cols * 3
        base_lines.append(b"".join(cells[base + 3 * gx : base + 3 * gx + 3] * w for gx, w in enumerate(widths)))
    if pixels is None:
        scanlines = [b"\x00" + line for line in base_lines]
        lines = [scanlines[y // cell] for y in range(height)]
    else:
        lines = _blend_rows(pixels, base_lines, cell, keep, panel, card.shade if card else 0.0, width)
    _paint_text(lines, texts, width)
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


def _source_weight(job: RenderJob) -> float:
    return job.source_weight if job.source_weight is not None else 1.0 - _EDIT_SOURCE_KEEP


def _style_share(weight: float | None) -> float:
    # weight is in (0, 2]; at 2 the reference's colour dominates, leaking "content" as documented.
    return 0.4 * (weight or 1.0)


def _blend_rows(
    pixels: list[bytes],
    base_lines: list[bytes],
    cell: int,
    keep: float,
    panel: tuple[int, int, int, int] | None,
    shade: float,
    width: int,
) -> list[bytes]:
    """Scanlines of ``floor(source * keep)`` plus the grid's share, darkened under the panel."""
    table = bytes(int(v * keep) for v in range(256))
    shaded = bytes(int(v * keep * (1.0 - shade)) for v in range(256))
    size = 3 * width
    addends = [int.from_bytes(line, "big") for line in base_lines]  # once per grid row, not per scanline
    lines = []
    for y, row in enumerate(pixels):
        gy = y // cell
        if panel is not None and panel[1] <= gy < panel[3]:
            a, b = 3 * min(width, panel[0] * cell), 3 * min(width, panel[2] * cell)
            source = row[:a].translate(table) + row[a:b].translate(shaded) + row[b:].translate(table)
        else:
            source = row.translate(table)
        total = int.from_bytes(source, "big") + addends[gy]
        lines.append(b"\x00" + total.to_bytes(size, "big"))
    return lines


def _source_rows(data: bytes, width: int, height: int) -> list[bytes] | None:
    """The source as ``height`` RGB scanlines ``width`` pixels wide, or ``None`` if it cannot be
    had cheaply: a PNG of exactly that size is read by the built-in reader, anything else needs
    Pillow (to decode or to resize)."""
    decoded = decode_rgb(data, unfilter=False)
    if decoded is None or decoded[:2] != (width, height):
        rgb = _pillow_rgb(data, width, height)
        if rgb is not None:
            return [rgb[3 * width * y : 3 * width * (y + 1)] for y in range(height)]
        decoded = decode_rgb(data)
    if decoded is None or decoded[:2] != (width, height):
        return None
    _, _, bpp, raw = decoded
    stride = width * bpp + 1
    rows = []
    for y in range(height):
        line = raw[y * stride + 1 : (y + 1) * stride]
        if bpp == 3:
            rows.append(line)
            continue
        rgb_line = bytearray(3 * width)
        for channel in range(3):  # grey (1, 2) repeats its one value, RGBA (4) drops alpha
            rgb_line[channel::3] = line[(channel if bpp == 4 else 0) :: bpp]
        rows.append(bytes(rgb_line))
    return rows


def _pillow_rgb(data: bytes, width: int, height: int) -> bytes | None:
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (width, height))
            rgb = image.convert("RGB")
            if rgb.size != (width, height):
                rgb = rgb.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
            pixels: bytes = rgb.tobytes()
            return pixels
    except Exception:
        return None


# --- the card ------------------------------------------------------------------------------------
#
# Text is drawn with the bitmap font of ``_font`` at a whole scale ``k`` (a font pixel is k x k
# output pixels), as runs of bytes pasted into copies of the colour grid's scanlines: a text
# row costs a copy of one scanline and one slice assignment per run of ink, and rows that repeat
# (k of them per font row) are built once. The panel behind the text darkens whole grid cells,
# so it costs nothing per pixel either.

_GREY = 128.0
_INK = bytes((250, 250, 244))
_META_INK = bytes((214, 222, 236))
_SHADOW = bytes((16, 16, 24))
_FILTERED_INK = bytes((30, 30, 30))
_MAX_SCALE = 6
_CARD_SHARE = 0.6
"""Of the height inside the margins, how much the prompt may take before a smaller scale is tried."""
_CAPTION_LINES = 2
_ELLIPSIS = "..."


@dataclass(frozen=True)
class _Card:
    title: str
    meta: str
    caption: bool
    """At the foot of an image derived from a source, small, instead of a large centred card."""
    shade: float
    """How much the panel behind the text darkens the picture (0: not at all)."""
    ink: bytes
    meta_ink: bytes
    shadow: bytes | None


@dataclass(frozen=True)
class _Text:
    x: int
    y: int
    scale: int
    text: str
    ink: bytes
    shadow: bytes | None


def _card(job: RenderJob) -> _Card | None:
    resolved = job.metadata.get("resolved")
    if not isinstance(resolved, dict):
        return None
    parts = [str(resolved.get("model") or "")]
    parts.append(f"{job.width}x{job.height}")
    parts.append(f"seed {job.seed}")
    if resolved.get("steps") is not None:
        parts.append(f"{resolved['steps']} steps")
    if job.blank:
        return _Card(
            "CONTENT FILTERED", " · ".join(p for p in parts if p), False, 0.0, _FILTERED_INK, _FILTERED_INK, None
        )
    if job.source is not None:
        # One line at the foot of the image: what tells this derivation apart comes first.
        endpoint = str(resolved.get("endpoint") or "")
        parts = [
            parts[2],
            "edit" if "edit" in endpoint else f"source_weight {_source_weight(job):g}",
            *parts[3:],
            *parts[:2],
        ]
    meta = " · ".join(p for p in parts if p)
    prompt = str(resolved.get("prompt") or "")
    if job.source is not None:
        # The panel fades with the source's share, so that a small source_weight stays close to it.
        return _Card(prompt, meta, True, 0.55 * _source_weight(job), _INK, _META_INK, _SHADOW)
    # On the dark panel the text needs no shadow (which would cost as much again to draw).
    return _Card(prompt, meta, False, 0.62, _INK, _META_INK, None)


def _layout(card: _Card, width: int, height: int, cell: int) -> tuple[list[_Text], tuple[int, int, int, int] | None]:
    """Where each line goes, and the panel behind them in grid cells (x0, y0, x1, y1), end exclusive."""
    top_scale = max(1, min(_MAX_SCALE, min(width, 2 * height) // 128))
    meta_scale = max(1, top_scale // 3)
    margin = max(2, min(width, height) // 20)
    pad = _font.ADVANCE * meta_scale
    inner = width - 2 * (margin + pad)
    if inner < _font.ADVANCE:
        return [], None
    room = height - 2 * (margin + pad)
    meta = _wrap(card.meta, inner, meta_scale, 2 if room >= 6 * _font.LINE * meta_scale and not card.caption else 1)
    meta_height = len(meta) * _font.LINE * meta_scale
    gap = _font.LINE * meta_scale // 2
    if meta_height + gap > room:
        meta, meta_height, gap = [], 0, 0
    room -= meta_height + gap
    if card.caption:
        scale = max(1, top_scale // 2)
        limit = min(_CAPTION_LINES, room // (_font.LINE * scale))
        while limit < 1 and scale > 1:
            scale -= 1
            limit = min(_CAPTION_LINES, room // (_font.LINE * scale))
        title = _wrap(card.title, inner, scale, limit)
    else:
        # The largest scale at which the whole prompt takes at most _CARD_SHARE of the room (so
        # that the background still shows), else the largest at which it fits at all, else the
        # smallest, cut.
        chosen: tuple[int, list[str]] | None = None
        fallback: tuple[int, list[str]] | None = None
        for scale in range(top_scale, 0, -1):
            title = _wrap(card.title, inner, scale, None)
            height_needed = len(title) * _font.LINE * scale
            if height_needed <= _CARD_SHARE * room:
                chosen = scale, title
                break
            if fallback is None and height_needed <= room:
                fallback = scale, title
        scale, title = chosen or fallback or (1, _wrap(card.title, inner, 1, max(0, room // _font.LINE)))
    title_height = len(title) * _font.LINE * scale
    if not title:
        gap = 0
    block = title_height + gap + meta_height
    if block == 0:
        return [], None
    if card.caption:
        y0 = height - margin - pad - block
    else:
        y0 = (height - block) // 2
    # The panel covers whole grid cells around the block; the block is centred in it.
    gx0, gx1 = margin // cell, -(-(width - margin) // cell)
    gy0, gy1 = max(0, (y0 - pad) // cell), -(-(y0 + block + pad) // cell)
    if not card.caption:
        y0 = max(0, (gy0 * cell + min(height, gy1 * cell) - block) // 2)
    texts = []
    y = y0
    for line in title:
        texts.append(_Text(margin + pad, y, scale, line, card.ink, card.shadow))
        y += _font.LINE * scale
    y += gap
    for line in meta:
        texts.append(_Text(margin + pad, y, meta_scale, line, card.meta_ink, card.shadow))
        y += _font.LINE * meta_scale
    return texts, (gx0, gy0, gx1, gy1)


def _wrap(text: str, room: int, scale: int, limit: int | None) -> list[str]:
    """``text`` in lines at most ``room`` pixels wide at ``scale``, words kept whole where they
    fit; with ``limit``, at most that many lines, the last ending in an ellipsis if text was cut."""
    text = _font.normalise(text)
    space = _advance(" ", scale)
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line, used = "", 0
        for word in paragraph.split(" "):
            size = _width(word, scale)
            if line and used + space + size <= room:
                line, used = f"{line} {word}", used + space + size
                continue
            if line:
                lines.append(line)
            line, used = "", 0
            if size <= room:
                line, used = word, size
                continue
            for char in word:  # a word wider than the line (or text without spaces, as in CJK)
                advance = _advance(char, scale)
                if line and used + advance > room:
                    lines.append(line)
                    line, used = "", 0
                line, used = line + char, used + advance
        lines.append(line)
        if limit is not None and len(lines) > limit:
            break
    while lines and not lines[-1].strip():
        lines.pop()
    if limit is not None and len(lines) > limit:
        lines = lines[:limit]
        if lines:
            last = lines[-1]
            while last and _width(last + _ELLIPSIS, scale) > room:
                last = last[:-1]
            lines[-1] = last.rstrip() + _ELLIPSIS if _width(_ELLIPSIS, scale) <= room else last
    return lines


@functools.lru_cache(maxsize=8192)
def _advance(char: str, scale: int) -> int:
    """Pixels from ``char`` to the next character, without drawing it (wrapping tries scales)."""
    if _font.glyph(char)[1]:
        return _font.ADVANCE * scale
    path = _system_font_for(char)
    font = _truetype(path, 10 * scale) if path is not None else None
    if font is None:
        return _font.ADVANCE * scale
    with _FONT_LOCK:
        length = font.getlength(char)
    return max(scale, int(length + 0.5)) + scale


def _width(text: str, scale: int) -> int:
    return sum(_glyph_runs(char, scale)[1] for char in text)


_Runs = tuple[tuple[tuple[int, int], ...], ...]
"""Ink as runs ``(start, end)`` of pixels, one tuple of runs per output row."""


@functools.lru_cache(maxsize=4096)
def _glyph_runs(char: str, scale: int) -> tuple[_Runs, int, int]:
    """A character's ink (``HEIGHT * scale`` rows), its advance in pixels, and how many output
    rows repeat each row of its bitmap (``scale`` for the bitmap font, 1 for a system font's):
    from the bitmap font, else from a system font through Pillow, else the placeholder box."""
    rows, known = _font.glyph(char)
    if not known:
        path = _system_font_for(char)
        system = _system_glyph(path, char, scale) if path is not None else None
        if system is not None:
            return system
    font_rows = []
    for bits in rows:
        runs = []
        col = 0
        while col < _font.WIDTH:
            if bits >> (_font.WIDTH - 1 - col) & 1:
                start = col
                while col < _font.WIDTH and bits >> (_font.WIDTH - 1 - col) & 1:
                    col += 1
                runs.append((start * scale, col * scale))
            col += 1
        font_rows.append(tuple(runs))
    return tuple(row for row in font_rows for _ in range(scale)), _font.ADVANCE * scale, scale


def _paint_text(lines: list[bytes], texts: list[_Text], width: int) -> None:
    """Paint ``texts`` (with their shadows) into the scanlines ``lines``, in place.

    A text row's paint is worked out once per font row (``step`` output rows share it), and a
    painted scanline is built once per (scanline object, paint): the grid repeats one object for
    all the rows of a cell. The originals are held so that their ids stay unique meanwhile."""
    built: dict[tuple[int, int, int, int], bytes] = {}
    originals = list(lines)
    for number, text in enumerate(texts):
        glyphs = []
        x = text.x
        step = text.scale
        for char in text.text:
            runs, advance, glyph_step = _glyph_runs(char, text.scale)
            glyphs.append((x, runs))
            step = min(step, glyph_step)
            x += advance
        rows = _font.HEIGHT * text.scale
        if text.x >= 0 and x <= width:
            ink_rows = [
                tuple((x0 + s, x0 + e) for x0, runs in glyphs for s, e in runs[oy]) for oy in range(0, rows, step)
            ]
        else:
            ink_rows = [
                tuple((max(0, x0 + s), min(width, x0 + e)) for x0, runs in glyphs for s, e in runs[oy])
                for oy in range(0, rows, step)
            ]
        offset = max(1, text.scale // 2) if text.shadow is not None else 0
        paints: dict[tuple[int, int], tuple[tuple[int, int, bytes], ...]] = {}
        for oy in range(rows + offset):
            y = text.y + oy
            if not 0 <= y < len(lines):
                continue
            ink = oy // step if oy < rows else -1
            shade = (oy - offset) // step if text.shadow is not None and oy >= offset else -1
            paint = paints.get((ink, shade))
            if paint is None:
                spans: list[tuple[int, int, bytes]] = []
                if text.shadow is not None and shade >= 0:
                    spans += [(s + offset, min(width, e + offset), text.shadow) for s, e in ink_rows[shade]]
                if ink >= 0:
                    spans += [(s, e, text.ink) for s, e in ink_rows[ink]]
                paint = paints[(ink, shade)] = tuple((s, e, c) for s, e, c in spans if s < e)
            if not paint:
                continue
            key = (id(originals[y]), number, ink, shade)
            line = built.get(key)
            if line is None:
                buffer = bytearray(originals[y])
                for s, e, colour in paint:
                    buffer[1 + 3 * s : 1 + 3 * e] = colour * (e - s)
                line = built[key] = bytes(buffer)
            lines[y] = line


def _darken(grid: list[float], cols: int, panel: tuple[int, int, int, int], shade: float) -> None:
    gx0, gy0, gx1, gy1 = panel
    rows = len(grid) // (3 * cols)
    keep = 1.0 - shade
    for gy in range(max(0, gy0), min(rows, gy1)):
        for i in range(3 * (gy * cols + max(0, gx0)), 3 * (gy * cols + min(cols, gx1))):
            grid[i] = grid[i] * keep + 12.0 * shade


def _frame(grid: list[float], cols: int, rows: int) -> None:
    """A darker ring of cells around a withheld image, so it reads as marked, not as a grey photo."""
    for gy in range(rows):
        for gx in range(cols):
            if gx in (0, cols - 1) or gy in (0, rows - 1):
                i = 3 * (gy * cols + gx)
                grid[i : i + 3] = [88.0, 88.0, 88.0]


# --- optional: system fonts through Pillow, for what the bitmap font cannot draw -----------------

_FONT_NAMES = (
    "notosanscjk",
    "notoserifcjk",
    "sourcehansans",
    "wqy",
    "droidsansfallback",
    "arialuni",
    "pingfang",
    "msyh",
    "simhei",
    "notosans-regular",
    "dejavusans.ttf",
)
"""File names (lowercase, prefixes) of fonts worth trying, best coverage first."""
_FONT_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.fonts",
    "~/.local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)
_FONT_SCAN_LIMIT = 5000
"""Files looked at when searching the font directories: a bound on the one-time scan."""


@functools.lru_cache(maxsize=1)
def _system_fonts() -> tuple[str, ...]:
    """Paths of installed TrueType/OpenType fonts that may cover non-Latin text, best first."""
    found: dict[str, str] = {}
    seen = 0
    for root in _FONT_DIRS:
        for directory, _, files in os.walk(os.path.expanduser(root)):
            for name in files:
                seen += 1
                lower = name.lower()
                if lower.endswith((".ttf", ".otf", ".ttc")) and any(lower.startswith(p) for p in _FONT_NAMES):
                    found.setdefault(lower, os.path.join(directory, name))
                if seen > _FONT_SCAN_LIMIT:
                    break
    rank = {name: i for i, name in enumerate(_FONT_NAMES)}
    return tuple(
        path
        for name, path in sorted(
            found.items(), key=lambda item: min(r for p, r in rank.items() if item[0].startswith(p))
        )
    )


_PROBE_SIZE = 20
"""Pixel size at which a font is asked whether it has a character."""


@functools.lru_cache(maxsize=64)
def _truetype(path: str, size: int) -> Any:
    """A loaded font (``None`` without Pillow or if it does not load), kept: loading reads the file."""
    try:
        from PIL import ImageFont

        return ImageFont.truetype(path, size=size)
    except Exception:
        return None


_FONT_LOCK = threading.Lock()
"""A FreeType face is not safe to use from two threads at once, and the server has many."""


def _draw(font: Any, char: str, width: int, height: int, baseline: int) -> bytes:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height))
    with _FONT_LOCK:
        ImageDraw.Draw(canvas).text((0, baseline), char, font=font, fill=255, anchor="ls")
    pixels: bytes = canvas.tobytes()
    return pixels


@functools.lru_cache(maxsize=64)
def _missing_glyph(path: str) -> bytes:
    """What the font at ``path`` draws for a character it lacks (a private code point)."""
    font = _truetype(path, _PROBE_SIZE)
    return _draw(font, "\U0010fffd", 2 * _PROBE_SIZE, 2 * _PROBE_SIZE, 3 * _PROBE_SIZE // 2)


@functools.lru_cache(maxsize=8192)
def _system_font_for(char: str) -> str | None:
    """The first installed font (through Pillow) that has ``char``; asked once per character."""
    if not char.isprintable() or char.isspace():
        return None
    for path in _system_fonts():
        font = _truetype(path, _PROBE_SIZE)
        if font is None:
            continue
        try:
            ink = _draw(font, char, 2 * _PROBE_SIZE, 2 * _PROBE_SIZE, 3 * _PROBE_SIZE // 2)
            if any(ink) and ink != _missing_glyph(path):
                return path
        except Exception:
            continue
    return None


def _system_glyph(path: str, char: str, scale: int) -> tuple[_Runs, int, int] | None:
    """``char`` drawn by the font at ``path``, as ``_glyph_runs`` returns. The picture then depends
    on the fonts of the machine (still the same bytes for the same request on it)."""
    font = _truetype(path, 10 * scale)
    if font is None:
        return None
    rows = _font.HEIGHT * scale
    advance = _advance(char, scale)
    try:
        # The baseline is the bottom of the capitals: 2 accent rows and 7 rows of capitals.
        ink = _draw(font, char, advance, rows, 9 * scale)
    except Exception:
        return None
    runs = []
    for y in range(rows):
        row = ink[y * advance : (y + 1) * advance]
        spans = []
        x = 0
        while x < advance:
            if row[x] >= 128:
                start = x
                while x < advance and row[x] >= 128:
                    x += 1
                spans.append((start, x))
            x += 1
        runs.append(tuple(spans))
    return tuple(runs), advance, 1


def _forget_fonts() -> None:
    """Drop every cached glyph and font answer (tests change which fonts exist)."""
    for cached in (_glyph_runs, _advance, _system_font_for, _system_fonts, _truetype, _missing_glyph):
        cached.cache_clear()


def _mean_colour(grid: list[float]) -> tuple[float, float, float]:
    count = max(1, len(grid) // 3)
    return sum(grid[0::3]) / count, sum(grid[1::3]) / count, sum(grid[2::3]) / count


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
