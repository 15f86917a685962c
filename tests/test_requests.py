"""What goes on the wire for each typed parameter, what comes back, and what is refused locally."""

from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from stepfun_openai import (
    AsyncStepFun,
    ContentBlockedError,
    InsufficientBalanceError,
    MalformedResponseError,
    QuotaExceededError,
    StepFun,
    StepFunImage,
    StepFunImagesResponse,
    StepFunRateLimitError,
    StepFunValidationError,
    StyleReference,
    catalog,
    get_trace_id,
)

from ._mock import PNG_B64, Recorder, error_response, tiny_png

DATA_URL = f"data:image/png;base64,{PNG_B64}"


@pytest.fixture(autouse=True)
def _quiet_retired_model_warning() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def sync_client(recorder: Recorder, **kwargs: Any) -> StepFun:
    return StepFun(
        api_key="sk-test",
        base_url="https://api.stepfun.com/v1",
        http_client=httpx2.Client(transport=recorder.transport),
        **kwargs,
    )


def async_client(recorder: Recorder, **kwargs: Any) -> AsyncStepFun:
    return AsyncStepFun(
        api_key="sk-test",
        base_url="https://api.stepfun.com/v1",
        http_client=httpx2.AsyncClient(transport=recorder.transport),
        **kwargs,
    )


