"""The client against recorded StepFun answers: every endpoint, both response formats, the error
bodies and the async client. Cassettes live in cassettes/test_cassettes/; cassettes/README.md
says how they were recorded and how to re-record them against the live API."""

from __future__ import annotations

import base64
from pathlib import Path

import openai
import pytest
import vcr
from vcr.errors import CannotOverwriteExistingCassetteException

from stepfun_openai import (
    AsyncStepFun,
    ContentBlockedError,
    StepFun,
    StepFunImage,
    StepFunRateLimitError,
    StyleReference,
)
from stepfun_openai._sniff import sniff

from .conftest import CASSETTE_DIR, match_stepfun_body

pytestmark = pytest.mark.vcr

SOURCE = CASSETTE_DIR / "inputs" / "cat-256.png"
"""A 256x256 PNG: the source image of image2image, edits, 垫图 and the style reference."""

SEED = 11879934
PROMPT = "一只猫在树枝上晒太阳，阳光透过树叶，卡通风格"


def png_size(image: StepFunImage) -> tuple[int | None, int | None]:
    assert image.b64_json is not None
    info = sniff(base64.b64decode(image.b64_json))
    assert info.format == "png"
    return info.width, info.height


def assert_signed_url(image: StepFunImage) -> None:
    assert image.url is not None and image.url.startswith(("http://", "https://"))
    assert "/image_gen/" in image.url
    assert "X-Tos-Expires=3600" in image.url
    assert "X-Tos-Signature=" in image.url
    assert image.b64_json is None


# --- generations -------------------------------------------------------------------------------


def test_generate_returns_a_signed_url_and_echoes_the_seed(cassette_client: StepFun) -> None:
    response = cassette_client.images.generate(
        model="step-2x-large", prompt="采菊东篱下，悠然见南山。—— 田园风格，水墨质感", size="1024x1024", seed=SEED
    )

    (image,) = response.images
    assert_signed_url(image)
    assert image.seed == SEED
    assert image.finish_reason == "success"
    assert response.id and response.created


def test_generate_b64_json_is_a_png_of_the_requested_width_by_height(cassette_client: StepFun) -> None:
    response = cassette_client.images.generate(
        model="step-2x-large", prompt=PROMPT, size="1280x800", seed=SEED, response_format="b64_json"
    )

    (image,) = response.images
    assert png_size(image) == (1280, 800)
    assert image.url is None
    assert image.seed == SEED


def test_step_image_edit_2_sizes_are_height_by_width(cassette_client: StepFun) -> None:
    response = cassette_client.images.generate(
        model="step-image-edit-2", prompt=PROMPT, size="768x1360", seed=SEED, steps=8, response_format="b64_json"
    )

    assert png_size(response.images[0]) == (1360, 768)


def test_generate_from_a_source_image_as_in_the_seed_guide(cassette_client: StepFun) -> None:
    response = cassette_client.images.generate(
        model="step-2x-large",
        prompt=PROMPT + "，猫旁边有一片花瓣",
        source_image=SOURCE,
        source_weight=0.3,
        size="512x512",
        seed=SEED,
        response_format="b64_json",
    )

    assert png_size(response.images[0]) == (512, 512)
    assert response.images[0].seed == SEED


def test_generate_with_a_style_reference(cassette_client: StepFun, emulator_only: None) -> None:
    # Only the retired step-1x-medium takes style_reference; the live service may no longer serve it.
    with pytest.warns(DeprecationWarning, match="step-1x-medium"):
        response = cassette_client.images.generate(
            model="step-1x-medium",
            prompt="a boat in the canals of venice",
            style_reference=StyleReference(SOURCE, weight=1.0),
            size="512x512",
            seed=SEED,
            response_format="b64_json",
        )

    assert png_size(response.images[0]) == (512, 512)


# --- image2image and edits ---------------------------------------------------------------------


def test_image2image_returns_a_url(cassette_client: StepFun) -> None:
    response = cassette_client.images.image2image(
        model="step-2x-large", prompt="同一只猫，油画风格", source_url=SOURCE, source_weight=0.6, seed=SEED
    )

    (image,) = response.images
    assert_signed_url(image)
    assert image.seed == SEED


def test_image2image_b64_json_is_a_png_of_the_requested_size(cassette_client: StepFun) -> None:
    response = cassette_client.images.image2image(
        model="step-2x-large",
        prompt="同一只猫，细节增强，finely detailed",
        source_url=SOURCE,
        source_weight=0.3,
        size="800x1280",
        seed=SEED,
        response_format="b64_json",
    )

    assert png_size(response.images[0]) == (800, 1280)


def test_edit_keeps_the_input_size(cassette_client: StepFun) -> None:
    response = cassette_client.images.edit(
        model="step-image-edit-2", image=SOURCE, prompt="给猫戴上一顶红色的帽子", seed=SEED, response_format="b64_json"
    )

    (image,) = response.images
    assert png_size(image) == (256, 256)
    assert image.seed == SEED


def test_edit_returns_a_url(cassette_client: StepFun) -> None:
    response = cassette_client.images.edit(
        model="step-image-edit-2", image=SOURCE, prompt="把背景换成雪地", seed=SEED, text_mode=False
    )

    assert_signed_url(response.images[0])


# --- error bodies ------------------------------------------------------------------------------


def test_server_rejects_an_invalid_size_with_input_invalid(cassette_client: StepFun) -> None:
    unchecked = cassette_client.with_options(validate=False)

    with pytest.raises(openai.BadRequestError) as caught:
        unchecked.images.generate(model="step-2x-large", prompt="测试图片", size="2000x2000", seed=SEED)

    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "input_invalid"
    assert "Request param: size is invalid" in caught.value.body["message"]
    assert "1024x1024" in caught.value.body["message"]


