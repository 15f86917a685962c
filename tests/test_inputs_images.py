"""Images going in: every kind of input, header sniffing on real files, and ``fit=True``."""

from __future__ import annotations

import base64
import io
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from stepfun_openai import ImageFitWarning, StepFun, StepFunValidationError
from stepfun_openai._inputs import InlineImage, encode_inline
from stepfun_openai._sniff import sniff

from ._mock import Recorder


def pil_bytes(fmt: str, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (10, 120, 200) if mode == "RGB" else None).save(buffer, format=fmt)
    return buffer.getvalue()


def client(recorder: Recorder, **options: Any) -> StepFun:
    return StepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        http_client=httpx2.Client(transport=recorder.transport),
        **options,
    )


def sent_source(recorder: Recorder) -> bytes:
    """The image bytes the server received in ``source_url``."""
    body = json.loads(recorder.last.content)
    header, _, payload = body["source_url"].partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64")
    return base64.b64decode(payload, validate=True)


def image2image(sf: StepFun, source: Any, **kwargs: Any) -> Any:
    return sf.images.image2image(model="step-2x-large", prompt="a cat", source_url=source, source_weight=0.5, **kwargs)


# --- every input kind --------------------------------------------------------------------------

PNG = pil_bytes("PNG")


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda p: p, id="Path"),
        pytest.param(lambda p: str(p), id="str path"),
        pytest.param(lambda p: p.read_bytes(), id="bytes"),
        pytest.param(lambda p: bytearray(p.read_bytes()), id="bytearray"),
        pytest.param(lambda p: memoryview(p.read_bytes()), id="memoryview"),
        pytest.param(lambda p: open(p, "rb"), id="open binary file"),
        pytest.param(lambda p: io.BytesIO(p.read_bytes()), id="BytesIO"),
        pytest.param(lambda p: base64.b64encode(p.read_bytes()).decode(), id="bare base64"),
        pytest.param(lambda p: "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode(), id="data URL"),
    ],
)
def test_every_local_input_kind_arrives_as_the_same_image(make: Any, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    recorder = Recorder()
    source = make(path)
    image2image(client(recorder), source)
    if hasattr(source, "close"):
        source.close()
    assert sent_source(recorder) == PNG
    assert recorder.last.headers["content-type"] == "application/json"
    assert int(recorder.last.headers["content-length"]) == len(recorder.last.content)


def test_a_pil_image_is_sent_as_png() -> None:
    recorder = Recorder()
    image2image(client(recorder), Image.new("RGB", (64, 48), (255, 0, 0)))
    received = Image.open(io.BytesIO(sent_source(recorder)))
    assert received.format == "PNG" and received.size == (64, 48)
    assert received.getpixel((5, 5)) == (255, 0, 0)


def test_a_pil_image_in_an_exotic_mode_is_converted_losslessly() -> None:
    recorder = Recorder()
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    image2image(client(recorder), cmyk)
    received = Image.open(io.BytesIO(sent_source(recorder)))
    assert received.mode == "RGB" and received.getpixel((0, 0)) == (255, 0, 0)


def test_a_transparent_palette_pil_image_keeps_its_transparency() -> None:
    recorder = Recorder()
    palette = Image.new("P", (8, 8), 0)
    palette.info["transparency"] = 0
    image2image(client(recorder), palette)
    received = Image.open(io.BytesIO(sent_source(recorder)))
    assert received.mode == "RGBA" and received.getpixel((0, 0))[3] == 0


def test_an_http_url_is_sent_as_is() -> None:
    recorder = Recorder()
    image2image(client(recorder), "https://example.com/cat.png")
    assert json.loads(recorder.last.content)["source_url"] == "https://example.com/cat.png"


def test_a_text_mode_file_is_refused_naming_binary_mode(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    recorder = Recorder()
    with open(path, encoding="latin-1") as handle, pytest.raises(StepFunValidationError, match="'rb'"):
        image2image(client(recorder), handle)
    assert recorder.requests == []


def test_a_missing_file_is_refused_before_sending(tmp_path: Path) -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError, match="could not read the file"):
        image2image(client(recorder), tmp_path / "nope.png")
    assert recorder.requests == []


def test_an_edit_takes_a_pil_image_and_an_open_file(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    recorder = Recorder()
    sf = client(recorder)
    with open(path, "rb") as handle:
        sf.images.edit(model="step-image-edit-2", prompt="add a hat", image=handle)
    assert recorder.file_part() == ("image/png", PNG)
    sf.images.edit(model="step-image-edit-2", prompt="add a hat", image=Image.new("RGB", (32, 32)))
    content_type, data = recorder.file_part()
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).size == (32, 32)


def test_a_large_file_is_encoded_in_pieces_that_join_into_valid_base64(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20_000  # 5 MB: several pieces
    path = tmp_path / "big.png"
    path.write_bytes(data)
    inline = encode_inline(path, param="source_url")
    assert isinstance(inline, InlineImage) and len(inline.chunks) > 1
    assert inline.nbytes == len(data)
    assert base64.b64decode(inline.text().partition(",")[2], validate=True) == data


# --- sniffing real files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mode", "expected"),
    [
        ("PNG", "RGB", "png"),
        ("JPEG", "RGB", "jpeg"),
        ("WEBP", "RGB", "webp"),
        ("GIF", "P", "gif"),
        ("PNG", "RGBA", "png"),
    ],
)
def test_sniffing_reads_format_and_size_of_real_files(fmt: str, mode: str, expected: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (123, 45)).save(buffer, format=fmt)
    info = sniff(buffer.getvalue())
    assert (info.format, info.width, info.height) == (expected, 123, 45)


@pytest.mark.parametrize("lossless", [True, False])
def test_sniffing_reads_both_webp_flavours(lossless: bool) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (301, 17)).save(buffer, format="WEBP", lossless=lossless)
    assert (sniff(buffer.getvalue()).width, sniff(buffer.getvalue()).height) == (301, 17)


