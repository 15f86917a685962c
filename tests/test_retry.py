"""Retries: every call either succeeds or fails clearly, and is never silently repeated.

Most tests run against the emulator, which counts the HTTP requests it receives; the fault is
chosen with the ``X-Emulator-Fault`` request header. Waits go to a fake sleep, never the clock.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from stepfun_openai import (
    DEFAULT_TIMEOUT,
    AsyncStepFun,
    ContentBlockedError,
    InsufficientBalanceError,
    MalformedResponseError,
    QuotaExceededError,
    RetryPolicy,
    StepFun,
    StepFunRateLimitError,
)
from stepfun_openai.emulator import Emulator

from ._mock import ok_body

MODEL = "step-2x-large"


class Waits(list[float]):
    """A fake sleep for RetryPolicy: records each wait instead of spending it."""

    def sleep(self, seconds: float) -> None:
        self.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.append(seconds)

    def policy(self, **options: Any) -> RetryPolicy:
        return RetryPolicy(sleep=self.sleep, async_sleep=self.async_sleep, **options)


class ScriptedFaults:
    """Puts ``X-Emulator-Fault: <kind>`` on the first HTTP requests, one kind each, then none."""

    def __init__(self, *kinds: str) -> None:
        self.kinds = list(kinds)
        self.sent: list[httpx2.Request] = []

    def _hook(self, request: httpx2.Request) -> None:
        if self.kinds:
            request.headers["X-Emulator-Fault"] = self.kinds.pop(0)
        self.sent.append(request)

    async def _ahook(self, request: httpx2.Request) -> None:
        self._hook(request)

    def http_client(self) -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [self._hook]})

    def async_http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(event_hooks={"request": [self._ahook]})


def _client(emulator: Emulator, waits: Waits, **options: Any) -> StepFun:
    policy_options = {k: options.pop(k) for k in list(options) if k in RetryPolicy.__dataclass_fields__}
    return StepFun(
        api_key=emulator.api_key, base_url=emulator.base_url, retry_policy=waits.policy(**policy_options), **options
    )


def _async_client(emulator: Emulator, waits: Waits, **options: Any) -> AsyncStepFun:
    policy_options = {k: options.pop(k) for k in list(options) if k in RetryPolicy.__dataclass_fields__}
    return AsyncStepFun(
        api_key=emulator.api_key, base_url=emulator.base_url, retry_policy=waits.policy(**policy_options), **options
    )


def _fault(kind: str) -> dict[str, str]:
    return {"X-Emulator-Fault": kind}


def _seen(emulator: Emulator, expected: int) -> dict[str, Any]:
    """The emulator's stats once it has logged ``expected`` requests (it logs each one just after
    answering it, so the client can be a moment ahead), plus a moment for any surplus to show."""
    deadline = time.monotonic() + 5.0
    while emulator.stats()["requests"] < expected and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.02)
    return emulator.stats()


def _image_requests(emulator: Emulator, expected: int) -> list[dict[str, Any]]:
    _seen(emulator, expected)
    return [entry for entry in emulator.requests() if entry["path"].startswith("/v1/images/")]


# --- who owns the retries ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", [StepFun, AsyncStepFun])
def test_the_sdk_never_retries_the_policy_does(cls: type[StepFun]) -> None:
    client = cls(api_key="k", max_retries=3)
    assert client.max_retries == 0, "the OpenAI base client's own retries are off"
    assert client.retry_policy.max_retries == 3
    assert client.retry_policy.max_attempts == 4

    changed = client.with_options(max_retries=1)
    assert type(changed) is cls
    assert changed.max_retries == 0
    assert changed.retry_policy == RetryPolicy(max_retries=1)
    assert client.retry_policy.max_retries == 3, "the original keeps its policy"

    custom = RetryPolicy(max_retries=4, initial_backoff=0.1, max_backoff=1.0, max_total_time=20.0)
    copied = cls(api_key="k", retry_policy=custom).with_options(timeout=5.0)
    assert copied.retry_policy == custom
    assert copied.with_options(max_retries=0).retry_policy == RetryPolicy(
        max_retries=0, initial_backoff=0.1, max_backoff=1.0, max_total_time=20.0
    )


def test_default_policy_is_documented_and_bounded() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_backoff, policy.max_backoff) == (8, 0.5, 8.0)
    assert policy.max_total_time == 300.0
    assert policy.max_retry_after == 60.0
    assert policy.retry_on_status == {408, 429, 500, 502, 503, 504}
    assert StepFun(api_key="k").retry_policy == policy


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"initial_backoff": -1.0}, "initial_backoff"),
        ({"initial_backoff": 5.0, "max_backoff": 1.0}, "larger than max_backoff"),
        ({"max_total_time": 0}, "max_total_time"),
        ({"retry_on_status": {503, 400}}, "never retried"),
        ({"retry_on_status": {503, 402}}, "never retried"),
        ({"retry_on_status": {"503"}}, "HTTP status integers"),
    ],
)
def test_a_policy_that_makes_no_sense_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**options)


# --- each fault: how many HTTP attempts, what the caller sees ----------------------------------

TRANSIENT = {
    "503": openai.InternalServerError,
    "500": openai.InternalServerError,
    "502": openai.InternalServerError,
    "504": openai.InternalServerError,
    "html": openai.InternalServerError,  # nginx's HTML 502 page is a 502 like any other
    "408": openai.APIStatusError,
    "429": StepFunRateLimitError,
    "reset": openai.APIConnectionError,
    "malformed": MalformedResponseError,
    "empty-data": MalformedResponseError,
    "bad-b64": MalformedResponseError,
    "error-200": MalformedResponseError,
}
FINAL = {
    "429-quota": QuotaExceededError,
    "402": InsufficientBalanceError,
    "451": ContentBlockedError,
}


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_a_transient_fault_is_retried_up_to_the_policy_then_raised(stepfun_emulator: Emulator, kind: str) -> None:
    waits = Waits()
    client = _client(stepfun_emulator, waits, max_retries=2)

    with pytest.raises(TRANSIENT[kind]) as caught:
        client.images.generate(model=MODEL, prompt="a lighthouse", extra_headers=_fault(kind))

    stats = _seen(stepfun_emulator, 3)
    assert stats["requests"] == 3, "1 attempt + 2 retries, and not one more"
    assert stats["by_fault"] == {kind: 3}
    assert caught.value.attempts == 3  # type: ignore[attr-defined]
    assert len(waits) == 2


@pytest.mark.parametrize("kind", sorted(FINAL))
def test_a_final_error_is_raised_at_once(stepfun_emulator: Emulator, kind: str) -> None:
    waits = Waits()
    client = _client(stepfun_emulator, waits, max_retries=5)

    with pytest.raises(FINAL[kind]) as caught:
        client.images.generate(model=MODEL, prompt="a lighthouse", extra_headers=_fault(kind))

    assert _seen(stepfun_emulator, 1)["requests"] == 1
    assert caught.value.attempts == 1  # type: ignore[attr-defined]
    assert waits == []


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("503", openai.InternalServerError),
        ("429", StepFunRateLimitError),
        ("reset", openai.APIConnectionError),
        ("html", openai.InternalServerError),
        ("malformed", MalformedResponseError),
        ("bad-b64", MalformedResponseError),
        ("402", InsufficientBalanceError),
        ("429-quota", QuotaExceededError),
    ],
)
async def test_async_client_retries_the_same_way(
    stepfun_emulator: Emulator, kind: str, expected: type[Exception]
) -> None:
    waits = Waits()
    client = _async_client(stepfun_emulator, waits, max_retries=2)

    with pytest.raises(expected) as caught:
        await client.images.generate(model=MODEL, prompt="a lighthouse", extra_headers=_fault(kind))

    attempts = 3 if kind in TRANSIENT else 1
    assert _seen(stepfun_emulator, attempts)["requests"] == attempts
    assert caught.value.attempts == attempts  # type: ignore[attr-defined]
    assert len(waits) == attempts - 1
    await client.close()


@pytest.mark.parametrize("kind", sorted(TRANSIENT))
def test_one_bad_attempt_then_the_image(stepfun_emulator: Emulator, kind: str) -> None:
    script = ScriptedFaults(kind)
    client = _client(stepfun_emulator, Waits(), http_client=script.http_client())

    result = client.images.generate(model=MODEL, prompt="a lighthouse", response_format="b64_json")

    assert result.data[0].b64_json
    assert _seen(stepfun_emulator, 2)["requests"] == 2


async def test_async_one_bad_attempt_of_each_kind_then_the_image(stepfun_emulator: Emulator) -> None:
    script = ScriptedFaults("503", "429", "reset", "malformed", "html", "empty-data", "error-200")
    client = _async_client(stepfun_emulator, Waits(), http_client=script.async_http_client())

    result = await client.images.generate(model=MODEL, prompt="a lighthouse")

    assert result.data[0].url
    assert _seen(stepfun_emulator, 8)["requests"] == 8
    await client.close()


def test_max_retries_zero_sends_exactly_one_request(stepfun_emulator: Emulator) -> None:
    client = _client(stepfun_emulator, Waits()).with_options(max_retries=0)

    with pytest.raises(openai.InternalServerError):
        client.images.generate(model=MODEL, prompt="a lighthouse", extra_headers=_fault("503"))

    assert _seen(stepfun_emulator, 1)["requests"] == 1


def test_every_endpoint_gets_one_retry_loop(stepfun_emulator: Emulator) -> None:
    """No stacking: generate, image2image and edit each make at most max_attempts requests, and
    every attempt tells the server it is a first try as far as the SDK is concerned."""
    from ._mock import tiny_png

    client = _client(stepfun_emulator, Waits(), max_retries=3)
    calls: list[Callable[[], object]] = [
        lambda: client.images.generate(model=MODEL, prompt="x", extra_headers=_fault("503")),
        lambda: client.images.image2image(
            model=MODEL, prompt="x", source_url=tiny_png(64, 64), source_weight=0.5, extra_headers=_fault("503")
        ),
        lambda: client.images.edit(
            model="step-image-edit-2", prompt="x", image=tiny_png(64, 64), extra_headers=_fault("503")
        ),
    ]
    for call in calls:
        stepfun_emulator.reset()
        with pytest.raises(openai.InternalServerError):
            call()
        assert _seen(stepfun_emulator, 4)["requests"] == 4


# --- the SDK's own endpoints go through the same loop ------------------------------------------


def test_an_inherited_openai_endpoint_is_retried_by_the_same_policy() -> None:
    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        if len(sent) < 3:
            return httpx2.Response(503, json={"error": {"message": "busy", "type": "server_error"}})
        return httpx2.Response(200, json={"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    waits = Waits()
    client = StepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        retry_policy=waits.policy(max_retries=5),
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )

    models = client.models.list()

    assert [m.id for m in models] == [MODEL]
    assert len(sent) == 3 and len(waits) == 2
    assert {r.headers["x-stainless-retry-count"] for r in sent} == {"0"}, "the SDK itself never retried"


def test_an_inherited_endpoint_that_does_not_exist_is_not_retried(stepfun_emulator: Emulator) -> None:
    client = _client(stepfun_emulator, Waits())

    with pytest.raises(openai.NotFoundError):
        client.models.list()

    assert _seen(stepfun_emulator, 1)["requests"] == 1


# --- Retry-After ---------------------------------------------------------------------------------


@pytest.mark.stepfun_emulator(retry_after=7)
@pytest.mark.parametrize("kind", ["503", "429"])
def test_retry_after_from_the_server_sets_the_wait(stepfun_emulator: Emulator, kind: str) -> None:
    waits = Waits()
    client = _client(stepfun_emulator, waits, max_retries=3)

    with pytest.raises(openai.APIStatusError):
        client.images.generate(model=MODEL, prompt="x", extra_headers=_fault(kind))

    assert waits == [7.0, 7.0, 7.0]


@pytest.mark.stepfun_emulator(retry_after=7)
async def test_async_retry_after_sets_the_wait(stepfun_emulator: Emulator) -> None:
    waits = Waits()
    client = _async_client(stepfun_emulator, waits, max_retries=2)

    with pytest.raises(openai.InternalServerError):
        await client.images.generate(model=MODEL, prompt="x", extra_headers=_fault("503"))

    assert waits == [7.0, 7.0]
    await client.close()


def _answer_503_then_ok(headers: dict[str, str]) -> Callable[[httpx2.Request], httpx2.Response]:
    sent: list[httpx2.Request] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        if len(sent) == 1:
            return httpx2.Response(503, json={"error": {"message": "busy", "type": "server_error"}}, headers=headers)
        return httpx2.Response(200, json=ok_body())

    return answer


def _wait_for(headers: dict[str, str], **policy: Any) -> float:
    waits = Waits()
    client = StepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        retry_policy=waits.policy(**policy),
        http_client=httpx2.Client(transport=httpx2.MockTransport(_answer_503_then_ok(headers))),
    )
    client.images.generate(model=MODEL, prompt="x")
    assert len(waits) == 1
    return waits[0]


def test_retry_after_in_every_form() -> None:
    assert _wait_for({"Retry-After": "2"}) == 2.0
    assert _wait_for({"Retry-After": "0.25"}) == 0.25
    assert _wait_for({"Retry-After": "0"}) == 0.0
    assert _wait_for({"retry-after-ms": "1500"}) == 1.5
    assert _wait_for({"retry-after-ms": "1500", "Retry-After": "9"}) == 1.5, "milliseconds win"
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28.0 <= _wait_for({"Retry-After": in_30s}) <= 30.0
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _wait_for({"Retry-After": past}) == 0.0


def test_retry_after_is_capped_by_the_policy() -> None:
    assert _wait_for({"Retry-After": "3600"}, max_retry_after=20.0, max_total_time=None) == 20.0
    assert _wait_for({"Retry-After": "3600"}) == 60.0


def test_unreadable_retry_after_falls_back_to_backoff() -> None:
    wait = _wait_for({"Retry-After": "soon"}, initial_backoff=0.5)
    assert 0.0 <= wait <= 0.5


def test_a_wait_past_the_total_time_is_not_started() -> None:
    waits = Waits()
    always_busy = httpx2.MockTransport(
        lambda request: httpx2.Response(
            503, json={"error": {"message": "busy", "type": "server_error"}}, headers={"Retry-After": "10"}
        )
    )
    client = StepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        retry_policy=waits.policy(max_retries=5, max_total_time=5.0),
        http_client=httpx2.Client(transport=always_busy),
    )

    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model=MODEL, prompt="x")

    assert caught.value.attempts == 1, "waiting 10 s would cross the 5 s budget: give up now"  # type: ignore[attr-defined]
    assert waits == []


def test_backoff_without_retry_after_is_exponential_with_full_jitter(stepfun_emulator: Emulator) -> None:
    waits = Waits()
    client = _client(stepfun_emulator, waits, max_retries=6, initial_backoff=0.5, max_backoff=4.0)

    with pytest.raises(openai.InternalServerError):
        client.images.generate(model=MODEL, prompt="x", extra_headers=_fault("500"))

    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(waits) == len(ceilings)
    assert all(0.0 <= wait <= ceiling for wait, ceiling in zip(waits, ceilings, strict=True))
    assert len(set(waits)) > 1, "jittered, not a fixed schedule"


# --- the 429 figures ---------------------------------------------------------------------------


def test_a_rate_limit_error_says_how_close_to_the_limit(stepfun_emulator: Emulator) -> None:
    client = _client(stepfun_emulator, Waits(), max_retries=0)

    with pytest.raises(StepFunRateLimitError) as caught:
        client.images.generate(model=MODEL, prompt="x", extra_headers=_fault("429"))

    assert (caught.value.kind, caught.value.current, caught.value.limit) == ("rpm", 11, 10)
    assert caught.value.trace_id == _image_requests(stepfun_emulator, 1)[0]["trace_id"]  # type: ignore[attr-defined]


@pytest.mark.stepfun_emulator(concurrency=1)
def test_a_real_concurrency_limit_is_retried_until_a_slot_frees(stepfun_emulator: Emulator) -> None:
    import threading

    client = _client(stepfun_emulator, Waits(), max_retries=0)
    with stepfun_emulator.hold():
        first = threading.Thread(target=lambda: client.images.generate(model=MODEL, prompt="first"))
        first.start()
        stepfun_emulator.wait_in_flight(1)
        with pytest.raises(StepFunRateLimitError) as caught:
            client.images.generate(model=MODEL, prompt="second")
    first.join()
    assert (caught.value.kind, caught.value.current, caught.value.limit) == ("concurrency", 2, 1)


# --- the stable seed ---------------------------------------------------------------------------


def test_every_attempt_of_a_call_asks_for_the_same_image(stepfun_emulator: Emulator) -> None:
    script = ScriptedFaults("reset", "malformed", "empty-data", "bad-b64")
    client = _client(stepfun_emulator, Waits(), http_client=script.http_client())

    result = client.images.generate(model=MODEL, prompt="a lighthouse")

    seeds = [entry["seed"] for entry in _image_requests(stepfun_emulator, 5)]
    assert len(seeds) == 5
    assert len(set(seeds)) == 1, "the client chose the seed once, before the first attempt"
    assert result.data[0].seed == seeds[0], "data[].seed still reports the server's value"


def test_every_attempt_carries_the_seed_even_when_the_server_rejects_it(stepfun_emulator: Emulator) -> None:
    import json

    script = ScriptedFaults("503", "429", "502")
    client = _client(stepfun_emulator, Waits(), http_client=script.http_client())

    result = client.images.generate(model=MODEL, prompt="a lighthouse")

    sent_seeds = {json.loads(request.content)["seed"] for request in script.sent}
    assert len(script.sent) == 4
    assert sent_seeds == {result.data[0].seed}


def test_a_given_seed_is_kept_and_a_zero_seed_is_replaced(stepfun_emulator: Emulator) -> None:
    client = _client(stepfun_emulator, Waits())

    assert client.images.generate(model=MODEL, prompt="x", seed=1234).data[0].seed == 1234
    chosen = client.images.generate(model=MODEL, prompt="x", seed=0).data[0].seed
    assert chosen is not None and 1 <= chosen <= 2147483647


def test_stable_seed_can_be_turned_off(stepfun_emulator: Emulator) -> None:
    import json

    script = ScriptedFaults("malformed", "malformed", "malformed")
    client = _client(stepfun_emulator, Waits(), stable_seed=False, http_client=script.http_client())

    client.images.generate(model=MODEL, prompt="a lighthouse")

    assert all("seed" not in json.loads(request.content) for request in script.sent)
    seeds = [entry["seed"] for entry in _image_requests(stepfun_emulator, 4)]
    assert len(set(seeds)) == 4, "without it, each attempt is a different picture"


async def test_async_attempts_share_one_seed(stepfun_emulator: Emulator) -> None:
    script = ScriptedFaults("reset", "malformed")
    client = _async_client(stepfun_emulator, Waits(), http_client=script.async_http_client())

    result = await client.images.generate(model=MODEL, prompt="a lighthouse")

    seeds = {entry["seed"] for entry in _image_requests(stepfun_emulator, 3)}
    assert seeds == {result.data[0].seed}
    await client.close()


# --- timeouts ----------------------------------------------------------------------------------


def test_timeouts_suit_image_generation() -> None:
    assert DEFAULT_TIMEOUT.connect == 10.0, "a dead host fails fast"
    assert DEFAULT_TIMEOUT.read == 180.0, "a slow image is waited for"
    assert StepFun(api_key="k").timeout == DEFAULT_TIMEOUT
    assert StepFun(api_key="k", timeout=30.0).timeout == 30.0
    assert StepFun(api_key="k").with_options(timeout=12.0).timeout == 12.0


@pytest.mark.stepfun_emulator(slow_seconds=3.0)
def test_a_per_call_timeout_cuts_a_slow_answer_and_is_retried(stepfun_emulator: Emulator) -> None:
    waits = Waits()
    client = _client(stepfun_emulator, waits, max_retries=1)

    with pytest.raises(openai.APITimeoutError) as caught:
        client.images.generate(model=MODEL, prompt="x", timeout=0.2, extra_headers=_fault("slow"))

    assert caught.value.attempts == 2  # type: ignore[attr-defined]
    assert len(waits) == 1
    stepfun_emulator.wait_in_flight(2)  # both abandoned attempts are still being "generated"
    time.sleep(0.05)
    assert stepfun_emulator.stats()["in_flight"] == 2, "and no third one was sent"


@pytest.mark.stepfun_emulator(slow_seconds=3.0)
async def test_with_options_timeout_applies_to_async_calls(stepfun_emulator: Emulator) -> None:
    client = _async_client(stepfun_emulator, Waits(), max_retries=0).with_options(timeout=0.2)

    with pytest.raises(openai.APITimeoutError):
        await client.images.generate(model=MODEL, prompt="x", extra_headers=_fault("slow"))
    await client.close()


# --- logging -----------------------------------------------------------------------------------


def test_each_retry_is_logged_with_attempt_wait_status_and_trace_id(
    stepfun_emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    client = _client(stepfun_emulator, Waits(), max_retries=2)
    caplog.set_level(logging.WARNING, logger="stepfun_openai")

    with pytest.raises(openai.InternalServerError):
        client.images.generate(model=MODEL, prompt="a secret prompt", extra_headers=_fault("503"))

    trace_ids = [entry["trace_id"] for entry in _image_requests(stepfun_emulator, 3)]
    records = [r for r in caplog.records if r.name == "stepfun_openai"]
    assert [r.levelno for r in records] == [logging.WARNING] * 3
    retries, gave_up = records[:2], records[2]
    for number, record in enumerate(retries, start=1):
        assert record.stepfun_attempt == number  # type: ignore[attr-defined]
        assert record.stepfun_status == 503  # type: ignore[attr-defined]
        assert record.stepfun_trace_id == trace_ids[number - 1]  # type: ignore[attr-defined]
        message = record.getMessage()
        assert f"attempt {number} of 3" in message
        assert "HTTP 503" in message and trace_ids[number - 1] in message
        assert f"retrying in {record.stepfun_wait:.2f}s" in message  # type: ignore[attr-defined]
    assert "gave up after 3 attempts" in gave_up.getMessage()
    assert trace_ids[2] in gave_up.getMessage()
    for record in records:
        assert _key_absent(record, stepfun_emulator.api_key)
        assert "a secret prompt" not in record.getMessage()


def test_an_image_payload_is_never_logged(stepfun_emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    client = _client(stepfun_emulator, Waits(), max_retries=1)
    caplog.set_level(logging.WARNING, logger="stepfun_openai")

    with pytest.raises(MalformedResponseError) as caught:
        client.images.generate(model=MODEL, prompt="x", response_format="b64_json", extra_headers=_fault("bad-b64"))

    records = [r for r in caplog.records if r.name == "stepfun_openai"]
    assert len(records) == 2
    assert caught.value.excerpt, "the exception keeps an excerpt for the developer"
    for record in records:
        assert "b64_json" not in record.getMessage()
        assert caught.value.excerpt not in record.getMessage()


def _key_absent(record: logging.LogRecord, key: str) -> bool:
    return key not in record.getMessage() and key not in repr(record.__dict__)


# --- soak (a small version of benchmarks/soak.py) -----------------------------------------------


@pytest.mark.slow
def test_soak_every_call_succeeds_within_the_policy() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak", path)
    assert spec is not None and spec.loader is not None
    soak = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(soak)

    report = soak.run(calls=150, concurrency=16, fault_seed=7)

    assert report["failed"] == {}, report
    assert report["succeeded"] == 150
    assert report["max_attempts"] <= report["policy_max_attempts"]
    assert report["http_requests"] == report["emulator_requests"], "every attempt is seen by the server once"
    assert report["mean_attempts"] > 1.2, "the faults were really injected"


def test_the_sdks_low_level_per_request_max_retries_sets_this_calls_policy(stepfun_emulator: Emulator) -> None:
    waits = Waits()
    client = _client(stepfun_emulator, waits, max_retries=5)

    with pytest.raises(openai.InternalServerError):
        client.post(
            "/images/generations",
            cast_to=httpx2.Response,
            body={"model": MODEL, "prompt": "x"},
            options={"max_retries": 1, "headers": {"X-Emulator-Fault": "503"}},
        )

    assert _seen(stepfun_emulator, 2)["requests"] == 2
    assert len(waits) == 1
