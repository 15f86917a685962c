"""Deadlines that hold and secrets that stay: calls, downloads and batches against hostile servers.

Each server here is scripted on loopback (``tests/_hostile.py``); each call runs under ``within()``,
so a bound that stops holding fails its test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from stepfun_openai import AsyncStepFun, RetryPolicy, StepFun, batch
from stepfun_openai._download import ImageDownloadError, adownload, download
from tests._hostile import (
    HostileServer,
    Script,
    answer,
    hang_up,
    hostile_server,
    stall,
    trickle_body,
    trickle_headers,
    within,
)
from tests._mock import tiny_png

KEY = "sk-bounds-secret-0123456789"
JOB = {"prompt": "a lighthouse", "model": "step-2x-large", "size": "256x256"}


def _clients(url: str, **options: Any) -> tuple[StepFun, AsyncStepFun]:
    return StepFun(api_key=KEY, base_url=url + "/v1", **options), AsyncStepFun(
        api_key=KEY, base_url=url + "/v1", **options
    )


def _generate_sync(client: StepFun) -> Exception:
    with pytest.raises(openai.APIConnectionError) as caught:
        client.images.generate(prompt="a fox", model="step-2x-large")
    return caught.value


def _generate_async(client: AsyncStepFun) -> Exception:
    async def go() -> None:
        await client.images.generate(prompt="a fox", model="step-2x-large")

    with pytest.raises(openai.APIConnectionError) as caught:
        asyncio.run(go())
    return caught.value


@pytest.mark.parametrize("script", [trickle_headers(0.3), trickle_body(0.3), stall()], ids=["headers", "body", "stall"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_max_total_time_bounds_a_call_however_slowly_the_server_sends(script: Script, mode: str) -> None:
    # One byte every 0.3 s never trips a 1 s read timeout; only a total deadline ends the call.
    with hostile_server(script) as server:
        sync, async_ = _clients(server.url, timeout=1, retry_policy=RetryPolicy(max_total_time=2))
        started = time.monotonic()
        exc = within(20, lambda: _generate_sync(sync) if mode == "sync" else _generate_async(async_))
        took = time.monotonic() - started

    assert isinstance(exc, openai.APITimeoutError)
    assert took < 3.5, f"the call took {took:.1f} s past max_total_time=2"
    assert server.requests >= 2  # retried within the budget, then stopped
    assert "timed out" in str(exc) and f"127.0.0.1:{server.port}" in str(exc)
    assert f"{exc.attempts} attempts" in str(exc)  # type: ignore[attr-defined]


def test_the_attempt_timeout_bounds_each_attempt_as_a_whole() -> None:
    with hostile_server(trickle_body(0.2)) as server:
        client = StepFun(
            api_key=KEY,
            base_url=server.url + "/v1",
            timeout=1,
            retry_policy=RetryPolicy(max_retries=1, max_total_time=None),
        )
        started = time.monotonic()
        exc = within(20, lambda: _generate_sync(client))
        took = time.monotonic() - started

    assert isinstance(exc, openai.APITimeoutError)
    assert exc.attempts == 2 == server.requests  # type: ignore[attr-defined]
    assert took < 3.5, f"two attempts of timeout=1 took {took:.1f} s"


def test_a_well_behaved_slow_answer_within_the_deadline_still_succeeds() -> None:
    body = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(tiny_png()).decode(), "seed": 1}]})

    def slow_but_in_time(conn: Any, request: bytes) -> None:
        time.sleep(0.5)
        answer(200, body.encode())(conn, request)

    with hostile_server(slow_but_in_time) as server:
        client = StepFun(
            api_key=KEY, base_url=server.url + "/v1", timeout=2, retry_policy=RetryPolicy(max_total_time=3)
        )
        response = within(20, lambda: client.images.generate(prompt="a fox", model="step-2x-large"))
    assert response.images[0].read() == tiny_png()


@pytest.mark.parametrize("script", [trickle_headers(0.3), trickle_body(0.3)], ids=["headers", "body"])
def test_a_download_has_a_total_deadline(script: Script) -> None:
    with hostile_server(script) as server:
        url = server.url + "/image.png"
        started = time.monotonic()
        with pytest.raises(ImageDownloadError, match="ReadTimeout"):
            within(20, lambda: download(url, timeout=1))
        assert time.monotonic() - started < 2.5

        started = time.monotonic()
        with pytest.raises(ImageDownloadError, match="ReadTimeout"):
            within(20, lambda: asyncio.run(adownload(url, timeout=1)))
        assert time.monotonic() - started < 2.5


def test_a_refused_connection_is_not_retried_for_long_and_the_error_names_the_host() -> None:
    with hostile_server(hang_up()) as server:
        port = server.port
    # Nothing listens there any more: every connection is refused.
    client = StepFun(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1")
    started = time.monotonic()
    exc = within(30, lambda: _generate_sync(client))
    took = time.monotonic() - started

    assert took < RetryPolicy().max_refused_time + 2
    assert not isinstance(exc, openai.APITimeoutError)
    attempts = exc.attempts  # type: ignore[attr-defined]
    assert attempts >= 2
    assert f"could not reach http://127.0.0.1:{port}/v1/images/generations" in str(exc)
    assert f"{attempts} attempts" in str(exc) and "Connection refused" in str(exc)


def _png_answer() -> bytes:
    return json.dumps(
        {"created": 1, "data": [{"b64_json": base64.b64encode(tiny_png(16, 16)).decode(), "seed": 7}]}
    ).encode()


def test_a_batch_caps_a_servers_huge_retry_after_by_the_policy(tmp_path: Path) -> None:
    answers = iter(
        [answer(429, {"error": {"message": "too many requests", "type": "rate_limit"}}, {"Retry-After": "999999"})]
    )

    def script(conn: Any, request: bytes) -> None:
        next(answers, answer(200, _png_answer()))(conn, request)

    with hostile_server(script) as server:
        client = AsyncStepFun(
            api_key=KEY, base_url=server.url + "/v1", retry_policy=RetryPolicy(max_retry_after=0.5, max_total_time=30)
        )
        started = time.monotonic()
        result = within(
            30, lambda: batch.run([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)
        )
        took = time.monotonic() - started

    assert result.succeeded == 1 and server.requests == 2
    assert took < 10, f"a Retry-After of 999999 s held the batch for {took:.1f} s"


# --- secrets: what the server says never carries the key on ------------------------------------------


def _echoing_server(status: int) -> HostileServer:
    if status == 200:  # not JSON at all: a MalformedResponseError with a body excerpt
        return HostileServer(answer(200, b"<html>your key " + KEY.encode() + b"</html>", {"X-Echo": KEY}))
    body = {"error": {"message": f"key {KEY} is not valid here", "type": "invalid_request_error", "key": KEY}}
    return HostileServer(answer(status, body, {"X-Echo": KEY}))


@pytest.mark.parametrize("status", [400, 401, 429, 500, 200])
def test_a_key_echoed_by_the_server_never_reaches_the_exception_or_the_logs(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    server = _echoing_server(status)
    try:
        client = StepFun(api_key=KEY, base_url=server.url + "/v1", retry_policy=RetryPolicy(max_retries=1))
        caplog.set_level(logging.DEBUG)
        with pytest.raises(openai.OpenAIError) as caught:
            within(20, lambda: client.images.generate(prompt="a fox", model="step-2x-large"))
    finally:
        server.close()
    exc = caught.value
    # The package's own log records (httpcore's DEBUG traces print raw headers: a third party's).
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("stepfun_openai"))
    assert bool(ours) == (status in (429, 500, 200))  # a retried failure is logged (names and numbers)
    seen = [str(exc), repr(exc), repr(exc.__dict__.get("body")), ours]
    response = getattr(exc, "response", None)
    if response is not None:
        seen += [response.text, repr(dict(response.headers))]
    assert "[REDACTED]" in str(exc) + repr(exc.__dict__.get("body"))
    for text in seen:
        assert KEY not in text


def test_a_key_echoed_by_the_server_never_reaches_the_batch_manifest_or_summary(tmp_path: Path) -> None:
    body = {"error": {"message": f"key {KEY} is not valid here", "type": "invalid_request_error"}}
    with hostile_server(answer(400, body)) as server:
        client = AsyncStepFun(api_key=KEY, base_url=server.url + "/v1")
        result = within(
            30, lambda: batch.run([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)
        )

    manifest = (tmp_path / "manifest.jsonl").read_text()
    assert result.invalid == 1 and "[REDACTED]" in manifest
    assert KEY not in manifest and KEY not in str(result) and KEY not in repr(result)


def test_a_key_echoed_by_the_server_never_reaches_the_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepfun_openai.cli import main

    body = {"error": {"message": f"key {KEY} is not valid here", "type": "invalid_request_error"}}
    monkeypatch.setenv("STEPFUN_API_KEY", KEY)
    with hostile_server(answer(400, body, {"X-Echo": KEY})) as server:
        code = within(30, lambda: main(["generate", "a fox", "--base-url", server.url + "/v1", "--debug"]))
    captured = capsys.readouterr()
    assert code == 1 and "[REDACTED]" in captured.err
    assert KEY not in captured.out + captured.err  # even with --debug's traceback
