"""Bad answers and bad parameters: each fails clearly, as an exception of the package.

A broken answer (truncated JSON, an HTML or text page, no ``data``, undecodable base64, a 200
carrying an error envelope) surfaces as ``MalformedResponseError`` with the status, trace id and an
excerpt of the body, never as a ``KeyError`` or ``JSONDecodeError`` from inside the package.
A bad parameter is refused locally, naming it, before any request is sent.
"""

from __future__ import annotations

import base64
import json
import math
import warnings
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stepfun_openai import (
    AsyncStepFun,
    MalformedResponseError,
    MissingAPIKeyError,
    RetryPolicy,
    StepFun,
    StepFunImagesResponse,
    StepFunValidationError,
    catalog,
)
from stepfun_openai.emulator import Emulator

from ._mock import Recorder

MODEL = "step-2x-large"
NO_RETRIES = RetryPolicy(max_retries=0)


def _mock_client(status: int, body: bytes, content_type: str, retry_policy: RetryPolicy = NO_RETRIES) -> StepFun:
    answer = httpx2.Response(status, content=body, headers={"content-type": content_type, "x-trace-id": "trace-42"})
    return StepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        retry_policy=retry_policy,
        http_client=httpx2.Client(transport=httpx2.MockTransport(lambda request: answer)),
    )


# --- the emulator's broken answers -------------------------------------------------------------

MALFORMED_KINDS = {
    "malformed": "invalid JSON",
    "empty-data": "no images in 'data'",
    "bad-b64": "not valid base64",
    "error-200": "error envelope",
}


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
def test_a_broken_answer_is_a_malformed_response_error(stepfun_emulator: Emulator, kind: str) -> None:
    client = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url, retry_policy=NO_RETRIES)

    with pytest.raises(MalformedResponseError) as caught:
        client.images.generate(
            model=MODEL, prompt="a harbour", response_format="b64_json", extra_headers={"X-Emulator-Fault": kind}
        )

    error = caught.value
    assert isinstance(error, openai.APIError)
    assert MALFORMED_KINDS[kind] in error.reason
    assert error.status_code == 200
    assert error.trace_id and len(error.trace_id) == 32
    assert error.trace_id in str(error), "the trace id StepFun support asks for is in the message"
    assert 0 < len(error.excerpt) <= 300
    assert error.excerpt[:1] == "{"


@pytest.mark.parametrize("kind", sorted(MALFORMED_KINDS))
async def test_async_broken_answers_fail_the_same_way(stepfun_emulator: Emulator, kind: str) -> None:
    client = AsyncStepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url, retry_policy=NO_RETRIES)

    with pytest.raises(MalformedResponseError) as caught:
        await client.images.generate(model=MODEL, prompt="a harbour", extra_headers={"X-Emulator-Fault": kind})

    assert MALFORMED_KINDS[kind] in caught.value.reason
    await client.close()


def test_a_gateway_html_page_with_502_is_a_server_error_not_a_parse_error(stepfun_emulator: Emulator) -> None:
    client = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url, retry_policy=NO_RETRIES)

    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model=MODEL, prompt="a harbour", extra_headers={"X-Emulator-Fault": "html"})

    assert caught.value.status_code == 502
    assert "502 Bad Gateway" in caught.value.response.text


def test_a_malformed_answer_is_retried_and_then_reported(stepfun_emulator: Emulator) -> None:
    client = StepFun(
        api_key=stepfun_emulator.api_key,
        base_url=stepfun_emulator.base_url,
        retry_policy=RetryPolicy(max_retries=2, sleep=lambda seconds: None),
    )

    with pytest.raises(MalformedResponseError) as caught:
        client.images.generate(model=MODEL, prompt="a harbour", extra_headers={"X-Emulator-Fault": "empty-data"})

    assert caught.value.attempts == 3  # type: ignore[attr-defined]


# --- every shape of nonsense a proxy or a bug can produce --------------------------------------