async def call(
    mode: str, recorder: Recorder, method: str, client_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    """Run ``client.images.<method>(**kwargs)`` on the sync or the async client."""
    if mode == "sync":
        return getattr(sync_client(recorder, **(client_kwargs or {})).images, method)(**kwargs)
    return await getattr(async_client(recorder, **(client_kwargs or {})).images, method)(**kwargs)


MODES = ["sync", "async"]


# --- every typed parameter reaches the request --------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_generate_sends_every_typed_parameter(mode: str) -> None:
    recorder = Recorder()
    await call(
        mode,
        recorder,
        "generate",
        model="step-image-edit-2",
        prompt="a poster that says HELLO",
        size="768x1360",
        n=1,
        response_format="b64_json",
        seed=123,
        steps=8,
        cfg_scale=4.5,
        negative_prompt="blurry",
        text_mode=True,
    )
    assert recorder.last.method == "POST"
    assert recorder.last.url.path == "/v1/images/generations"
    assert recorder.last_json() == {
        "model": "step-image-edit-2",
        "prompt": "a poster that says HELLO",
        "size": "768x1360",
        "n": 1,
        "response_format": "b64_json",
        "seed": 123,
        "steps": 8,
        "cfg_scale": 4.5,
        "negative_prompt": "blurry",
        "text_mode": True,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_generate_sends_style_reference_and_source_image(mode: str) -> None:
    recorder = Recorder()
    await call(
        mode,
        recorder,
        "generate",
        model="step-1x-medium",
        prompt="a boat in venice",
        seed=5,
        style_reference=StyleReference(image=tiny_png(), weight=1.3),
        source_image=tiny_png(),
        source_weight=0.4,
    )
    sent = recorder.last_json()
    assert sent["style_reference"] == {"source_url": DATA_URL, "weight": 1.3}
    assert sent["source_image"] == PNG_B64, "source_image goes as bare base64, like the seed guide"
    assert sent["source_weight"] == 0.4


@pytest.mark.parametrize("mode", MODES)
async def test_image2image_sends_every_typed_parameter(mode: str, tmp_path: Path) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(tiny_png(16, 16))
    recorder = Recorder()
    await call(
        mode,
        recorder,
        "image2image",
        model="step-2x-large",
        prompt="in Ghibli style",
        source_url=source,
        source_weight=0.5,
        size="1280x800",
        n=1,
        response_format="url",
        seed=945758,
        steps=60,
        cfg_scale=6,
    )
    assert recorder.last.url.path == "/v1/images/image2image"
    assert recorder.last_json() == {
        "model": "step-2x-large",
        "prompt": "in Ghibli style",
        "source_url": "data:image/png;base64," + base64.b64encode(tiny_png(16, 16)).decode(),
        "source_weight": 0.5,
        "size": "1280x800",
        "n": 1,
        "response_format": "url",
        "seed": 945758,
        "steps": 60,
        "cfg_scale": 6,
    }


@pytest.mark.parametrize("mode", MODES)
async def test_edit_sends_multipart_fields_as_strings(mode: str) -> None:
    recorder = Recorder()
    await call(
        mode,
        recorder,
        "edit",
        model="step-image-edit-2",
        image=io.BytesIO(tiny_png(32, 32)),
        prompt="make it night",
        size="1024x1024",
        response_format="b64_json",
        seed=9,
        steps=12,
        cfg_scale=2.0,
        negative_prompt="daylight",
        text_mode=False,
    )
    assert recorder.last.url.path == "/v1/images/edits"
    assert recorder.last.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert recorder.last_form() == {
        "image": "<file>",
        "prompt": "make it night",
        "model": "step-image-edit-2",
        "size": "1024x1024",
        "response_format": "b64_json",
        "seed": "9",
        "steps": "12",
        "cfg_scale": "2.0",
        "negative_prompt": "daylight",
        "text_mode": "false",
    }
    content_type, data = recorder.file_part("image")
    assert content_type == "image/png" and data == tiny_png(32, 32)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("path-str", "PATH"),
        ("path", "PATHOBJ"),
        ("bytes", tiny_png()),
        ("file", "FILE"),
        ("data-url", DATA_URL),
        ("base64", PNG_B64),
        ("url", "https://example.com/cat.png"),
    ],
)
def test_image_inputs_of_every_kind(kind: str, value: Any, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    path.write_bytes(tiny_png())
    value = (
        {"PATH": str(path), "PATHOBJ": path, "FILE": path.open("rb")}.get(value, value)
        if isinstance(value, str)
        else value
    )
    recorder = Recorder()
    sync_client(recorder).images.image2image(
        model="step-2x-large", prompt="p", source_url=value, source_weight=0.5, seed=1
    )
    expected = "https://example.com/cat.png" if kind == "url" else DATA_URL
    assert recorder.last_json()["source_url"] == expected


def test_parameters_not_given_are_not_sent() -> None:
    recorder = Recorder()
    sync_client(recorder, stable_seed=False).images.generate(model="step-2x-large", prompt="a cat")
    assert recorder.last_json() == {"model": "step-2x-large", "prompt": "a cat"}


# --- extra_body ---------------------------------------------------------------------------------


def test_extra_body_is_deep_merged_and_wins_on_conflicts() -> None:
    recorder = Recorder()
    sync_client(recorder).images.generate(
        model="step-1x-medium",
        prompt="p",
        steps=20,
        seed=3,
        style_reference={"image": tiny_png(), "weight": 0.8},
        extra_body={"style_reference": {"weight": 1.2}, "steps": 30, "custom_flag": True},
    )
    sent = recorder.last_json()
    assert sent["style_reference"] == {"source_url": DATA_URL, "weight": 1.2}, "the typed image survives"
    assert sent["steps"] == 30, "extra_body wins on a conflicting leaf"
    assert sent["custom_flag"] is True


def test_extra_body_values_are_validated_too() -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError, match="steps"):
        sync_client(recorder).images.generate(model="step-2x-large", prompt="p", extra_body={"steps": 500})
    assert recorder.requests == []


# --- local validation: one failing and one passing value per rule -------------------------------

GEN = {"model": "step-2x-large", "prompt": "a cat", "seed": 1}
GEN_EDIT2 = {"model": "step-image-edit-2", "prompt": "a cat", "seed": 1}
GEN_1X = {"model": "step-1x-medium", "prompt": "a cat", "seed": 1}
I2I = {"model": "step-2x-large", "prompt": "a cat", "seed": 1, "source_url": tiny_png(), "source_weight": 0.5}
EDIT = {"model": "step-image-edit-2", "prompt": "night", "seed": 1, "image": tiny_png(64, 64)}
EDIT_1X = {"model": "step-1x-edit", "prompt": "night", "seed": 1, "image": tiny_png(64, 64)}

