"""A batch job is prepared once and that request is sent on every attempt, through the client's own
sender; outcomes are committed by one writer; the pool is as large as the concurrency."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from stepfun_openai import AsyncStepFun, RetryPolicy, _requests, batch
from stepfun_openai._compat import connection_limit
from stepfun_openai.batch._runner import _client_for
from stepfun_openai.emulator import Emulator

from .conftest import tiny_png
from .test_batch_retries import Waits, fault_seed

KEY = "sk-batch-request-path"
Factory = Callable[..., Emulator]


def test_a_job_is_prepared_once_and_its_request_sent_again_on_each_retry(
    stepfun_emulator_factory: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = stepfun_emulator_factory(faults="503=0.5", fault_seed=fault_seed(True, True, False))
    source = tmp_path / "cat.png"
    source.write_bytes(tiny_png(512, 512))
    prepared: list[Any] = []
    encoded: list[str] = []
    original_prepare, original_encode = _requests.prepare, _requests.encode_inline

    def counting_prepare(*args: Any, **kwargs: Any) -> Any:
        request = original_prepare(*args, **kwargs)
        prepared.append(request)
        return request

    def counting_encode(value: Any, **kwargs: Any) -> Any:
        encoded.append(kwargs["param"])
        return original_encode(value, **kwargs)

    monkeypatch.setattr(_requests, "prepare", counting_prepare)
    monkeypatch.setattr(_requests, "encode_inline", counting_encode)
    waits = Waits()
    client = AsyncStepFun(api_key=KEY, base_url=emu.base_url, retry_policy=RetryPolicy(async_sleep=waits.sleep))
    job = batch.Job.image2image("a cat", source_url=source, source_weight=0.5, size="256x256")
    result = batch.run([job], out=tmp_path / "out", client=client, concurrency=1, rpm=None, progress=False)

    assert result.succeeded == 1 and result.requests == 3 == emu.stats()["requests"]
    assert len(prepared) == 1 and encoded == ["source_url"]  # once, although sent three times
    (line,) = [json.loads(text) for text in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert line["seed"] == prepared[0].seed  # the seed the client fixed is the one recorded
    assert line["attempts"] == 3


async def test_the_batch_sends_with_the_users_client_itself_with_its_settings(
    stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    seen: list[httpx2.Request] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(request)

    http_client = httpx2.AsyncClient(event_hooks={"request": [hook]})
    client = AsyncStepFun(
        api_key=KEY, base_url=stepfun_emulator.base_url, http_client=http_client, default_headers={"X-Team": "art"}
    )
    result = await batch.arun(["a cat", "a dog"], out=tmp_path, client=client, concurrency=2, rpm=None, progress=False)
    assert result.succeeded == 2
    assert len(seen) == 2 and all(request.headers["X-Team"] == "art" for request in seen)
    assert not http_client.is_closed  # the user's client is theirs to close
    await client.close()


async def test_a_concurrency_above_the_sdks_pool_gets_a_pool_that_large(stepfun_emulator: Emulator) -> None:
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url, fit=True, max_retries=3)
    assert connection_limit(client._client) == 1000  # the SDK's default
    sender, owned = await _client_for(client, 2000)
    assert sender is owned and sender is not client
    assert connection_limit(sender._client) == 2000
    assert (sender.fit, sender.retry_policy.max_retries, sender.base_url) == (True, 3, client.base_url)
    small, not_owned = await _client_for(client, 64)
    assert small is client and not_owned is None
    await sender.close()
    await client.close()


async def test_a_users_small_pool_is_kept_and_a_warning_says_it_caps_the_batch(stepfun_emulator: Emulator) -> None:
    http_client = httpx2.AsyncClient(limits=httpx2.Limits(max_connections=10))
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url, http_client=http_client)
    with pytest.warns(UserWarning, match=r"pool holds 10 connections, fewer than the batch's concurrency \(50\)"):
        sender, owned = await _client_for(client, 50)
    assert sender is client and owned is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await _client_for(client, 10)
    await client.close()


async def test_finished_jobs_are_committed_in_groups_with_one_manifest_fsync_each(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepfun_openai.batch import _manifest

    syncs: list[int] = []
    original = _manifest.Manifest.append_lines

    def counting(self: Any, text: str) -> None:
        syncs.append(text.count("\n"))
        original(self, text)

    monkeypatch.setattr(_manifest.Manifest, "append_lines", counting)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    jobs = [{"prompt": f"a cat {i}", "model": "step-2x-large", "size": "256x256"} for i in range(40)]
    result = await batch.arun(jobs, out=tmp_path, client=client, concurrency=20, rpm=None, progress=False)
    await client.close()
    assert result.succeeded == 40 and sum(syncs) == 40
    assert len(syncs) < 40  # jobs finished together share a commit
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 40 and all((tmp_path / json.loads(line)["file"]).is_file() for line in lines)


async def test_files_are_created_off_the_event_loop(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a file waits for the journal while a sync runs (about 130 us here instead of 19):
    every file system call of a commit is the writer thread's, none the event loop's."""
    import threading

    from stepfun_openai.batch import _writer

    threads: list[str] = []
    original = _writer.write_temps

    def recording(files: Any) -> Any:
        threads.append(threading.current_thread().name)
        return original(files)

    monkeypatch.setattr(_writer, "write_temps", recording)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    jobs = [{"prompt": f"a cat {i}", "model": "step-2x-large", "size": "256x256"} for i in range(12)]
    result = await batch.arun(jobs, out=tmp_path, client=client, concurrency=4, rpm=None, progress=False)
    await client.close()
    assert result.succeeded == 12 and threads
    assert all(name.startswith("stepfun-batch-sync") for name in threads), threads


