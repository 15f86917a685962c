"""A client's twin: ``StepFun.to_async()`` and ``AsyncStepFun.to_sync()`` keep every setting."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import httpx2
import pytest

from stepfun_openai import AsyncStepFun, RetryPolicy, StepFun
from stepfun_openai.emulator import Emulator

from ._mock import Recorder
from .test_client import openai_environment  # noqa: F401  (autouse: a user's OPENAI_* in every test)

# (the class, its twin method, the twin's class, the HTTP client class the twin takes)
DIRECTIONS = [
    pytest.param(StepFun, "to_async", AsyncStepFun, httpx2.AsyncClient, id="to_async"),
    pytest.param(AsyncStepFun, "to_sync", StepFun, httpx2.Client, id="to_sync"),
]


def configured(cls: type[Any], **kwargs: Any) -> Any:
    return cls(
        api_key="sk-step-twin-key-4711",
        base_url="http://127.0.0.1:9/v1",
        retry_policy=RetryPolicy(max_retries=4, initial_backoff=0.1),
        max_retries=3,
        validate=False,
        stable_seed=False,
        fit=True,
        timeout=httpx2.Timeout(12.0, connect=2.0),
        default_headers={"X-App": "demo"},
        default_query={"tenant": "t1"},
        **kwargs,
    )


@pytest.mark.parametrize(("cls", "method", "twin_cls", "http_cls"), DIRECTIONS)
def test_the_twin_has_the_other_class_and_every_setting(
    cls: type[Any], method: str, twin_cls: type[Any], http_cls: type[Any]
) -> None:
    client = configured(cls, organization="org-mine", project="proj-mine", websocket_base_url="wss://ws.example/v1")

    twin = getattr(client, method)()

    assert type(twin) is twin_cls
    assert twin.api_key == "sk-step-twin-key-4711"
    assert str(twin.base_url) == "http://127.0.0.1:9/v1/"
    assert twin.retry_policy == RetryPolicy(max_retries=3, initial_backoff=0.1)
    assert twin.max_retries == 0, "the SDK's own retries stay off"
    assert (twin.validate, twin.stable_seed, twin.fit) == (False, False, True)
    assert twin.timeout == httpx2.Timeout(12.0, connect=2.0)
    assert twin.default_headers["X-App"] == "demo"
    assert twin.default_query == {"tenant": "t1"}
    assert (twin.organization, twin.project) == ("org-mine", "proj-mine"), "what the caller passed is kept"
    assert twin.websocket_base_url == "wss://ws.example/v1"
    assert isinstance(twin._client, http_cls)
    for copied in (twin.copy(), twin.with_options()):  # and the twin's copies keep them too
        assert type(copied) is twin_cls
        assert copied.retry_policy == twin.retry_policy and copied.fit is True


@pytest.mark.parametrize(("cls", "method", "twin_cls", "http_cls"), DIRECTIONS)
def test_keywords_replace_settings_and_the_original_is_unchanged(
    cls: type[Any], method: str, twin_cls: type[Any], http_cls: type[Any]
) -> None:
    client = configured(cls)

    twin = getattr(client, method)(max_retries=7, validate=True, timeout=3.0, default_headers={"X-Other": "1"})

    assert twin.retry_policy.max_retries == 7 and twin.retry_policy.initial_backoff == 0.1
    assert twin.validate is True and twin.timeout == 3.0
    assert twin.default_headers["X-Other"] == "1" and "X-App" not in twin.default_headers
    assert client.retry_policy.max_retries == 3 and client.validate is False


@pytest.mark.parametrize(("cls", "method", "twin_cls", "http_cls"), DIRECTIONS)
async def test_the_openai_environment_never_reaches_the_twin(
    cls: type[Any], method: str, twin_cls: type[Any], http_cls: type[Any]
) -> None:
    recorder = Recorder()
    client = cls(api_key="sk-step", default_headers={"X-App": "demo"})

    twin = getattr(client, method)(http_client=http_cls(transport=recorder.transport))
    response = twin.images.generate(model="step-2x-large", prompt="a cat", seed=1)
    if twin_cls is AsyncStepFun:
        await response

    sent = recorder.last
    assert str(sent.url) == "https://api.stepfun.com/v1/images/generations"
    assert sent.headers["authorization"] == "Bearer sk-step"
    assert sent.headers["x-app"] == "demo"
    names = {name.lower() for name in sent.headers}
    assert not names & {"openai-organization", "openai-project", "x-openai-only"}
    assert twin.organization is None and twin.project is None and twin.admin_api_key is None
    assert twin._custom_headers == {"X-App": "demo"}


@pytest.mark.parametrize(("cls", "method", "twin_cls", "http_cls"), DIRECTIONS)
def test_the_key_is_not_in_the_twins_repr(
    cls: type[Any], method: str, twin_cls: type[Any], http_cls: type[Any]
) -> None:
    twin = getattr(configured(cls), method)()

    assert "sk-step-twin-key-4711" not in repr(twin) and "sk-step-twin-key-4711" not in str(twin)


@pytest.mark.parametrize(("cls", "method", "twin_cls", "http_cls"), DIRECTIONS)
def test_a_user_http_client_cannot_cross_and_a_warning_says_what_to_pass(
    cls: type[Any], method: str, twin_cls: type[Any], http_cls: type[Any]
) -> None:
    users = (httpx2.AsyncClient if http_cls is httpx2.Client else httpx2.Client)(
        limits=httpx2.Limits(max_connections=5)
    )
    client = cls(api_key="k", http_client=users)

    with pytest.warns(UserWarning) as caught:
        twin = getattr(client, method)()
    with pytest.warns(UserWarning):
        getattr(client.with_options(timeout=5.0), method)()  # a copy still uses the user's client

    (warning,) = caught
    message = str(warning.message)
    assert warning.filename == __file__, "the warning points at the caller's line"
    assert f"{cls.__name__}.{method}()" in message and twin_cls.__name__ in message
    assert f"{method}(http_client=httpx2.{http_cls.__name__}(...))" in message
    assert "connection-pool limits" in message
    assert isinstance(twin._client, http_cls) and twin._client is not users


@pytest.mark.parametrize(("cls", "method", "twin_cls", "http_cls"), DIRECTIONS)
def test_no_warning_for_the_default_http_client_or_one_given_to_the_twin(
    cls: type[Any], method: str, twin_cls: type[Any], http_cls: type[Any]
) -> None:
    other = httpx2.AsyncClient if http_cls is httpx2.Client else httpx2.Client
    mine = http_cls()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(cls(api_key="k"), method)()
        getattr(cls(api_key="k").with_options(max_retries=2), method)()
        twin = getattr(cls(api_key="k", http_client=other()), method)(http_client=mine)
    assert twin._client is mine


async def test_a_callable_key_crosses_to_the_async_twin_and_is_called_off_the_event_loop() -> None:
    recorder = Recorder()
    callers: list[bool] = []

    def fresh_key() -> str:
        callers.append(threading.current_thread() is threading.main_thread())
        return f"sk-from-callable-{len(callers)}"

    client = StepFun(api_key=fresh_key)  # type: ignore[arg-type]
    twin = client.to_async(http_client=httpx2.AsyncClient(transport=recorder.transport))
    await twin.images.generate(model="step-2x-large", prompt="a cat", seed=1)
    await twin.images.generate(model="step-2x-large", prompt="a dog", seed=2)

    assert [r.headers["authorization"] for r in recorder.requests] == [
        "Bearer sk-from-callable-1",
        "Bearer sk-from-callable-2",
    ], "asked again for every request, as the StepFun does"
    assert callers == [False, False], "in a worker thread: a slow token fetch never blocks the loop"


def test_an_async_callable_key_cannot_serve_a_sync_twin_unless_a_key_is_given() -> None:
    async def key() -> str:
        return "sk-async"

    client = AsyncStepFun(api_key=key)  # type: ignore[arg-type]

    with pytest.raises(TypeError, match=r"to_sync\(api_key=\.\.\.\)"):
        client.to_sync()
    assert client.to_sync(api_key="sk-plain").api_key == "sk-plain"


async def test_a_sync_clients_async_twin_generates_against_the_emulator(
    stepfun_client: StepFun, stepfun_emulator: Emulator
) -> None:
    async with stepfun_client.with_options(max_retries=1).to_async() as twin:
        response = await twin.images.generate(
            model="step-image-edit-2", prompt="a lighthouse", seed=7, response_format="b64_json"
        )

    assert response.images[0].seed == 7 and response.images[0].read().startswith(b"\x89PNG")
    assert twin.retry_policy.max_retries == 1
    (event,) = stepfun_emulator.requests()
    assert event["status"] == 200 and event["fields"]["prompt"] == "a lighthouse"


async def test_an_async_clients_sync_twin_generates_against_the_emulator(
    async_stepfun_client: AsyncStepFun, stepfun_emulator: Emulator
) -> None:
    with async_stepfun_client.to_sync(fit=True) as twin:
        response = twin.images.generate(model="step-image-edit-2", prompt="a lighthouse", seed=8)

    assert response.images[0].seed == 8 and twin.fit is True
    (event,) = stepfun_emulator.requests()
    assert event["status"] == 200 and event["fields"]["seed"] == 8
