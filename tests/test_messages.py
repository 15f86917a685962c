"""What the user reads: error advice only where it helps, warnings at their own line, the
User-Agent StepFun sees."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import warnings
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from PIL import Image

import stepfun_openai
from stepfun_openai import AsyncStepFun, ImageFitWarning, StepFun, StepFunValidationError, batch
from stepfun_openai._exceptions import VALIDATE_FALSE_HINT
from stepfun_openai.emulator import Emulator
from stepfun_openai.tools import explain_invalid

from ._mock import Recorder, tiny_png

SMALL = {"model": "step-2x-large", "size": "256x256"}


def _client(recorder: Recorder, **options: Any) -> StepFun:
    http_client = httpx2.Client(transport=recorder.transport)
    return StepFun(api_key="k", base_url="http://stepfun.test/v1", http_client=http_client, **options)


def _webp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 120, 200)).save(buffer, format="WEBP")
    return buffer.getvalue()


def _refusal(sf: StepFun, source: object, **kwargs: Any) -> StepFunValidationError:
    with pytest.raises(StepFunValidationError) as caught:
        sf.images.image2image(model="step-2x-large", prompt="a cat", source_url=source, source_weight=0.5, **kwargs)
    return caught.value


# --- validate=False: said where it applies ------------------------------------------------------


def test_a_catalog_refusal_in_python_suggests_validate_false_and_nothing_is_sent() -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError) as caught:
        _client(recorder).images.generate(model="step-2x-large", prompt="a cat", size="300x300")
    assert str(caught.value).endswith(VALIDATE_FALSE_HINT) and caught.value.skippable
    assert VALIDATE_FALSE_HINT not in caught.value.reason and recorder.requests == []


def test_an_unreadable_file_is_not_advised_validate_false(tmp_path: Path) -> None:
    """validate=False cannot make a missing file readable: the hint would mislead."""
    error = _refusal(_client(Recorder()), str(tmp_path / "no-such.png"))
    assert "validate=False" not in str(error) and not error.skippable


def test_a_corrupt_image_is_not_advised_validate_false_nor_fit() -> None:
    truncated = tiny_png(64, 64)[:20]  # a PNG signature, its header cut short
    error = _refusal(_client(Recorder()), truncated)
    assert "validate=False" not in str(error) and "fit=True" not in str(error)


def test_the_agent_tools_explanation_does_not_mention_validate_false() -> None:
    with pytest.raises(StepFunValidationError) as caught:
        _client(Recorder()).images.generate(model="step-2x-large", prompt="a cat", size="300x300")
    text = explain_invalid(caught.value)
    assert "size" in text and "validate=False" not in text


# --- fit=True: suggested only where it can fix the image ----------------------------------------


def test_a_webp_source_is_advised_fit() -> None:
    assert "pass fit=True" in str(_refusal(_client(Recorder()), _webp()))


def test_a_text_file_is_not_advised_fit(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_bytes(b"these are my notes, not an image\n" * 10)
    error = _refusal(_client(Recorder()), str(text))
    assert "unrecognised image data" in str(error) and "fit=True" not in str(error)


@pytest.mark.filterwarnings("ignore:StepFun retired:DeprecationWarning")
def test_an_image_in_extra_body_is_not_advised_fit_which_never_sees_it() -> None:
    as_string = "data:image/webp;base64," + base64.b64encode(_webp()).decode()
    with pytest.raises(StepFunValidationError) as caught:
        _client(Recorder(), fit=True).images.generate(
            model="step-1x-medium",
            prompt="a cat",
            extra_body={"style_reference": {"source_url": as_string, "weight": 1}},
        )
    assert "formats png, jpeg" in str(caught.value) and "fit=True" not in str(caught.value)


# --- a base URL without /v1 ---------------------------------------------------------------------


def test_a_404_from_a_base_url_without_v1_says_so(stepfun_emulator: Emulator) -> None:
    root = stepfun_emulator.base_url.removesuffix("/v1").rstrip("/")
    sf = StepFun(api_key=stepfun_emulator.api_key, base_url=root, max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        sf.images.generate(model="step-2x-large", prompt="a cat", size="256x256")
    assert f"base_url {root} has no /v1 path: did you mean {root}/v1?" in str(caught.value)


def test_a_404_from_a_v1_base_url_adds_nothing() -> None:
    recorder = Recorder(lambda request: httpx2.Response(404, json={"error": {"message": "no such thing"}}))
    with pytest.raises(openai.NotFoundError) as caught:
        _client(recorder, max_retries=0).images.generate(model="step-2x-large", prompt="a cat")
    assert "/v1 path" not in str(caught.value)


# --- warnings point at the caller's line --------------------------------------------------------


def _here() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_image_fit_warning_points_at_the_callers_line_sync_and_async() -> None:
    sf = _client(Recorder(), fit=True)
    with pytest.warns(ImageFitWarning) as caught:
        line = _here() + 1
        sf.images.image2image(model="step-2x-large", prompt="a", source_url=_webp(), source_weight=0.5)
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)

    recorder = Recorder()
    async_client = AsyncStepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        http_client=httpx2.AsyncClient(transport=recorder.transport),
        fit=True,
    )

    source = _webp()

    async def call() -> int:
        line = _here() + 1
        await async_client.images.image2image(model="step-2x-large", prompt="a", source_url=source, source_weight=0.5)
        return line

    with pytest.warns(ImageFitWarning) as caught:
        line = asyncio.run(call())
    assert (caught[0].filename, caught[0].lineno) == (__file__, line)


def test_batch_run_warns_about_the_users_http_client_at_the_callers_line(
    stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    sf = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url, http_client=httpx2.Client())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _here() + 1
        batch.run([{"prompt": "a cat", **SMALL}], out=tmp_path, client=sf, progress=False)
    (warning,) = [w for w in caught if "http_client" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)


# --- User-Agent ---------------------------------------------------------------------------------


def test_the_user_agent_names_this_package_and_keeps_openais() -> None:
    expected = f"stepfun-openai/{stepfun_openai.__version__} OpenAI/Python {openai.__version__}"
    recorder = Recorder()
    _client(recorder).images.generate(model="step-2x-large", prompt="a cat")
    assert recorder.last.headers["user-agent"] == expected

    async_recorder = Recorder()
    http_client = httpx2.AsyncClient(transport=async_recorder.transport)
    async_client = AsyncStepFun(api_key="k", base_url="http://stepfun.test/v1", http_client=http_client)
    asyncio.run(async_client.images.generate(model="step-2x-large", prompt="a cat"))
    assert async_recorder.last.headers["user-agent"] == expected
    assert re.fullmatch(r"stepfun-openai/\S+ OpenAI/Python \S+", expected)