async def test_a_write_error_stops_the_batch_and_is_raised_and_no_line_vouches_for_a_missing_file(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepfun_openai.batch import _writer

    def disk_full(temps: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_writer, "sync_temps", disk_full)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    jobs = [{"prompt": f"a cat {i}", "model": "step-2x-large", "size": "256x256"} for i in range(10)]
    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(
            batch.arun(jobs, out=tmp_path, client=client, concurrency=2, rpm=None, progress=False), timeout=30
        )
    await client.close()
    manifest = tmp_path / "manifest.jsonl"
    assert not manifest.exists() or manifest.read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "manifest.jsonl") == []  # no temp left


def test_the_sdk_default_pool_is_what_connection_limit_reads() -> None:
    assert connection_limit(openai.DefaultAsyncHttpxClient()) == 1000
    assert connection_limit(object()) is None


def test_run_with_a_sync_client_keeps_its_settings_fit_included(stepfun_emulator: Emulator, tmp_path: Path) -> None:
    import io
    import warnings as _warnings

    from PIL import Image

    from stepfun_openai import StepFun

    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 40, 40)).save(buffer, format="GIF")  # image2image takes png/jpeg
    source = tmp_path / "red.gif"
    source.write_bytes(buffer.getvalue())
    job = batch.Job.image2image("a red square", source_url=source, source_weight=0.5, size="256x256")

    plain = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    refused = batch.run([job], out=tmp_path / "plain", client=plain, concurrency=1, rpm=None, progress=False)
    assert refused.invalid == 1

    fitting = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url, fit=True)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # ImageFitWarning says what fit changed
        fitted = batch.run([job], out=tmp_path / "fit", client=fitting, concurrency=1, rpm=None, progress=False)
    assert fitted.succeeded == 1  # the batch ran on a twin that kept fit=True
    assert not fitting._client.is_closed  # the user's client is untouched
    fitting.close()
    plain.close()


def _answer(b64: str) -> httpx2.MockTransport:
    body = json.dumps({"created": 1, "data": [{"b64_json": b64, "seed": 7, "finish_reason": "success"}]}).encode()
    return httpx2.MockTransport(lambda request: httpx2.Response(200, content=body, headers={"x-trace-id": "t"}))


async def test_base64_broken_in_the_middle_fails_its_job_not_the_batch(tmp_path: Path) -> None:
    import base64 as b64

    png = tiny_png(64, 64) + b"\x00" * 30_000  # long enough that the middle is not decoded by the check
    text = b64.b64encode(png).decode()
    middle = len(text) // 2 // 4 * 4
    broken = text[:middle] + "!!!!" + text[middle + 4 :]
    waits = Waits()
    client = AsyncStepFun(
        api_key=KEY,
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.AsyncClient(transport=_answer(broken)),
        retry_policy=RetryPolicy(max_retries=2, async_sleep=waits.sleep),
    )
    result = await batch.arun(
        [{"prompt": "a cat", "model": "step-2x-large", "size": "256x256"}],
        out=tmp_path, client=client, concurrency=1, rpm=None, progress=False,
    )  # fmt: skip
    await client.close()
    # Found when the answer arrives: a malformed response, retried per the policy, then failed.
    assert result.failed == 1 and result.failures == {"MalformedResponseError": 1} and result.requests == 3
    (line,) = [json.loads(text) for text in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert line["status"] == "failed" and "not valid base64" in line["error"]["message"]
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.jsonl"]  # no image written


def test_a_batch_decodes_each_image_once_and_the_client_checks_without_decoding(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    decoded: list[int] = []
    scanned: list[int] = []
    original_decode, original_scan = base64.b64decode, _requests.is_base64

    def counting_decode(text: Any, *args: Any, **kwargs: Any) -> bytes:
        data = original_decode(text, *args, **kwargs)
        if len(data) > 10_000:  # whole images, not the few header bytes sniffed
            decoded.append(len(data))
        return data

    def counting_scan(text: str) -> bool:
        scanned.append(len(text))
        return original_scan(text)

    monkeypatch.setattr(base64, "b64decode", counting_decode)
    monkeypatch.setattr(_requests, "is_base64", counting_scan)
    job = {"prompt": "a cat", "model": "step-2x-large", "size": "512x512"}
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    result = batch.run([job], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)
    # One pass over the image: decoded while checked (read() then has the bytes), never scanned.
    assert result.succeeded == 1 and len(decoded) == 1 and scanned == []

    decoded.clear()
    response = client.to_sync().images.generate(**job, response_format="b64_json")
    assert decoded == [] and len(scanned) == 1  # the client scans the base64 without decoding it
    response.images[0].read()
    assert len(decoded) == 1
