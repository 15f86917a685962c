"""What the emulator draws: real PNGs, deterministic, shaped by the seed, the prompt, the source
and the style reference, and labelled with the parameters that arrived."""

from __future__ import annotations

import base64
import io
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from stepfun_openai import catalog
from stepfun_openai.emulator import Emulator, _font, _render, read_png_metadata
from stepfun_openai.emulator._render import RenderJob, decode_rgb, render_png

from ._emulator_helpers import b64, data_url, generate, image, make_png, mean_abs_diff, mean_colour, png_of, post
from ._hostile import within


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


def test_identical_requests_give_identical_bytes(emu: Emulator) -> None:
    assert png_of(generate(emu, seed=5)) == png_of(generate(emu, seed=5))


def test_another_seed_or_prompt_gives_another_image(emu: Emulator) -> None:
    base = png_of(generate(emu, seed=5))
    assert mean_abs_diff(base, png_of(generate(emu, seed=6))) > 5
    assert mean_abs_diff(base, png_of(generate(emu, seed=5, prompt="a lighthouse at night"))) > 1


def test_seed_zero_or_omitted_picks_a_random_seed_and_echoes_it(emu: Emulator) -> None:
    seeds = set()
    for extra in ({}, {"seed": 0}):
        item = generate(emu, **extra).json()["data"][0]
        assert 1 <= item["seed"] <= catalog.SEED_MAX
        seeds.add(item["seed"])
        # asking again with the echoed seed reproduces the image
        again = png_of(generate(emu, seed=item["seed"]))
        assert read_png_metadata(again)["resolved"]["seed"] == item["seed"]  # type: ignore[index]
    assert len(seeds) == 2


def test_png_carries_what_arrived_without_image_payloads(emu: Emulator) -> None:
    source = make_png(64, 64, (1, 2, 3))
    body = {
        "model": "step-1x-medium",
        "prompt": "采菊东篱下",
        "source_image": b64(source),
        "source_weight": 0.4,
        "style_reference": {"image": b64(source), "weight": 1.5},
        "steps": 20,
    }
    png = png_of(generate(emu, **body))
    metadata = read_png_metadata(png)
    assert metadata is not None
    assert metadata["received"]["prompt"] == "采菊东篱下"
    assert metadata["received"]["steps"] == 20
    assert metadata["received"]["source_image"].startswith("sha256:")
    assert metadata["received"]["style_reference"]["image"].startswith("sha256:")
    assert metadata["resolved"]["cfg_scale"] == 7.5  # step-1x-medium's default, filled in
    assert b64(source)[:40].encode() not in png
    assert Image.open(io.BytesIO(png)).text["stepfun-emulator"]  # Pillow reads the same chunk


WEIGHTS = [0.05, 0.2, 0.4, 0.6, 0.8, 1.0]


@pytest.mark.parametrize("route", ["image2image", "generations"])
def test_smaller_source_weight_stays_closer_to_the_source(emu: Emulator, route: str) -> None:
    source = png_of(generate(emu, seed=424242, prompt="the source"))
    distances = []
    for weight in WEIGHTS:
        if route == "image2image":
            body = {"source_url": data_url(source), "source_weight": weight}
        else:  # the seed guide's source_image, bare base64
            body = {"source_image": b64(source), "source_weight": weight}
        out = png_of(post(emu, f"/v1/images/{route}", json={**_i2i_base(), **body}))
        distances.append(mean_abs_diff(out, source))
    assert distances == sorted(distances) and len(set(distances)) == len(distances), distances
    assert distances[0] < 5 < distances[-1]


def _i2i_base() -> dict[str, object]:
    return {
        "model": "step-2x-large",
        "prompt": "variation",
        "size": "256x256",
        "seed": 77,
        "response_format": "b64_json",
    }


def test_style_reference_pulls_colours_in_proportion_to_its_weight(emu: Emulator) -> None:
    red = make_png(48, 48, (255, 0, 0))

    def distance_to_red(png: bytes) -> float:
        r, g, b = mean_colour(png)
        return float(((255 - r) ** 2 + g**2 + b**2) ** 0.5)

    body = {"model": "step-1x-medium", "prompt": "a boat in the canals of venice", "seed": 3}
    plain = distance_to_red(png_of(generate(emu, **body)))
    distances = [
        distance_to_red(png_of(generate(emu, **body, style_reference={"source_url": data_url(red), "weight": w})))
        for w in (0.25, 0.5, 1.0, 1.5, 2.0)
    ]
    assert plain > distances[0]
    assert distances == sorted(distances, reverse=True) and len(set(distances)) == len(distances)