RULES: list[tuple[str, str, dict[str, Any], str, Any, Any]] = [
    # (rule id, method, base kwargs, parameter, bad value, good value)
    ("model-unknown", "generate", GEN, "model", "dall-e-3", "step-2x-large"),
    ("model-endpoint", "image2image", I2I, "model", "step-image-edit-2", "step-1x-medium"),
    ("edit-model", "edit", EDIT, "model", "step-2x-large", "step-1x-edit"),
    ("prompt-empty", "generate", GEN, "prompt", "", "x"),
    ("prompt-blank", "generate", GEN, "prompt", "   ", "x"),
    ("prompt-512", "generate", GEN, "prompt", "x" * 513, "x" * 512),
    ("prompt-1024-i2i", "image2image", I2I, "prompt", "x" * 1025, "x" * 1024),
    ("size-wxh", "generate", GEN, "size", "2000x2000", "800x1280"),
    ("size-hxw", "generate", GEN_EDIT2, "size", "800x1280", "768x1360"),
    ("size-i2i", "image2image", I2I, "size", "1024x768", "1280x800"),
    ("size-1x-edit", "edit", EDIT_1X, "size", "1024x768", "768x768"),
    ("n", "generate", GEN, "n", 11, 1),  # up to 10: n requests at once (fan_out=False refuses n > 1)
    ("response_format", "generate", GEN, "response_format", "png", "b64_json"),
    ("seed-range", "generate", GEN, "seed", 2147483648, 2147483647),
    ("seed-type", "generate", GEN, "seed", 1.5, 7),
    ("steps-50", "generate", GEN, "steps", 51, 50),
    ("steps-100-i2i", "image2image", I2I, "steps", 101, 100),
    ("steps-int", "generate", GEN, "steps", 10.5, 10),
    ("cfg_scale", "generate", GEN, "cfg_scale", 10.5, 10.0),
    ("cfg_scale-low", "generate", GEN_EDIT2, "cfg_scale", 0.5, 1.0),
    ("negative_prompt-model", "generate", GEN, "negative_prompt", "blur", None),
    ("negative_prompt-len", "generate", GEN_EDIT2, "negative_prompt", "x" * 513, "x" * 512),
    ("text_mode-model", "generate", GEN, "text_mode", True, None),
    ("style_reference-model", "generate", GEN, "style_reference", StyleReference(tiny_png(), 1.0), None),
    (
        "style_reference-weight",
        "generate",
        GEN_1X,
        "style_reference",
        StyleReference(tiny_png(), 2.5),
        StyleReference(tiny_png(), 2.0),
    ),
    ("source_image-model", "generate", GEN_EDIT2, "source_image", tiny_png(), None),
    ("source_weight-zero", "image2image", I2I, "source_weight", 0.0, 1.0),
    ("source_weight-high", "image2image", I2I, "source_weight", 1.01, 0.01),
    ("source-format", "image2image", I2I, "source_url", b"GIF89a" + b"\x10\x00\x10\x00" + b"\x00" * 40, tiny_png()),
    ("source-pixels", "image2image", I2I, "source_url", tiny_png(2049, 1), tiny_png(2048, 1)),
    ("edit-pixels", "edit", EDIT, "image", tiny_png(4097, 1), tiny_png(4096, 1)),
    ("edit-truncated", "edit", EDIT, "image", tiny_png(64, 64)[:20], tiny_png(64, 64)),
    ("source-truncated", "image2image", I2I, "source_url", tiny_png()[:20], tiny_png()),
    ("edit-1x-min-side", "edit", EDIT_1X, "image", tiny_png(63, 63), tiny_png(64, 64)),
    ("edit-1x-aspect", "edit", EDIT_1X, "image", tiny_png(64, 193), tiny_png(64, 192)),
]


@pytest.mark.parametrize(("rule", "method", "base", "param", "bad", "good"), RULES, ids=[r[0] for r in RULES])
def test_validation_rule(rule: str, method: str, base: dict[str, Any], param: str, bad: Any, good: Any) -> None:
    recorder = Recorder()
    images = sync_client(recorder).images
    with pytest.raises(StepFunValidationError) as excinfo:
        getattr(images, method)(**{**base, param: bad})
    error = excinfo.value
    assert error.param.split(".")[0] == param
    assert param in str(error)
    assert isinstance(error, ValueError)
    assert recorder.requests == [], "an invalid request is never sent"
    good_kwargs = {**base, param: good} if good is not None else {k: v for k, v in base.items() if k != param}
    getattr(images, method)(**good_kwargs)
    assert len(recorder.requests) == 1