def test_sniffing_webp_with_alpha_uses_the_extended_header() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (77, 66), (1, 2, 3, 100)).save(buffer, format="WEBP")
    info = sniff(buffer.getvalue())
    assert (info.format, info.width, info.height) == ("webp", 77, 66)


def test_sniffing_a_jpeg_with_exif_before_the_frame_header() -> None:
    image = Image.new("RGB", (640, 480))
    exif = image.getexif()
    exif[0x010E] = "x" * 20_000  # ImageDescription: pushes the SOF marker 20 kB in
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert (sniff(buffer.getvalue()).width, sniff(buffer.getvalue()).height) == (640, 480)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
@pytest.mark.parametrize("keep", [0, 3, 7, 11, 20])
def test_truncated_headers_never_raise(fmt: str, keep: int) -> None:
    data = pil_bytes(fmt, mode="P" if fmt == "GIF" else "RGB")[:keep]
    info = sniff(data)
    assert info.width is None or info.width == 40


def test_a_png_named_file_that_is_a_jpeg_is_sniffed_as_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(pil_bytes("JPEG"))
    recorder = Recorder()
    image2image(client(recorder), path)
    assert json.loads(recorder.last.content)["source_url"].startswith("data:image/jpeg;base64,")


def lying_png(width: int, height: int) -> bytes:
    """A real PNG whose IHDR claims another size (CRC fixed up, so only the size lies)."""
    import zlib

    data = bytearray(pil_bytes("PNG", (8, 8)))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_a_header_claiming_100000_pixels_a_side_is_refused_naming_fit(tmp_path: Path) -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError) as caught:
        image2image(client(recorder), lying_png(100_000, 100_000))
    message = str(caught.value)
    assert "100000x100000" in message and "fit=True" in message and "stepfun-openai[pil]" in message
    assert recorder.requests == []


def test_fit_refuses_to_decode_a_header_claiming_100000_pixels_a_side() -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError, match="claiming 100000x100000"):
        image2image(client(recorder), lying_png(100_000, 100_000), fit=True)
    assert recorder.requests == []


def test_garbage_with_an_image_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(b"this is not an image at all, just text" * 10)
    recorder = Recorder()
    with pytest.raises(StepFunValidationError, match="unrecognised image data"):
        image2image(client(recorder), path)


# --- fit=True ----------------------------------------------------------------------------------


def test_without_fit_a_webp_source_is_refused_with_a_hint() -> None:
    with pytest.raises(StepFunValidationError) as caught:
        image2image(client(Recorder()), pil_bytes("WEBP"))
    assert "formats png, jpeg" in str(caught.value) and "fit=True" in str(caught.value)


def test_fit_converts_a_webp_source_to_jpeg_and_says_so() -> None:
    recorder = Recorder()
    with pytest.warns(ImageFitWarning, match="converted webp to jpeg"):
        image2image(client(recorder), pil_bytes("WEBP"), fit=True)
    received = Image.open(io.BytesIO(sent_source(recorder)))
    assert received.format == "JPEG" and received.size == (40, 30)


def test_fit_converts_a_transparent_gif_to_png() -> None:
    image = Image.new("P", (20, 20))
    buffer = io.BytesIO()
    image.save(buffer, format="GIF", transparency=0)
    recorder = Recorder()
    with pytest.warns(ImageFitWarning, match="converted gif to png"):
        image2image(client(recorder), buffer.getvalue(), fit=True)
    assert Image.open(io.BytesIO(sent_source(recorder))).format == "PNG"