BROKEN = [
    (200, b"<html><body>Service Unavailable</body></html>", "text/html", "got text/html"),
    (200, b"upstream connect error or disconnect/reset before headers", "text/plain", "got text/plain"),
    (200, b"", "application/json", "invalid JSON"),
    (200, b'{"created": 1, "data": [{"b64_json": "iVBO', "application/json", "invalid JSON"),
    (200, b"\xff\xfe\x00", "application/json", "invalid JSON"),
    (200, b"[]", "application/json", "expected a JSON image response"),
    (200, b"null", "application/json", "expected a JSON image response"),
    (200, b"{}", "application/json", "no images in 'data'"),
    (200, b'{"data": null}', "application/json", "no images in 'data'"),
    (200, b'{"data": []}', "application/json", "no images in 'data'"),
    (200, b'{"data": 5}', "application/json", "'data' is a int"),
    (200, b'{"data": {"url": "https://x"}}', "application/json", "'data' is a dict"),
    (200, b'{"data": [null]}', "application/json", "data[0] is not an image object"),
    (200, b'{"data": [{}]}', "application/json", "neither url nor b64_json"),
    (200, b'{"data": [{"finish_reason": "success"}]}', "application/json", "neither url nor b64_json"),
    (200, b'{"data": [{"b64_json": 5}]}', "application/json", "data[0].b64_json is not a string"),
    (200, b'{"data": [{"url": ["https://x"]}]}', "application/json", "data[0].url is not a string"),
    (200, b'{"data": [{"b64_json": "!!not base64!!"}]}', "application/json", "not valid base64"),
    (200, b'{"data": [{"url": "https://x", "seed": "seven"}]}', "application/json", "seed is not an integer"),
    (200, b'{"created": "yesterday", "data": [{"url": "https://x"}]}', "application/json", "'created' is not"),
    (200, b'{"created": 1.5, "data": [{"url": "https://x"}]}', "application/json", "'created' is not"),
    (200, b'{"data": [{"url": "https://x", "finish_reason": 3}]}', "application/json", "finish_reason is not a string"),
    (200, b'{"data": [{"url": "https://x", "finish_reason": ["x"]}]}', "application/json", "finish_reason is not"),
    (200, b'{"error": {"message": "internal error", "type": "server_error"}}', "application/json", "envelope"),
]


@pytest.mark.parametrize(("status", "body", "content_type", "reason"), BROKEN)
def test_nonsense_from_the_server_is_always_malformed_response_error(
    status: int, body: bytes, content_type: str, reason: str
) -> None:
    client = _mock_client(status, body, content_type)

    with pytest.raises(MalformedResponseError) as caught:
        client.images.generate(model=MODEL, prompt="a harbour")

    assert reason in caught.value.reason
    assert caught.value.trace_id == "trace-42"
    assert caught.value.status_code == 200
    assert caught.value.excerpt == body.decode("utf-8", "replace")[:300]


def test_an_excerpt_is_short_even_for_a_huge_page() -> None:
    page = b"<html>" + b"x" * 100_000 + b"</html>"
    with pytest.raises(MalformedResponseError) as caught:
        _mock_client(200, page, "text/html").images.generate(model=MODEL, prompt="a harbour")
    assert len(caught.value.excerpt) == 300
    assert len(str(caught.value)) < 500


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["data", "url", "b64_json", "image", "seed", "error", "created", "finish_reason"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
_IMAGE = st.fixed_dictionaries(
    {},
    optional={
        "url": st.one_of(st.just("https://img.example/a.png"), _JSON),
        "b64_json": st.one_of(st.just(base64.b64encode(b"png").decode()), st.text(max_size=12), _JSON),
        "seed": st.one_of(st.integers(0, 2**31), _JSON),
        "finish_reason": st.sampled_from(["success", "content_filtered", "other"]),
    },
)
_BODY = st.one_of(
    _JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"data": st.lists(_IMAGE, max_size=2)}).map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_BODY, content_type=st.sampled_from(["application/json", "text/html", "text/plain"]))
def test_any_200_body_is_either_a_usable_response_or_malformed(body: bytes, content_type: str) -> None:
    client = _mock_client(200, body, content_type)
    try:
        result = client.images.generate(model=MODEL, prompt="a harbour")
    except MalformedResponseError as error:
        assert error.status_code == 200
        return
    assert isinstance(result, StepFunImagesResponse)
    assert result.data
    assert result.created is None or (isinstance(result.created, int) and not isinstance(result.created, bool))
    for image in result.data:
        assert image.seed is None or isinstance(image.seed, int)
        assert image.finish_reason is None or isinstance(image.finish_reason, str)
        if image.b64_json is not None:
            base64.b64decode(image.b64_json, validate=True)
        else:
            assert isinstance(image.url, str) or image.content_filtered


# --- parameters: refused locally, naming the parameter, before any request ---------------------

_GENERATION_MODELS = catalog.models_for("generations")
_ALL_SIZES = sorted(
    {size for model in catalog.MODELS.values() for spec in model.endpoints.values() for size in (spec.sizes or ())}
)


def _number(value: object, rng: catalog.NumberRange) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if rng.integer and not float(value).is_integer():
        return False
    low_ok = value > rng.min if rng.min_exclusive else value >= rng.min
    return bool(low_ok and value <= rng.max) and not math.isnan(value)


def _invalid_parameters(params: dict[str, Any]) -> set[str]:
    """An oracle written from the contract, independently of the package's validator."""
    model = catalog.get_model(params["model"])
    spec = model.spec("generations") if model else None
    if spec is None:
        return {"model"}
    bad = set()
    prompt = params["prompt"]
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > spec.prompt_max:
        bad.add("prompt")
    if "size" in params and params["size"] not in (spec.sizes or ()):
        bad.add("size")
    if "n" in params and (isinstance(params["n"], bool) or not 1 <= params["n"] <= 10):
        bad.add("n")  # n > 1 is n requests (the client's fan-out), up to 10
    if "response_format" in params and params["response_format"] not in ("url", "b64_json"):
        bad.add("response_format")
    for name, rng in (("seed", catalog.SEED), ("steps", spec.steps), ("cfg_scale", spec.cfg_scale)):
        if name in params and not _number(params[name], rng):
            bad.add(name)
    if "negative_prompt" in params and (
        spec.negative_prompt_max is None or len(params["negative_prompt"]) > spec.negative_prompt_max
    ):
        bad.add("negative_prompt")
    if "text_mode" in params and not spec.text_mode:
        bad.add("text_mode")
    return bad