def test_size_error_lists_the_valid_sizes_and_model() -> None:
    with pytest.raises(StepFunValidationError) as excinfo:
        sync_client(Recorder()).images.generate(model="step-2x-large", prompt="p", size="2000x2000")
    message = str(excinfo.value)
    for size in catalog.WXH_SIZES:
        assert size in message
    assert "'2000x2000'" in message and "step-2x-large" in message and "validate=False" in message


def test_oversized_source_mentions_fit_and_pil_extra() -> None:
    with pytest.raises(StepFunValidationError) as excinfo:
        sync_client(Recorder()).images.image2image(**{**I2I, "source_url": tiny_png(3000, 10)})
    assert "fit=True" in str(excinfo.value) and "[pil]" in str(excinfo.value)


def test_validate_false_sends_what_the_catalog_would_refuse() -> None:
    recorder = Recorder()
    sync_client(recorder, validate=False).images.generate(model="step-9x-future", prompt="p", size="2000x2000", seed=1)
    assert recorder.last_json()["size"] == "2000x2000"


def test_retired_model_warns_once_and_still_sends() -> None:
    from stepfun_openai import _validation

    _validation._warned_models.discard("step-1x-medium")
    recorder = Recorder()
    images = sync_client(recorder).images
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images.generate(model="step-1x-medium", prompt="p", seed=1)
        images.generate(model="step-1x-medium", prompt="p", seed=1)
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1 and "step-2x-large" in str(deprecations[0].message)
    assert len(recorder.requests) == 2


def test_stable_seed_is_picked_when_none_given() -> None:
    recorder = Recorder()
    sync_client(recorder).images.generate(model="step-2x-large", prompt="p", seed=0)
    seed = recorder.last_json()["seed"]
    assert 1 <= seed <= catalog.SEED_MAX


# --- responses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_response_is_typed_with_seed_finish_reason_and_trace_id(mode: str) -> None:
    response = await call(mode, Recorder(), "generate", model="step-2x-large", prompt="p", seed=42)
    assert isinstance(response, StepFunImagesResponse)
    image = response.data[0]
    assert isinstance(image, StepFunImage)
    assert image.seed == 42 and image.finish_reason == "success" and not image.content_filtered
    assert image.b64_json == PNG_B64
    assert response.id == "abc.def" and response.created == 1723595647
    assert response.trace_id == "t-1"


def test_legacy_image_field_reads_as_b64_json_and_id_created_are_optional() -> None:
    recorder = Recorder(
        lambda r: httpx2.Response(200, json={"data": [{"image": PNG_B64, "seed": 1, "finish_reason": "success"}]})
    )
    response = sync_client(recorder).images.generate(model="step-2x-large", prompt="p", seed=1)
    assert response.data[0].b64_json == PNG_B64
    assert response.id is None and response.created is None


@pytest.mark.parametrize("mode", MODES)
async def test_with_raw_response_for_image2image_and_edit(mode: str) -> None:
    recorder = Recorder()
    if mode == "sync":
        images = sync_client(recorder).images
        raw = images.with_raw_response.image2image(**I2I)
        raw_edit = images.with_raw_response.edit(**EDIT)
    else:
        async_images = async_client(recorder).images
        raw = await async_images.with_raw_response.image2image(**I2I)
        raw_edit = await async_images.with_raw_response.edit(**EDIT)
    assert raw.headers["x-trace-id"] == "t-1" and get_trace_id(raw) == "t-1"
    assert raw.parse().data[0].seed == 42
    assert raw_edit.http_request.url.path.endswith("/images/edits")


# --- errors --------------------------------------------------------------------------------------

