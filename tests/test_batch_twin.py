"""``batch.run`` sends through an async twin of the user's client, with every setting of it."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import httpx2
import pytest

from stepfun_openai import AsyncStepFun, ImageFitWarning, RetryPolicy, StepFun, batch
from stepfun_openai.batch._runner import _async_twin
from stepfun_openai.emulator import Emulator

KEY = "sk-batch-twin"
TAG = {"X-Request-Tag": "team-art"}
"""A default header the emulator records with each request."""


def gif_job(tmp_path: Path) -> batch.Job:
    """An image2image job whose source only ``fit=True`` makes acceptable (image2image takes png/jpeg)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (300, 300), (200, 40, 40)).save(buffer, format="GIF")
    source = tmp_path / "red.gif"
    source.write_bytes(buffer.getvalue())
    return batch.Job.image2image("a red square", source_url=source, source_weight=0.5, size="256x256")


def test_batch_run_with_a_stepfun_sends_with_its_settings(stepfun_emulator: Emulator, tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url, fit=True, default_headers=TAG, max_retries=1)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ImageFitWarning)  # says what fit changed
        result = batch.run(
            [gif_job(tmp_path), "a cat"], out=tmp_path / "out", client=client, concurrency=1, rpm=None, progress=False
        )

    assert result.succeeded == 2, "fit=True reached the twin: the GIF was converted"
    assert [event["tag"] for event in stepfun_emulator.requests()] == ["team-art", "team-art"]
    assert not client._client.is_closed  # the user's client is untouched
    client.close()


def test_batch_run_with_an_async_stepfun_uses_a_pool_of_its_own(stepfun_emulator: Emulator, tmp_path: Path) -> None:
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url, default_headers=TAG, validate=False)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the SDK's own HTTP client: nothing is lost, nothing to say
        result = batch.run(["a cat"], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    assert result.succeeded == 1 and stepfun_emulator.requests()[0]["tag"] == "team-art"
    assert not client._client.is_closed, "the twin's pool was closed, not the client's"


@pytest.mark.parametrize(("cls", "http_cls"), [(StepFun, httpx2.Client), (AsyncStepFun, httpx2.AsyncClient)])
def test_batch_run_says_once_that_it_cannot_use_the_clients_own_http_client(
    cls: type[StepFun | AsyncStepFun],
    http_cls: type[httpx2.Client | httpx2.AsyncClient],
    stepfun_emulator: Emulator,
    tmp_path: Path,
) -> None:
    users = http_cls()
    client = cls(api_key=KEY, base_url=stepfun_emulator.base_url, http_client=users, default_headers=TAG)

    with pytest.warns(UserWarning) as caught:
        result = batch.run(["a cat"], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    (warning,) = caught
    assert f"your {cls.__name__}'s http_client ({http_cls.__name__})" in str(warning.message)
    assert "await batch.arun(..., client=AsyncStepFun(http_client=httpx2.AsyncClient(...)))" in str(warning.message)
    assert result.succeeded == 1 and stepfun_emulator.requests()[0]["tag"] == "team-art"
    assert not users.is_closed  # the user's client is theirs to close


@pytest.mark.parametrize("cls", [StepFun, AsyncStepFun])
def test_the_batchs_twin_keeps_every_setting_with_connections_of_its_own(cls: type[StepFun | AsyncStepFun]) -> None:
    policy = RetryPolicy(max_retries=4, initial_backoff=0.1)
    client = cls(
        api_key=KEY, retry_policy=policy, validate=False, stable_seed=False, fit=True, timeout=7.0, default_headers=TAG
    )

    twin = _async_twin(client)

    assert type(twin) is AsyncStepFun and twin is not client and twin._client is not client._client
    assert (twin.retry_policy, twin.validate, twin.stable_seed, twin.fit) == (policy, False, False, True)
    assert (twin.timeout, twin._custom_headers, twin.api_key) == (7.0, TAG, KEY)
    assert not twin._http_client_is_users, "a later twin of it has nothing to warn about"


def test_batch_run_with_a_stepfun_whose_key_comes_from_a_callable(stepfun_emulator: Emulator, tmp_path: Path) -> None:
    asked: list[str] = []

    def key() -> str:
        asked.append(KEY)
        return KEY

    client = StepFun(api_key=key, base_url=stepfun_emulator.base_url)  # type: ignore[arg-type]

    result = batch.run(["a cat", "a dog"], out=tmp_path, client=client, concurrency=2, rpm=None, progress=False)

    assert result.succeeded == 2 and len(asked) == 2  # the twin asks the callable, once a request