_WILD = {
    "prompt": st.one_of(st.text(max_size=30), st.integers(0, 1100).map(lambda n: "p" * n)),
    "size": st.sampled_from([*_ALL_SIZES, "1024X1024", "1024*1024", "2048x2048", ""]),
    "n": st.integers(0, 3),
    "response_format": st.sampled_from(["url", "b64_json", "png", "URL"]),
    "seed": st.integers(-5, catalog.SEED_MAX + 5) | st.booleans(),
    "steps": st.integers(-3, 110) | st.floats(-5, 120) | st.sampled_from([8.0, 50.0, 8.5]),
    "cfg_scale": st.floats(-2, 15) | st.just(math.nan) | st.integers(0, 12),
    "negative_prompt": st.integers(0, 600).map(lambda n: "n" * n),
    "text_mode": st.booleans(),
}


def _valid(name: str, spec: catalog.EndpointSpec) -> st.SearchStrategy[Any]:
    return {
        "prompt": st.text(min_size=1, max_size=spec.prompt_max).filter(str.strip),
        "size": st.sampled_from(spec.sizes or ("1024x1024",)),
        "n": st.just(1),
        "response_format": st.sampled_from(["url", "b64_json"]),
        "seed": st.integers(0, catalog.SEED_MAX),
        "steps": st.integers(int(spec.steps.min), int(spec.steps.max)),
        "cfg_scale": st.floats(spec.cfg_scale.min, spec.cfg_scale.max),
        "negative_prompt": st.integers(0, spec.negative_prompt_max or 0).map(lambda n: "n" * n),
        "text_mode": st.booleans(),
    }[name]


@st.composite
def _params(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly plausible parameter sets, each value now and then from a much wider range."""
    model = draw(st.sampled_from([*_GENERATION_MODELS * 3, "step-1x-edit", "dall-e-3", "step-2x-larg"]))
    spec = catalog.MODELS[model].spec("generations") if model in catalog.MODELS else None
    params: dict[str, Any] = {"model": model}
    for name, wild in _WILD.items():
        how = draw(
            st.sampled_from(["valid", "valid", "wild"] if name == "prompt" else ["omit", "valid", "valid", "wild"])
        )
        if how == "omit":
            continue
        params[name] = draw(wild if how == "wild" or spec is None else _valid(name, spec))
    return params


_PARAMS = _params()

_recorder = Recorder()
_recording_client = StepFun(
    api_key="k", base_url="http://stepfun.test/v1", http_client=httpx2.Client(transport=_recorder.transport)
)


@settings(max_examples=300, deadline=None)
@given(params=_PARAMS)
def test_parameters_are_either_within_the_catalog_or_refused_before_sending(params: dict[str, Any]) -> None:
    _recorder.requests.clear()
    invalid = _invalid_parameters(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the retired step-1x-medium
        try:
            _recording_client.images.generate(**params)
        except StepFunValidationError as error:
            assert error.param in invalid, f"refused {error.param!r}, but the invalid ones are {invalid}"
            assert error.param in str(error)
            assert _recorder.requests == [], "a refused call sends nothing"
            event(f"refused {error.param}")
            return
    event("accepted")
    assert invalid == set(), f"sent although {invalid} are out of the catalog's limits"
    assert len(_recorder.requests) == params.get("n", 1)
    sent = _recorder.last_json()
    spec = catalog.MODELS[sent["model"]].endpoints["generations"]
    assert 1 <= sent["seed"] <= catalog.SEED_MAX, "a missing or 0 seed became a concrete one"
    if "size" in sent:
        assert sent["size"] in (spec.sizes or ())
    if "steps" in sent:
        assert spec.steps.contains(sent["steps"])
    if "cfg_scale" in sent:
        assert spec.cfg_scale.contains(sent["cfg_scale"])


# --- an explicitly empty key -------------------------------------------------------------------


@pytest.mark.parametrize("client_class", [StepFun, AsyncStepFun])
def test_an_explicitly_empty_api_key_is_refused_even_with_one_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, client_class: type[StepFun] | type[AsyncStepFun]
) -> None:
    monkeypatch.setenv("STEPFUN_API_KEY", "sk-from-the-environment")
    with pytest.raises(MissingAPIKeyError, match="api_key is empty") as caught:
        client_class(api_key="")
    assert "sk-from-the-environment" not in str(caught.value)
    assert client_class().api_key == "sk-from-the-environment", "not giving api_key (None) reads the environment"
    assert client_class(api_key=None).api_key == "sk-from-the-environment"
