"""The client as a user switches to it: keys, base URLs, copies, and the seed guide's code."""

from __future__ import annotations

import base64

import httpx2
import openai
import pytest

from stepfun_openai import (
    DEFAULT_BASE_URL,
    INTERNATIONAL_BASE_URL,
    STEP_PLAN_BASE_URL,
    AsyncStepFun,
    MissingAPIKeyError,
    RetryPolicy,
    StepFun,
)

from ._mock import PNG_B64, Recorder, ok_body

OPENAI_ENV = {
    "OPENAI_API_KEY": "sk-openai-DO-NOT-SEND",
    "OPENAI_BASE_URL": "https://api.openai.example/v1",
    "OPENAI_ORG_ID": "org-openai",
    "OPENAI_PROJECT_ID": "proj-openai",
    "OPENAI_ADMIN_KEY": "sk-admin-openai",
    "OPENAI_CUSTOM_HEADERS": "Authorization: Bearer sk-openai-custom\nX-Openai-Only: 1",
}


@pytest.fixture(autouse=True)
def openai_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs with a user's OpenAI settings in the environment."""
    for name, value in OPENAI_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("STEPFUN_API_KEY", "STEP_API_KEY", "STEPFUN_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _client(recorder: Recorder, **kwargs: object) -> StepFun:
    return StepFun(http_client=httpx2.Client(transport=recorder.transport), **kwargs)  # type: ignore[arg-type]


def test_missing_key_names_both_variables_and_ignores_openai_key() -> None:
    with pytest.raises(MissingAPIKeyError) as excinfo:
        StepFun()
    message = str(excinfo.value)
    assert "STEPFUN_API_KEY" in message and "STEP_API_KEY" in message
    assert OPENAI_ENV["OPENAI_API_KEY"] not in message
    with pytest.raises(MissingAPIKeyError):
        AsyncStepFun()


@pytest.mark.parametrize(
    ("env", "arg", "expected"),
    [
        ({"STEP_API_KEY": "step-key"}, None, "step-key"),
        ({"STEPFUN_API_KEY": "stepfun-key", "STEP_API_KEY": "step-key"}, None, "stepfun-key"),
        ({"STEPFUN_API_KEY": "stepfun-key"}, "explicit-key", "explicit-key"),
    ],
)
def test_api_key_precedence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], arg: str | None, expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    recorder = Recorder()
    client = _client(recorder, api_key=arg)
    client.images.generate(model="step-2x-large", prompt="a cat", seed=1)
    assert recorder.last.headers["authorization"] == f"Bearer {expected}"


def test_openai_environment_never_reaches_stepfun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPFUN_API_KEY", "sk-step")
    recorder = Recorder()
    client = _client(recorder)
    client.images.generate(model="step-2x-large", prompt="a cat", seed=1)
    sent = recorder.last
    assert str(sent.url) == "https://api.stepfun.com/v1/images/generations"
    assert sent.headers["authorization"] == "Bearer sk-step"
    headers = {k.lower(): v for k, v in sent.headers.items()}
    assert "openai-organization" not in headers
    assert "openai-project" not in headers
    assert "x-openai-only" not in headers
    assert all("openai" not in v for v in headers.values() if v.startswith(("sk-", "org-", "proj-", "Bearer")))
    assert client.organization is None and client.project is None and client.admin_api_key is None


@pytest.mark.parametrize(
    ("env_url", "arg", "expected"),
    [
        (None, None, "https://api.stepfun.com/v1/"),
        ("http://127.0.0.1:9/v1", None, "http://127.0.0.1:9/v1/"),
        ("http://127.0.0.1:9/v1", "https://api.stepfun.ai/v1", "https://api.stepfun.ai/v1/"),
    ],
)
def test_base_url_precedence(
    monkeypatch: pytest.MonkeyPatch, env_url: str | None, arg: str | None, expected: str
) -> None:
    if env_url:
        monkeypatch.setenv("STEPFUN_BASE_URL", env_url)
    client = StepFun(api_key="k", base_url=arg)
    assert str(client.base_url) == expected
    assert str(AsyncStepFun(api_key="k", base_url=arg).base_url) == expected


def test_base_url_constants() -> None:
    assert DEFAULT_BASE_URL == "https://api.stepfun.com/v1"
    assert INTERNATIONAL_BASE_URL == "https://api.stepfun.ai/v1"
    assert STEP_PLAN_BASE_URL == "https://api.stepfun.com/step_plan/v1"


@pytest.mark.parametrize("cls", [StepFun, AsyncStepFun])
def test_copy_and_with_options_keep_class_and_settings(cls: type[StepFun]) -> None:
    policy = RetryPolicy(max_retries=4, initial_backoff=0.1)
    client = cls(
        api_key="sk-step",
        base_url="http://127.0.0.1:9/v1",
        retry_policy=policy,
        validate=False,
        stable_seed=False,
        timeout=12.0,
        default_headers={"X-App": "demo"},
    )
    for copied in (client.copy(), client.with_options()):
        assert type(copied) is cls
        assert copied.api_key == "sk-step"
        assert str(copied.base_url) == "http://127.0.0.1:9/v1/"
        assert copied.retry_policy == policy
        assert copied.validate is False and copied.stable_seed is False
        assert copied.timeout == 12.0
        assert copied.default_headers["X-App"] == "demo"
        assert copied.max_retries == 0, "the SDK's own retries stay off in copies"
    changed = client.with_options(max_retries=7, timeout=3.0, validate=True)
    assert type(changed) is cls
    assert changed.retry_policy.max_retries == 7
    assert changed.retry_policy.initial_backoff == 0.1
    assert changed.timeout == 3.0 and changed.validate is True
    assert client.retry_policy.max_retries == 4, "the original is unchanged"


