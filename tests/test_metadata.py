"""Provenance: saved PNGs remember the request, and the request makes the same image again."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import httpx2
import pytest
from PIL import Image

from stepfun_openai import ImageMetadata, StepFun, StyleReference, _validation, read_metadata, regenerate_kwargs
from stepfun_openai._metadata import METADATA_KEYWORD, embed_png_metadata, png_text_chunks

from ._mock import Recorder, tiny_png


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(kind, data) of every chunk, checking each CRC."""
    found, pos = [], 8
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"bad CRC on {kind!r}"
        found.append((kind, data))
        pos += 12 + length
    return found


def test_generate_save_read_regenerate_gives_the_same_image(stepfun_client: StepFun, tmp_path: Path) -> None:
    response = stepfun_client.images.generate(
        model="step-image-edit-2",
        prompt="a lighthouse at dusk, 灯塔",
        negative_prompt="blurry",
        size="1024x1024",
        steps=6,
        cfg_scale=2.5,
        text_mode=True,
    )
    original = response.images[0]
    path = original.save(tmp_path)

    meta = read_metadata(path)
    assert meta is not None
    assert meta.endpoint == "generations" and meta.method == "generate"
    assert meta["model"] == "step-image-edit-2" and meta["prompt"] == "a lighthouse at dusk, 灯塔"
    assert meta["negative_prompt"] == "blurry" and meta["steps"] == 6 and meta["cfg_scale"] == 2.5
    assert meta["size"] == "1024x1024" and meta["text_mode"] is True
    assert meta["seed"] == original.seed, "the seed the server used"
    assert meta["trace_id"] == response.trace_id and meta["created"] == response.created

    again = stepfun_client.images.generate(**meta.to_kwargs()).images[0]
    assert again.read() == original.read()
    assert regenerate_kwargs(meta) == meta.to_kwargs()


def test_the_text_chunk_sits_after_ihdr_and_the_pixels_are_untouched(stepfun_client: StepFun, tmp_path: Path) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="dunes", size="256x256").images[0]
    saved = image.save(tmp_path / "dunes.png").read_bytes()
    served = image.read()
    kinds = [kind for kind, _ in chunks(saved)]
    assert kinds[:2] == [b"IHDR", b"iTXt"]
    ours = [data for kind, data in chunks(saved) if data.startswith(METADATA_KEYWORD.encode() + b"\0")]
    assert len(ours) == 1
    assert [c for c in chunks(saved) if c[1] not in ours] == chunks(served), "every other chunk byte for byte"
    with Image.open(tmp_path / "dunes.png") as picture:  # Pillow reads it, and the text too
        assert picture.size == (256, 256)
        assert '"prompt":"dunes"' in picture.text[METADATA_KEYWORD]


def test_embedding_twice_replaces_the_old_chunk() -> None:
    once = embed_png_metadata(tiny_png(), {"prompt": "one"})
    twice = embed_png_metadata(once, {"prompt": "two"})
    assert png_text_chunks(twice)[METADATA_KEYWORD].endswith('"prompt":"two"}')
    assert len(twice) - len(once) == 0, "same length: one chunk swapped for another"


def test_embedding_refuses_what_is_not_a_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        embed_png_metadata(b"\xff\xd8\xff\xe0 a jpeg", {"prompt": "x"})


def test_save_without_metadata_writes_the_served_bytes(stepfun_client: StepFun, tmp_path: Path) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="bare", size="256x256").images[0]
    path = image.save(tmp_path / "bare.png", metadata=False)
    assert path.read_bytes() == image.read()
    assert read_metadata(path) is None


