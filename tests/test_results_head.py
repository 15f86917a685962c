"""Showing and naming an inline image reads only its first base64 characters, never the whole."""

from __future__ import annotations

from stepfun_openai import StepFunImage
from stepfun_openai._results import default_filename

from ._mock import PNG_B64


def a_large_inline_png() -> StepFunImage:
    # Only the head is a real PNG: decoding the whole would fail, so these helpers must not.
    image = StepFunImage(b64_json=PNG_B64[:88] + "A" * 4_000_000 + "@@@@", seed=7)
    image._context = {"prompt": "a cat"}
    return image


def test_the_summary_and_the_notebook_view_sniff_the_head_only() -> None:
    image = a_large_inline_png()
    assert image._summary() == "<StepFunImage 8x8 png, seed 7, b64_json 4.0 MB>"
    assert list(image._repr_mimebundle_()) == ["image/png", "text/plain"]
    assert image._data is None


def test_the_default_file_name_comes_from_the_head() -> None:
    image = a_large_inline_png()
    assert default_filename(image) == "a-cat-7.png"
    assert image._data is None


def test_unreadable_base64_shows_as_an_unknown_image() -> None:
    image = StepFunImage(b64_json="@@@@" * 30, seed=1)
    assert image._summary() == "<StepFunImage seed 1, b64_json 120 B>"
    assert default_filename(image) == "image-1.png"