def test_fit_scales_an_oversized_image_keeping_its_aspect_ratio() -> None:
    recorder = Recorder()
    with pytest.warns(ImageFitWarning, match="scaled 4000x1000 down to 2048x512"):
        image2image(client(recorder), pil_bytes("PNG", (4000, 1000)), fit=True)
    received = Image.open(io.BytesIO(sent_source(recorder)))
    assert received.format == "PNG" and received.size == (2048, 512)


def test_fit_set_on_the_client_applies_to_every_call_and_a_call_can_turn_it_off() -> None:
    recorder = Recorder()
    sf = client(recorder, fit=True)
    assert sf.fit and sf.with_options(timeout=5).fit
    with pytest.warns(ImageFitWarning):
        image2image(sf, pil_bytes("WEBP"))
    with pytest.raises(StepFunValidationError, match="fit=True"):
        image2image(sf, pil_bytes("WEBP"), fit=False)


def test_fit_leaves_an_image_that_fits_untouched() -> None:
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageFitWarning)
        image2image(client(recorder), PNG, fit=True)
    assert sent_source(recorder) == PNG


def test_fit_on_edits_converts_a_gif() -> None:
    recorder = Recorder()
    with pytest.warns(ImageFitWarning, match="converted gif"):
        client(recorder).images.edit(model="step-image-edit-2", prompt="x", image=pil_bytes("GIF", mode="P"), fit=True)
    content_type, data = recorder.file_part()
    assert content_type == "image/png" and Image.open(io.BytesIO(data)).format == "PNG"


def test_fit_without_pillow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    webp = pil_bytes("WEBP")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"stepfun-openai\[pil\]"):
        image2image(client(Recorder()), webp, fit=True)


# --- the 10 MB limit on source images ----------------------------------------------------------

TEN_MB = 10 * 1024 * 1024


def big_png(extra: int = TEN_MB) -> bytes:
    """A valid 64x64 PNG header and body followed by ``extra`` bytes: over 10 MB, small in pixels."""
    return pil_bytes("PNG", (64, 64)) + b"\x00" * extra


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda data: data, id="bytes"),
        pytest.param(lambda data: base64.b64encode(data).decode(), id="bare base64"),
        pytest.param(lambda data: "data:image/png;base64," + base64.b64encode(data).decode(), id="data URL"),
    ],
)
def test_a_source_over_10_mb_is_refused_before_sending(make: Any) -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError) as caught:
        image2image(client(recorder), make(big_png()))
    assert caught.value.param == "source_url"
    assert "at most 10485760 bytes (10 MB)" in str(caught.value) and "fit=True" in str(caught.value)
    assert recorder.requests == [], "nothing was sent"


def test_an_edit_image_over_10_mb_is_refused_before_sending() -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError) as caught:
        client(recorder).images.edit(model="step-image-edit-2", prompt="x", image=big_png())
    assert caught.value.param == "image" and "at most 10485760 bytes" in str(caught.value)
    assert recorder.requests == []


def test_a_source_of_exactly_10_mb_is_sent() -> None:
    recorder = Recorder()
    head = pil_bytes("PNG", (64, 64))
    image2image(client(recorder), head + b"\x00" * (TEN_MB - len(head)))
    assert len(sent_source(recorder)) == TEN_MB


def test_fit_describes_a_re_encoding_that_only_shrinks_the_bytes() -> None:
    """A >10 MB PNG (stored uncompressed) that fits in pixels and format: only re-encoded."""
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000), (10, 120, 200)).save(buffer, format="PNG", compress_level=0)
    original = buffer.getvalue()
    assert len(original) > TEN_MB
    recorder = Recorder()
    with pytest.warns(ImageFitWarning) as caught:
        image2image(client(recorder), original, fit=True)
    message = str(caught[0].message)
    sent = sent_source(recorder)
    assert f"re-encoded png: {len(original):,} -> {len(sent):,} bytes" in message, message
    assert "10 MB" in message and not message.endswith(": ")
    assert Image.open(io.BytesIO(sent)).size == (2000, 2000)


def test_the_docs_state_the_formats_the_catalog_takes_for_edits() -> None:
    from stepfun_openai import catalog

    page = (Path(__file__).resolve().parent.parent / "docs" / "reference" / "models.md").read_text(encoding="utf-8")
    formats = {
        name: spec.spec("edits").image_limits.formats  # type: ignore[union-attr]
        for name, spec in catalog.MODELS.items()
        if spec.spec("edits") is not None
    }
    assert formats and all(f == ("png", "jpeg", "webp") for f in formats.values()), formats
    for name in formats:
        section = page.split(f"### {name} on /images/edits", 1)[1].split("###", 1)[0]
        assert "| input images | png/jpeg/webp, at most 10 MB" in section, name
    client(Recorder()).images.edit(model="step-image-edit-2", prompt="x", image=pil_bytes("WEBP"))