def test_max_retries_goes_to_the_policy_not_the_sdk() -> None:
    client = StepFun(api_key="k", max_retries=5)
    assert client.max_retries == 0
    assert client.retry_policy.max_retries == 5
    assert client.retry_policy.max_attempts == 6


def test_other_openai_arguments_are_forwarded() -> None:
    client = StepFun(api_key="k", organization="org-explicit", default_query={"a": "1"})
    assert client.organization == "org-explicit"
    assert client.default_query["a"] == "1"


def test_repr_hides_the_key() -> None:
    key = "sk-very-distinctive-key-123"
    assert key not in repr(StepFun(api_key=key))
    assert key not in str(AsyncStepFun(api_key=key))


def test_seed_guide_code_runs_unchanged_with_stepfun(tmp_path: object) -> None:
    """Cells 3.1, 3.2, 4.2, 5 and 7 of the seed notebook, with StepFun in place of OpenAI."""
    url = "https://res.stepfun.com/image_gen/20250919/x.png?X-Tos-Date=20250919T093128Z&X-Tos-Expires=3600"

    def answer(request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        if b"2000x2000" in body:
            return httpx2.Response(
                400,
                json={
                    "error": {
                        "message": "Request param: size is invalid, recommended val is: must be "
                        "256x256,512x512,768x768,1024x1024,1280x800,800x1280",
                        "type": "input_invalid",
                    }
                },
            )
        if b'"response_format":"url"' in body.replace(b" ", b""):
            return httpx2.Response(200, json=ok_body(url=url, b64_json=None))
        return httpx2.Response(200, json=ok_body())

    recorder = Recorder(answer)
    client = StepFun(
        api_key="sk-step",
        base_url="https://api.stepfun.com/v1",
        http_client=httpx2.Client(transport=recorder.transport),
    )
    model = "step-1x-medium"
    with pytest.warns(DeprecationWarning, match="step-2x-large"):
        from stepfun_openai import _validation

        _validation._warned_models.discard(model)
        response = client.images.generate(
            model=model,
            prompt="采菊东篱下，悠然见南山。",
            response_format="url",
            extra_body={"cfg_scale": 7.5, "seed": 0, "steps": 50},
            size="1024x1024",
            n=1,
        )
    assert response.data is not None and response.data[0].url == url
    sent = recorder.last_json()
    assert sent["cfg_scale"] == 7.5 and sent["steps"] == 50 and sent["n"] == 1

    response = client.images.generate(
        model=model,
        prompt="一只猫在树枝上晒太阳",
        response_format="b64_json",
        extra_body={"cfg_scale": 7.5, "seed": 11879934, "steps": 50},
        size="1024x1024",
        n=1,
    )
    assert response.data is not None
    image_data = base64.b64decode(response.data[0].b64_json or "")
    assert image_data.startswith(b"\x89PNG")
    assert recorder.last_json()["seed"] == 11879934

    source_image_b64 = base64.b64encode(image_data).decode("utf-8")
    client.images.generate(
        model=model,
        prompt="猫旁边有一片花瓣",
        response_format="url",
        size="1024x1024",
        extra_body={
            "cfg_scale": 7.5,
            "seed": 11879934,
            "steps": 50,
            "source_image": source_image_b64,
            "source_weight": 0.3,
        },
    )
    sent = recorder.last_json()
    assert sent["source_image"] == source_image_b64, "bare base64 goes out as the guide sent it"
    assert sent["source_weight"] == 0.3

    client.images.generate(
        model=model,
        prompt="a boat in the canals of venice",
        response_format="url",
        size="1024x1024",
        extra_body={"cfg_scale": 7.5, "steps": 50, "style_reference": {"image": PNG_B64, "weight": 1.0}},
    )
    assert recorder.last_json()["style_reference"] == {"image": PNG_B64, "weight": 1.0}

    # Cell 7: with local validation off, the server's 400 reaches the user as in the guide.
    raw_client = client.with_options(validate=False)
    try:
        raw_client.images.generate(model=model, prompt="测试图片", response_format="url", size="2000x2000")
    except Exception as e:  # the guide catches Exception and prints str(e)
        assert isinstance(e, openai.BadRequestError)
        assert "Request param: size is invalid" in str(e)
        assert e.type == "input_invalid"
    else:
        raise AssertionError("expected a 400")


@pytest.mark.parametrize("how", ["copy", "with_options"])
def test_copies_never_pick_up_openai_environment(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    recorder = Recorder()
    client = getattr(_client(recorder, api_key="sk-step"), how)(timeout=30.0)
    client.images.generate(model="step-2x-large", prompt="a cat", seed=1)
    headers = {k.lower() for k in recorder.last.headers}
    assert "openai-organization" not in headers and "openai-project" not in headers
    assert "x-openai-only" not in headers
    assert recorder.last.headers["authorization"] == "Bearer sk-step"
    assert client.organization is None and client.project is None
    assert client.admin_api_key is None and client.webhook_secret is None
    explicit = StepFun(api_key="k", organization="org-mine").with_options(timeout=3.0)
    assert explicit.organization == "org-mine", "what the caller passed explicitly is kept"