def test_jpeg_sources_matter_too(emu: Emulator) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (0, 200, 0)).save(buffer, "JPEG")
    out = png_of(
        post(
            emu,
            "/v1/images/image2image",
            json={**_i2i_base(), "source_url": data_url(buffer.getvalue(), "image/jpeg"), "source_weight": 0.05},
        )
    )
    r, g, b = mean_colour(out)
    assert g > 180 and r < 30 and b < 30


def test_edits_keep_much_of_the_input(emu: Emulator) -> None:
    source = make_png(128, 96, (250, 250, 0))
    form = {"model": "step-image-edit-2", "prompt": "add a hat", "response_format": "b64_json", "seed": "9"}
    out = png_of(post(emu, "/v1/images/edits", data=form, files={"image": ("in.png", source, "image/png")}))
    plain = png_of(generate(emu, model="step-image-edit-2", prompt="add a hat", size="1024x1024", seed=9))
    assert image(out).size == (128, 96)
    assert mean_abs_diff(out, source) < mean_abs_diff(plain, source)


def test_builtin_png_reader_undoes_every_filter_like_pillow() -> None:
    noise = random.Random(1).randbytes(40 * 30 * 3)
    picture = Image.frombytes("RGB", (40, 30), noise)
    gradient = Image.linear_gradient("L").resize((40, 30)).convert("RGBA")
    for original in (picture, gradient):
        buffer = io.BytesIO()
        original.save(buffer, "PNG", optimize=True)  # lets Pillow's encoder choose per-row filters
        decoded = decode_rgb(buffer.getvalue())
        assert decoded is not None
        width, height, bpp, raw = decoded
        rows = b"".join(raw[y * (width * bpp + 1) + 1 : (y + 1) * (width * bpp + 1)] for y in range(height))
        assert (width, height) == original.size
        assert rows == original.tobytes()
        assert decode_rgb(buffer.getvalue(), unfilter=False) is None or rows == original.tobytes()


# --- what the picture shows ------------------------------------------------------------------

INK = (250, 250, 244)


def _job(
    prompt: str = "a cat on a branch", *, width: int = 1024, height: int = 1024, seed: int = 123, **extra: Any
) -> RenderJob:
    resolved = {"prompt": prompt, "model": "step-2x-large", "steps": 50, "endpoint": "generations"}
    blank = extra.pop("blank", False)
    return RenderJob(
        width,
        height,
        seed,
        content_key=b"fixed",
        metadata={"resolved": resolved, "content_filtered": blank},
        blank=blank,
        **extra,
    )


def _texts(job: RenderJob) -> list[_render._Text]:
    card = _render._card(job)
    assert card is not None
    return _render._layout(card, job.width, job.height, _render._grid_shape(job.width, job.height)[0])[0]


def _glyphs_are_drawn(picture: Image.Image, text: _render._Text, ink: tuple[int, int, int]) -> None:
    """Each font pixel of each bitmap-font character of ``text`` is ink exactly where the font says."""
    k = text.scale
    for i, char in enumerate(_font.normalise(text.text)):
        rows, known = _font.glyph(char)
        assert known, char
        for r, bits in enumerate(rows):
            for c in range(_font.WIDTH):
                x = text.x + i * _font.ADVANCE * k + c * k + k // 2
                y = text.y + r * k + k // 2
                expected = bool(bits >> (_font.WIDTH - 1 - c) & 1)
                assert (picture.getpixel((x, y)) == ink) == expected, (char, r, c)


def test_the_card_draws_the_prompt_and_the_parameters_in_the_bitmap_font() -> None:
    job = _job("a cat on a branch")
    picture = image(render_png(job))
    texts = _texts(job)
    assert [t.text for t in texts] == ["a cat on a branch", "step-2x-large · 1024x1024 · seed 123 · 50 steps"]
    assert texts[0].scale > texts[1].scale >= 1  # the prompt is the headline
    _glyphs_are_drawn(picture, texts[0], INK)


def test_only_the_card_changes_with_the_prompt() -> None:
    cat, dog = (
        image(render_png(_job("a cat on a branch"))),
        image(render_png(_job("a dog on a sofa"))),
    )
    box = ImageChops.difference(cat, dog).getbbox()
    assert box is not None
    panel = _render._layout(_render._card(_job()), 1024, 1024, _render._grid_shape(1024, 1024)[0])[1]  # type: ignore[arg-type]
    assert panel is not None
    cell = _render._grid_shape(1024, 1024)[0]
    left, top, right, bottom = box
    assert panel[0] * cell <= left and right <= panel[2] * cell and panel[1] * cell <= top and bottom <= panel[3] * cell


