"""The one PNG chunk codec: text in and out of a PNG, the pixels copied as they are."""

from __future__ import annotations

import zlib

import pytest

from stepfun_openai import _png
from stepfun_openai.emulator import read_png_metadata

from ._mock import tiny_png


def _with_chunk(png: bytes, chunk: bytes) -> bytes:
    """``chunk`` inserted before ``IEND`` (the last 12 bytes)."""
    return png[:-12] + chunk + png[-12:]


def test_text_written_is_read_back_and_the_image_bytes_are_kept() -> None:
    png = tiny_png(16, 16)
    tagged = _png.set_text(png, "note", "一只猫 in a hat")
    assert _png.read_text(tagged, "note") == "一只猫 in a hat"
    assert [chunk.kind for chunk in _png.iter_chunks(tagged)] == [b"IHDR", b"iTXt", b"IDAT", b"IEND"]
    idat = [chunk.data(tagged) for chunk in _png.iter_chunks(tagged) if chunk.kind == b"IDAT"]
    assert idat == [chunk.data(png) for chunk in _png.iter_chunks(png) if chunk.kind == b"IDAT"]


def test_writing_a_keyword_again_replaces_its_text_and_keeps_the_others() -> None:
    png = _png.set_text(_png.set_text(tiny_png(), "a", "1"), "b", "2")
    png = _png.set_text(png, "a", "3")
    assert _png.text_chunks(png) == {"a": "3", "b": "2"}
    assert sum(chunk.kind == b"iTXt" for chunk in _png.iter_chunks(png)) == 2


def test_all_three_text_kinds_are_read() -> None:
    png = tiny_png()
    png = _with_chunk(png, _png.build_chunk(b"tEXt", b"plain\x00caf\xe9"))
    png = _with_chunk(png, _png.build_chunk(b"zTXt", b"zipped\x00\x00" + zlib.compress(b"deflated")))
    itxt = b"packed\x00\x01\x00en\x00\x00" + zlib.compress("压缩".encode())
    png = _with_chunk(png, _png.build_chunk(b"iTXt", itxt))
    assert _png.text_chunks(png) == {"plain": "café", "zipped": "deflated", "packed": "压缩"}


def test_a_compression_bomb_is_skipped_not_inflated() -> None:
    bomb = zlib.compress(b"\x00" * (_png.MAX_TEXT_BYTES + 1), 9)
    png = _with_chunk(tiny_png(), _png.build_chunk(b"zTXt", b"bomb\x00\x00" + bomb))
    png = _with_chunk(png, _png.build_chunk(b"iTXt", b"bomb2\x00\x01\x00\x00\x00" + bomb))
    assert _png.text_chunks(png) == {}
    assert _png.read_text(png, "bomb") is None


def test_a_truncated_or_foreign_file_gives_what_is_complete() -> None:
    png = _png.set_text(tiny_png(), "note", "kept")
    cut = png[: png.index(b"IDAT") + 10]
    assert [chunk.kind for chunk in _png.iter_chunks(cut)] == [b"IHDR", b"iTXt"]
    assert _png.read_text(cut, "note") == "kept"
    assert _png.iter_chunks(b"\xff\xd8\xff\xe0 a jpeg") == []
    with pytest.raises(ValueError, match="not a PNG"):
        _png.set_text(b"\xff\xd8\xff\xe0 a jpeg", "note", "x")


def test_the_emulator_reads_its_metadata_through_the_same_codec() -> None:
    png = _png.set_text(tiny_png(), "stepfun-emulator", '{"seed": 7}')
    assert read_png_metadata(png) == {"seed": 7}
    assert read_png_metadata(tiny_png()) is None
