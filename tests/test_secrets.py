"""The API key never shows: not in a repr or str of a client, a response, an exception, nor in a
log record, even with every logger at DEBUG and every call failing at least once."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from stepfun_openai import (
    AsyncStepFun,
    MalformedResponseError,
    RetryPolicy,
    StepFun,
    StepFunValidationError,
)
from stepfun_openai.emulator import Emulator

KEY = "sk-SECRET-7f3a9c-do-not-leak"
MODEL = "step-2x-large"
QUICK = RetryPolicy(max_retries=1, sleep=lambda seconds: None)


def _texts(obj: object) -> Iterator[str]:
    yield repr(obj)
    yield str(obj)
    if isinstance(obj, BaseException):
        yield "".join(traceback.format_exception(type(obj), obj, obj.__traceback__))
        yield repr(getattr(obj, "body", None))
        request = getattr(obj, "request", None)
        if request is not None:
            yield repr(request)
            yield repr(request.headers)
        response = getattr(obj, "response", None)
        if response is not None:
            yield repr(response)
            yield repr(response.headers)
        yield repr(vars(obj))


def _assert_hidden(obj: object) -> None:
    for text in _texts(obj):
        assert KEY not in text, f"the key leaked in {type(obj).__name__}: {text[:200]}"
        assert KEY[3:20] not in text


@pytest.fixture
def emulator(stepfun_emulator_factory: Any) -> Emulator:
    emulator: Emulator = stepfun_emulator_factory(api_key=KEY, slow_seconds=2.0)
    return emulator


@pytest.fixture
def client(emulator: Emulator) -> Iterator[StepFun]:
    client = StepFun(api_key=KEY, base_url=emulator.base_url, retry_policy=QUICK)
    yield client
    client.close()


def test_the_emulator_really_checks_this_key(emulator: Emulator) -> None:
    wrong = StepFun(api_key="sk-wrong", base_url=emulator.base_url, retry_policy=QUICK)
    with pytest.raises(openai.AuthenticationError):
        wrong.images.generate(model=MODEL, prompt="x")


@pytest.mark.parametrize("cls", [StepFun, AsyncStepFun])
def test_clients_and_their_copies_hide_the_key(cls: type[StepFun]) -> None:
    client = cls(api_key=KEY, base_url="http://stepfun.test/v1")
    for shown in (client, client.with_options(max_retries=1), client.copy(timeout=3.0), client.retry_policy):
        _assert_hidden(shown)
    assert "api_key=<hidden>" in repr(client)


def test_responses_hide_the_key(client: StepFun) -> None:
    result = client.images.generate(model=MODEL, prompt="a garden", response_format="b64_json")
    raw = client.images.with_raw_response.generate(model=MODEL, prompt="a garden")

    for shown in (result, result.data[0], result.model_dump_json(), raw, raw.headers, raw.http_request):
        _assert_hidden(shown)
    _assert_hidden(getattr(result.data[0], "_context", None))


def _failures(client: StepFun) -> Iterator[BaseException]:
    kinds = ("503", "429", "429-quota", "402", "451", "malformed", "error-200", "html", "reset")
    for kind in kinds:
        with pytest.raises(openai.OpenAIError) as caught:
            client.images.generate(model=MODEL, prompt="a garden", extra_headers={"X-Emulator-Fault": kind})
        yield caught.value
    with pytest.raises(openai.APITimeoutError) as timed_out:
        client.images.generate(model=MODEL, prompt="x", timeout=0.1, extra_headers={"X-Emulator-Fault": "slow"})
    yield timed_out.value
    with pytest.raises(openai.BadRequestError) as bad:
        client.with_options(validate=False).images.generate(model=MODEL, prompt="x", size="3x3")
    yield bad.value
    with pytest.raises(StepFunValidationError) as invalid:
        client.images.generate(model=MODEL, prompt="x", size="3x3")
    yield invalid.value
    offline = StepFun(api_key=KEY, base_url="http://127.0.0.1:9/v1", retry_policy=QUICK)
    with pytest.raises(openai.APIConnectionError) as refused:
        offline.models.list()
    yield refused.value


def test_exceptions_hide_the_key(client: StepFun) -> None:
    seen = list(_failures(client))

    assert any(isinstance(error, MalformedResponseError) for error in seen)
    for error in seen:
        _assert_hidden(error)


def test_log_records_hide_the_key(client: StepFun, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included

    list(_failures(client))
    client.images.generate(model=MODEL, prompt="a garden")

    assert any(record.name == "stepfun_openai" for record in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage(), record.name
        assert KEY not in repr(record.__dict__), record.name
    assert KEY not in caplog.text


async def test_async_exceptions_and_logs_hide_the_key(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = AsyncStepFun(api_key=KEY, base_url=emulator.base_url, retry_policy=QUICK)

    with pytest.raises(openai.InternalServerError) as caught:
        await client.images.generate(model=MODEL, prompt="x", extra_headers={"X-Emulator-Fault": "503"})

    _assert_hidden(caught.value)
    _assert_hidden(client)
    assert KEY not in caplog.text
    await client.close()


def test_an_echoed_authorization_header_is_masked_in_the_request_repr() -> None:
    request = httpx2.Request("POST", "http://stepfun.test/v1/images/generations", headers={"Authorization": KEY})
    assert KEY not in repr(request.headers)