def test_another_seed_gives_another_background_and_the_same_seed_the_same_bytes(emu: Emulator) -> None:
    body = {"prompt": "a cat on a branch", "size": "512x512"}
    first, again, other = (png_of(generate(emu, seed=s, **body)) for s in (5, 5, 6))
    assert first == again
    corner = (0, 0, 96, 96)  # outside the card
    assert mean_abs_diff_box(first, other, corner) > 10
    assert mean_abs_diff_box(first, png_of(generate(emu, seed=5, **{**body, "prompt": "a dog"})), corner) > 1


def mean_abs_diff_box(a: bytes, b: bytes, box: tuple[int, int, int, int]) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(image(a).crop(box), image(b).crop(box))).mean) / 3


def test_image2image_keeps_the_sources_own_pixels_more_as_source_weight_falls(emu: Emulator) -> None:
    # A checkerboard of 2-pixel squares: finer than any grid cell, so only the source's own
    # pixels can carry it through.
    board = Image.new("RGB", (256, 256))
    board.putdata([(230, 230, 230) if (x // 2 + y // 2) % 2 else (20, 20, 20) for y in range(256) for x in range(256)])
    buffer = io.BytesIO()
    board.save(buffer, "PNG")
    contrasts = []
    for weight in (0.1, 0.5, 0.9):
        out = image(
            png_of(
                post(
                    emu,
                    "/v1/images/image2image",
                    json={**_i2i_base(), "source_url": data_url(buffer.getvalue()), "source_weight": weight},
                )
            )
        )
        top = out.crop((0, 0, 256, 64))  # above the caption
        light = ImageStat.Stat(top.crop((2, 0, 4, 2))).mean[0]
        dark = ImageStat.Stat(top.crop((0, 0, 2, 2))).mean[0]
        contrasts.append(light - dark)
    assert contrasts[0] > 180 and contrasts == sorted(contrasts, reverse=True) and contrasts[-1] > 10, contrasts


def test_image2image_and_edits_are_captioned_over_the_source(emu: Emulator) -> None:
    source = make_png(256, 256, (40, 90, 160))
    out = png_of(
        post(emu, "/v1/images/image2image", json={**_i2i_base(), "source_url": data_url(source), "source_weight": 0.3})
    )
    job = RenderJob(256, 256, 77, b"", read_png_metadata(out) or {}, source=source, source_weight=0.3)
    texts = _texts(job)
    assert texts[0].text == "variation" and texts[-1].text.startswith("seed 77 · source_weight 0.3")
    assert texts[0].y > 256 // 2  # a caption at the foot, not a card over the middle
    _glyphs_are_drawn(image(out), texts[0], INK)
    form = {"model": "step-image-edit-2", "prompt": "add a hat", "response_format": "b64_json", "seed": "9"}
    edit = png_of(post(emu, "/v1/images/edits", data=form, files={"image": ("in.png", source, "image/png")}))
    texts = _texts(RenderJob(256, 256, 9, b"", read_png_metadata(edit) or {}, source=source))
    assert texts[0].text == "add a hat" and " · edit · " in texts[-1].text
    _glyphs_are_drawn(image(edit), texts[0], INK)


def test_a_content_filtered_image_is_grey_framed_and_labelled() -> None:
    job = _job("a forbidden fruit", blank=True)
    picture = image(render_png(job))
    texts = _texts(job)
    assert texts[0].text == "CONTENT FILTERED" and "a forbidden fruit" not in " ".join(t.text for t in texts)
    _glyphs_are_drawn(picture, texts[0], tuple(_render._FILTERED_INK))  # type: ignore[arg-type]
    assert picture.getpixel((512, 100)) == (128, 128, 128)  # grey, not a picture
    assert picture.getpixel((2, 512)) == picture.getpixel((512, 2)) == (88, 88, 88)  # the frame


def test_the_emulator_marks_filtered_images() -> None:
    with Emulator(filter_words=["forbidden"]) as emulator:
        item = generate(emulator, prompt="a forbidden fruit", seed=3).json()["data"][0]
    assert item["finish_reason"] == "content_filtered"
    picture = image(base64.b64decode(item["b64_json"]))
    dark = sum(1 for value in picture.convert("L").tobytes() if value < 60)
    assert dark > 500  # the label's ink, on an otherwise mid-grey image


@pytest.fixture
def no_system_fonts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    _render._forget_fonts()
    monkeypatch.setattr(_render, "_FONT_DIRS", ())  # no font directory to search
    yield
    _render._forget_fonts()


@pytest.mark.usefixtures("no_system_fonts")
def test_characters_the_font_lacks_are_drawn_as_distinct_boxes() -> None:
    first, second = render_png(_job("采菊东篱下 🐱")), render_png(_job("悠然见南山 🐶"))
    assert first != second  # the box shows the code point's low bits
    texts = _texts(_job("采菊东篱下 🐱"))
    assert texts[0].text == "采菊东篱下 🐱"
    rows, known = _font.glyph("采")
    assert not known and rows[2] == rows[8] == 0b11111  # a box: closed at the top and bottom


def test_non_latin_emoji_and_invisible_characters_render() -> None:
    for prompt in ("采菊东篱下，悠然见南山", "кошка на ветке 🐱", "\u200b\u0301\ufeff", "🏳️‍🌈" * 40):
        picture = image(render_png(_job(prompt, width=512, height=512)))
        assert picture.size == (512, 512)


def test_the_default_path_needs_no_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    source = render_png(_job("the source", width=256, height=256, seed=1))
    jobs = [
        _job("Café crème à Paris, ¿qué?", width=256, height=256),
        _job("variation", width=256, height=256, source=source, source_weight=0.4),
        _job("采菊东篱下", width=256, height=256),
    ]
    _render._forget_fonts()
    with_pillow = [render_png(job) for job in jobs[:2]]
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now fails
    _render._forget_fonts()
    try:
        without = [render_png(job) for job in jobs]
    finally:
        _render._forget_fonts()
    assert without[:2] == with_pillow  # Latin-1 text and a same-size PNG source: Pillow is not used
    assert image(without[2]).size == (256, 256)


def test_a_long_prompt_is_wrapped_and_cut_inside_the_image() -> None:
    prompt = " ".join(["a watercolour harbour at dawn with boats"] * 30)[:1024]
    for width, height, cut in ((256, 256, True), (64, 64, True), (1024, 1024, False)):
        job = _job(prompt, width=width, height=height)
        texts = _texts(job)
        assert len(texts) > 1, (width, height)
        for text in texts:
            assert 0 <= text.x and text.x + _render._width(text.text, text.scale) <= width
            assert 0 <= text.y and text.y + _font.HEIGHT * text.scale <= height
        drawn = " ".join(t.text for t in texts).split(" step")[0]  # the prompt's lines
        assert drawn.endswith("...") == cut and (drawn == prompt) != cut, drawn
        assert image(render_png(job)).size == (width, height)
    assert _texts(_job(prompt))[0].scale >= 2  # a 1024-character prompt stays readable at 1024x1024


def test_one_long_word_is_broken_across_lines() -> None:
    texts = _texts(_job("x" * 300, width=256, height=256))
    assert len(texts) > 3 and all(_render._width(t.text, t.scale) <= 256 for t in texts)


@pytest.mark.parametrize(
    "size",
    [(256, 256), (512, 512), (64, 64), (64, 192), (192, 64), (1360, 768), (800, 1280), (4096, 1366), (1366, 4096)],
)
def test_small_and_extreme_sizes_render_with_their_text_inside(size: tuple[int, int]) -> None:
    width, height = size
    for job in (_job(width=width, height=height), _job(width=width, height=height, blank=True)):
        picture = image(render_png(job))
        assert picture.size == size
        texts = _texts(job)
        assert texts and all(
            t.x + _render._width(t.text, t.scale) <= width and t.y + _font.HEIGHT * t.scale <= height for t in texts
        )


def test_an_edit_of_the_smallest_and_most_elongated_input_keeps_its_size(emu: Emulator) -> None:
    for size in ((64, 192), (192, 64), (64, 64)):
        source = make_png(*size, (30, 120, 200))
        form = {"model": "step-image-edit-2", "prompt": "make it taller", "response_format": "b64_json", "seed": "4"}
        out = png_of(post(emu, "/v1/images/edits", data=form, files={"image": ("in.png", source, "image/png")}))
        assert image(out).size == size


def test_an_installed_font_draws_what_the_bitmap_font_lacks() -> None:
    _render._forget_fonts()
    path = _render._system_font_for("к")
    if path is None:
        pytest.skip("no installed font with Cyrillic, or no Pillow")  # the boxes are tested above
    runs, _, step = _render._glyph_runs("к", 4)
    box, _, _ = _render._glyph_runs("\U0010fffd", 4)
    assert step == 1 and runs != box and any(runs)  # drawn at the output's resolution, not a box
    job = _job("кошка на ветке", width=512, height=512)
    assert render_png(job) == render_png(job)


def test_a_prompt_of_a_thousand_distinct_unknown_characters_is_bounded() -> None:
    prompt = "".join(chr(0x4E00 + 7 * i) for i in range(1024))  # the longest prompt StepFun takes
    _render._forget_fonts()
    picture = within(20, lambda: render_png(_job(prompt)))
    assert image(picture).size == (1024, 1024)