def test_a_wrong_key_is_a_401(cassette_client: StepFun) -> None:
    wrong = cassette_client.with_options(api_key="not-a-valid-stepfun-key")

    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.images.generate(model="step-2x-large", prompt="蓝天白云，草原骏马", seed=SEED)

    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "invalid_api_key"
    assert "not-a-valid-stepfun-key" not in str(caught.value)


def test_rate_limited_is_a_429_with_stepfuns_message(cassette_client: StepFun, emulator_only: None) -> None:
    with pytest.raises(StepFunRateLimitError) as caught:
        cassette_client.images.generate(
            model="step-2x-large", prompt="蓝天白云，草原骏马", seed=SEED, extra_headers={"X-Emulator-Fault": "429"}
        )

    assert caught.value.status_code == 429
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "rate_limited"
    assert "request limited RPM reached" in caught.value.body["message"]


def test_blocked_content_is_a_451(cassette_client: StepFun, emulator_only: None) -> None:
    with pytest.raises(ContentBlockedError) as caught:
        cassette_client.images.generate(
            model="step-2x-large", prompt="蓝天白云，草原骏马", seed=SEED, extra_headers={"X-Emulator-Fault": "451"}
        )

    assert caught.value.status_code == 451
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "censorship_blocked"
    assert caught.value.trace_id  # type: ignore[attr-defined]


# --- async -------------------------------------------------------------------------------------


async def test_async_generate_b64_json(async_cassette_client: AsyncStepFun) -> None:
    response = await async_cassette_client.images.generate(
        model="step-2x-large", prompt=PROMPT, size="768x768", seed=SEED, response_format="b64_json"
    )

    assert png_size(response.images[0]) == (768, 768)
    assert response.images[0].seed == SEED


async def test_async_image2image_url(async_cassette_client: AsyncStepFun) -> None:
    response = await async_cassette_client.images.image2image(
        model="step-2x-large", prompt="同一只猫，水彩风格", source_url=SOURCE, source_weight=0.8, seed=SEED
    )

    assert_signed_url(response.images[0])


async def test_async_edit_b64_json(async_cassette_client: AsyncStepFun) -> None:
    response = await async_cassette_client.images.edit(
        model="step-image-edit-2", image=SOURCE, prompt="让猫闭上眼睛", seed=SEED, response_format="b64_json"
    )

    assert png_size(response.images[0]) == (256, 256)


async def test_async_blocked_content_is_a_451(async_cassette_client: AsyncStepFun, emulator_only: None) -> None:
    with pytest.raises(ContentBlockedError):
        await async_cassette_client.images.generate(
            model="step-2x-large", prompt="蓝天白云", seed=SEED, extra_headers={"X-Emulator-Fault": "451"}
        )


# --- matching: a changed request does not replay -----------------------------------------------


def _replay_only(vcr_config: dict[str, object], name: str) -> vcr.cassette.CassetteContextDecorator:
    replayer = vcr.VCR(**vcr_config)
    replayer.register_matcher("stepfun_body", match_stepfun_body)
    return replayer.use_cassette(str(Path(CASSETTE_DIR, "test_cassettes", name)), record_mode="none")


# openai 3.0 wraps any transport error in APIConnectionError; newer releases let vcrpy's through.
_REFUSED = (CannotOverwriteExistingCassetteException, openai.APIConnectionError)


def _vcr_refusal(error: BaseException) -> CannotOverwriteExistingCassetteException:
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, CannotOverwriteExistingCassetteException):
        cause = cause.__cause__ or cause.__context__
    assert cause is not None, f"expected vcrpy to refuse the request, got {error!r}"
    return cause


@pytest.mark.parametrize(
    "change",
    [{"seed": SEED + 1}, {"size": "512x512"}, {"steps": 30}],
    ids=["seed", "size", "steps"],
)
def test_a_changed_parameter_does_not_replay(
    cassette_client: StepFun, vcr_config: dict[str, object], change: dict[str, object]
) -> None:
    arguments: dict[str, object] = {
        "model": "step-2x-large",
        "prompt": PROMPT,
        "size": "1280x800",
        "seed": SEED,
        "response_format": "b64_json",
    }
    cassette = "test_generate_b64_json_is_a_png_of_the_requested_width_by_height.yaml"
    with _replay_only(vcr_config, cassette):
        assert cassette_client.images.generate(**arguments).images  # type: ignore[arg-type]
    (changed,) = change
    with _replay_only(vcr_config, cassette), pytest.raises(_REFUSED) as caught:
        cassette_client.images.generate(**{**arguments, **change})  # type: ignore[arg-type]

    assert f"request bodies differ in ['{changed}']" in str(_vcr_refusal(caught.value))


def test_a_different_edit_image_does_not_replay(cassette_client: StepFun, vcr_config: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "model": "step-image-edit-2",
        "prompt": "给猫戴上一顶红色的帽子",
        "seed": SEED,
        "response_format": "b64_json",
    }
    cassette = "test_edit_keeps_the_input_size.yaml"
    with _replay_only(vcr_config, cassette):  # the same image under a fresh multipart boundary
        assert cassette_client.images.edit(image=SOURCE.read_bytes(), **arguments).images  # type: ignore[arg-type]

    changed = bytearray(SOURCE.read_bytes())
    changed[len(changed) // 2] ^= 0xFF  # same header and size, different pixels
    with _replay_only(vcr_config, cassette), pytest.raises(_REFUSED) as caught:
        cassette_client.images.edit(image=bytes(changed), **arguments)  # type: ignore[arg-type]

    assert "request bodies differ in ['image']" in str(_vcr_refusal(caught.value))