def test_image2image_metadata_asks_for_the_source_again(stepfun_client: StepFun, tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(tiny_png(64, 64))
    original = stepfun_client.images.image2image(
        model="step-2x-large", prompt="watercolour", source_url=source, source_weight=0.4, size="256x256"
    ).images[0]
    meta = read_metadata(original.save(tmp_path / "out.png"))
    assert meta is not None and meta.method == "image2image" and meta.needs_source
    assert meta["source_url"].startswith("<inline image"), "the payload itself is never stored"
    with pytest.raises(ValueError, match=r"to_kwargs\(source=") as caught:
        meta.to_kwargs()
    assert "source_url" in str(caught.value)
    again = stepfun_client.images.image2image(**meta.to_kwargs(source=source)).images[0]
    assert again.read() == original.read()


def test_edit_metadata_restores_numbers_sent_as_form_fields(stepfun_client: StepFun, tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(tiny_png(64, 64))
    original = stepfun_client.images.edit(
        model="step-image-edit-2", prompt="add a moon", image=source, steps=5, cfg_scale=1.5, text_mode=False
    ).images[0]
    meta = read_metadata(original.save(tmp_path / "edited.png"))
    assert meta is not None and meta.method == "edit" and meta.source_param == "image"
    kwargs = meta.to_kwargs(source=source)
    assert kwargs["steps"] == 5 and kwargs["cfg_scale"] == 1.5 and kwargs["text_mode"] is False
    assert stepfun_client.images.edit(**kwargs).images[0].read() == original.read()


def test_an_inline_style_reference_must_be_given_again() -> None:
    meta = ImageMetadata(
        {
            "endpoint": "generations",
            "model": "step-1x-medium",
            "prompt": "a boat",
            "seed": 3,
            "style_reference": {"source_url": "<inline image, 100 base64 chars>", "weight": 1.2},
        }
    )
    with pytest.raises(ValueError, match="style_reference="):
        meta.to_kwargs()
    kwargs = meta.to_kwargs(style_reference=b"png bytes")
    assert kwargs["style_reference"] == StyleReference(image=b"png bytes", weight=1.2)


def test_a_url_source_is_kept_and_needs_nothing_more() -> None:
    meta = ImageMetadata({"endpoint": "image2image", "model": "m", "prompt": "p", "source_url": "https://x/a.png"})
    assert not meta.needs_source and meta.to_kwargs()["source_url"] == "https://x/a.png"


def test_an_image_without_our_metadata_reads_as_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    path.write_bytes(tiny_png())
    assert read_metadata(path) is None
    jpeg = tmp_path / "plain.jpg"
    Image.new("RGB", (4, 4)).save(jpeg)
    assert read_metadata(jpeg) is None


def test_edit_metadata_stores_numbers_and_booleans_typed(stepfun_client: StepFun, tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(tiny_png(64, 64))
    image = stepfun_client.images.edit(
        model="step-image-edit-2", prompt="add a moon", image=source, steps=5, cfg_scale=1.5, text_mode=False
    ).images[0]
    path = image.save(tmp_path / "edited.png")
    meta = read_metadata(path)
    assert meta is not None
    assert meta["steps"] == 5 and type(meta["steps"]) is int
    assert meta["text_mode"] is False and meta["cfg_scale"] == 1.5
    stored = png_text_chunks(path.read_bytes())[METADATA_KEYWORD]
    assert '"steps":5' in stored and '"text_mode":false' in stored and '"5"' not in stored


PRESIGNED = (
    "https://bucket.tos.example/src.png?X-Tos-Algorithm=TOS4-HMAC-SHA256"
    "&X-Tos-Credential=AKLTsecretcredential%2F20260101%2Fcn%2Ftos%2Frequest"
    "&X-Tos-Date=20260101T000000Z&X-Tos-Expires=3600&X-Tos-SignedHeaders=host"
    "&X-Tos-Signature=0123456789abcdef0123456789abcdef&X-Amz-Security-Token=sessiontoken&size=large"
)


def test_a_presigned_source_url_is_stored_without_its_signature(tmp_path: Path) -> None:
    recorder = Recorder()
    client = StepFun(
        api_key="k", base_url="http://stepfun.test/v1", http_client=httpx2.Client(transport=recorder.transport)
    )
    image = client.images.image2image(
        model="step-2x-large", prompt="watercolour", source_url=PRESIGNED, source_weight=0.5
    )
    assert recorder.last_json()["source_url"] == PRESIGNED, "the request itself carries the real URL"
    stored = png_text_chunks(image.images[0].save(tmp_path / "out.png").read_bytes())[METADATA_KEYWORD]
    for secret in ("secretcredential", "0123456789abcdef", "sessiontoken"):
        assert secret not in stored
        assert secret not in str(image.images[0].metadata.params)
    source = read_metadata(tmp_path / "out.png")["source_url"]  # type: ignore[index]
    assert source.startswith("https://bucket.tos.example/src.png?X-Tos-Algorithm=TOS4-HMAC-SHA256")
    assert "X-Tos-Signature=REDACTED" in source and "X-Tos-Credential=REDACTED" in source
    assert "X-Tos-Expires=3600" in source and source.endswith("&size=large")


def test_a_presigned_style_reference_url_is_stored_without_its_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_validation, "_warned_models", set())  # the once-per-process warning stays for others
    recorder = Recorder()
    client = StepFun(
        api_key="k", base_url="http://stepfun.test/v1", http_client=httpx2.Client(transport=recorder.transport)
    )
    with pytest.warns(DeprecationWarning, match="step-1x-medium"):
        response = client.images.generate(
            model="step-1x-medium", prompt="a boat", style_reference=StyleReference(image=PRESIGNED, weight=1.0)
        )
    style = response.images[0].metadata["style_reference"]
    assert "REDACTED" in style["source_url"] and "0123456789abcdef" not in style["source_url"]