ERRORS = [
    (
        400,
        "Request param: size is invalid, recommended val is: must be 256x256",
        "input_invalid",
        openai.BadRequestError,
    ),
    (401, "Incorrect API key provided", "invalid_api_key", openai.AuthenticationError),
    (402, "balance too low", "insufficient_balance", InsufficientBalanceError),
    (
        429,
        "request limited RPM reached, current: 11, limit: 10. Please top up at https://platform.stepfun.com/top-up.",
        "rate_limited",
        StepFunRateLimitError,
    ),
    (429, "insufficient balance, please top up", "quota_exceeded", QuotaExceededError),
    (451, "The content you provided or machine outputted is blocked.", "censorship_blocked", ContentBlockedError),
    (500, "internal error", "server_error", openai.InternalServerError),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("status", "message", "error_type", "exc_type"), ERRORS, ids=[f"{e[0]}-{e[2]}" for e in ERRORS]
)
async def test_error_mapping(mode: str, status: int, message: str, error_type: str, exc_type: type[Exception]) -> None:
    recorder = Recorder(lambda r: error_response(status, message, error_type))
    with pytest.raises(exc_type) as excinfo:
        await call(mode, recorder, "generate", {"max_retries": 0}, model="step-2x-large", prompt="p", seed=1)
    error = excinfo.value
    assert isinstance(error, openai.APIStatusError) and error.status_code == status
    assert error.type == error_type
    assert message in str(error)
    assert get_trace_id(error) == "trace-err"
    assert len(recorder.requests) == 1


def test_rate_limit_error_exposes_current_and_limit() -> None:
    message = "request limited concurrency reached, current: 16, limit: 15. Please top up at https://platform.stepfun.com/top-up."
    recorder = Recorder(lambda r: error_response(429, message, "rate_limited"))
    with pytest.raises(StepFunRateLimitError) as excinfo:
        sync_client(recorder, max_retries=0).images.generate(model="step-2x-large", prompt="p", seed=1)
    assert (excinfo.value.kind, excinfo.value.current, excinfo.value.limit) == ("concurrency", 16, 15)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"created": 1, "data": [{"b64_json": "iVBO', "application/json"),
        (b"<html><body>Bad gateway</body></html>", "text/html"),
        (b'{"created": 1, "data": []}', "application/json"),
        (b'{"created": 1}', "application/json"),
        (b'{"data": [{"b64_json": "***not base64***"}]}', "application/json"),
        (b'{"error": {"message": "oops", "type": "server_error"}}', "application/json"),
    ],
    ids=["truncated", "html", "empty-data", "no-data", "bad-b64", "error-200"],
)
def test_malformed_answers_raise_the_package_error(body: bytes, content_type: str) -> None:
    recorder = Recorder(
        lambda r: httpx2.Response(200, content=body, headers={"content-type": content_type, "X-Trace-Id": "tm"})
    )
    with pytest.raises(MalformedResponseError) as excinfo:
        sync_client(recorder, max_retries=0).images.generate(model="step-2x-large", prompt="p", seed=1)
    assert isinstance(excinfo.value, openai.APIError)
    assert excinfo.value.trace_id == "tm" and excinfo.value.status_code == 200
    assert excinfo.value.excerpt


@pytest.mark.parametrize("mode", MODES)
async def test_client_level_raw_and_streaming_views_include_image2image(mode: str) -> None:
    recorder = Recorder()
    if mode == "sync":
        client = sync_client(recorder)
        raw = client.with_raw_response.images.image2image(**I2I)
        with client.with_streaming_response.images.generate(**GEN) as streamed:
            assert streamed.headers["x-trace-id"] == "t-1"
    else:
        aclient = async_client(recorder)
        raw = await aclient.with_raw_response.images.image2image(**I2I)
        async with aclient.with_streaming_response.images.generate(**GEN) as astreamed:
            assert astreamed.headers["x-trace-id"] == "t-1"
    assert raw.parse().data[0].seed == 42
    assert [r.url.path for r in recorder.requests] == ["/v1/images/image2image", "/v1/images/generations"]


@pytest.mark.parametrize("mode", MODES)
async def test_raw_response_parse_gets_the_same_checks_and_trace_id(mode: str) -> None:
    recorder = Recorder()
    if mode == "sync":
        raw = sync_client(recorder).images.with_raw_response.generate(**GEN)
    else:
        raw = await async_client(recorder).images.with_raw_response.generate(**GEN)
    parsed = raw.parse()
    assert parsed.trace_id == "t-1"
    assert parsed.data[0].seed == 42
    broken = Recorder(lambda r: httpx2.Response(200, json={"created": 1, "data": []}))
    raw_broken = sync_client(broken, max_retries=0).images.with_raw_response.generate(**GEN)
    with pytest.raises(MalformedResponseError):
        raw_broken.parse()


def test_whole_number_floats_go_out_as_integers() -> None:
    recorder = Recorder()
    sync_client(recorder).images.generate(model="step-2x-large", prompt="p", seed=5.0, steps=8.0, n=1.0)
    sent = recorder.last_json()
    assert (sent["seed"], sent["steps"], sent["n"]) == (5, 8, 1)
    assert all(type(sent[k]) is int for k in ("seed", "steps", "n"))


# --- extra_query and extra_headers reach the wire ----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("method", "params"),
    [("generate", GEN), ("image2image", I2I), ("edit", EDIT)],
)
async def test_extra_query_and_extra_headers_go_out_with_the_request(
    mode: str, method: str, params: dict[str, Any]
) -> None:
    recorder = Recorder()
    extra = {"extra_query": {"trace": "on", "lang": "中文"}, "extra_headers": {"X-Team": "images", "X-Debug": "1"}}
    if mode == "sync":
        getattr(sync_client(recorder).images, method)(**params, **extra)
    else:
        await getattr(async_client(recorder).images, method)(**params, **extra)
    sent = recorder.last
    assert sent.url.params["trace"] == "on" and sent.url.params["lang"] == "中文"
    assert sent.url.path.startswith("/v1/images/")
    assert sent.headers["x-team"] == "images" and sent.headers["x-debug"] == "1"
    assert sent.headers["authorization"] == "Bearer sk-test", "extra headers add to the SDK's, not replace them"


# --- the step_plan base URL has no image2image -------------------------------------------------


def step_plan_client(recorder: Recorder, **kwargs: Any) -> StepFun:
    return StepFun(
        api_key="sk-test",
        base_url=catalog.STEP_PLAN_BASE_URL,
        http_client=httpx2.Client(transport=recorder.transport),
        **kwargs,
    )


@pytest.mark.parametrize("mode", MODES)
async def test_image2image_on_the_step_plan_base_url_is_refused_locally(mode: str) -> None:
    recorder = Recorder()
    with pytest.raises(StepFunValidationError) as caught:
        if mode == "sync":
            step_plan_client(recorder).images.image2image(**I2I)
        else:
            await AsyncStepFun(
                api_key="sk-test",
                base_url=catalog.STEP_PLAN_BASE_URL,
                http_client=httpx2.AsyncClient(transport=recorder.transport),
            ).images.image2image(**I2I)
    error = caught.value
    assert error.param == "model" and error.endpoint == "image2image"
    assert "step_plan" in str(error) and "no image2image" in str(error)
    assert "DEFAULT_BASE_URL" in str(error) and catalog.DEFAULT_BASE_URL in str(error)
    assert recorder.requests == [], "nothing was sent"


def test_the_step_plan_base_url_still_serves_generations_and_edits() -> None:
    recorder = Recorder()
    client = step_plan_client(recorder)
    client.images.generate(**GEN)
    client.images.edit(**EDIT)
    assert [r.url.path for r in recorder.requests] == ["/step_plan/v1/images/generations", "/step_plan/v1/images/edits"]
    client.with_options(base_url=catalog.DEFAULT_BASE_URL).images.image2image(**I2I)
    assert recorder.last.url.path == "/v1/images/image2image"


def test_validate_false_sends_image2image_to_the_step_plan_base_url_anyway() -> None:
    recorder = Recorder()
    step_plan_client(recorder, validate=False).images.image2image(**I2I)
    assert recorder.last.url.path == "/step_plan/v1/images/image2image"
