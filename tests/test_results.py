"""Images coming out: read, save (atomically), open in Pillow, show in Jupyter, download safely."""

from __future__ import annotations

import base64
import datetime as dt
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image

from stepfun_openai import (
    AsyncStepFun,
    ContentFilteredError,
    ImageDownloadError,
    ImageURLExpiredError,
    StepFun,
    StepFunImage,
    read_metadata,
)
from stepfun_openai._download import download
from stepfun_openai.emulator import Emulator

from ._mock import tiny_png

Factory = Callable[..., Emulator]


def generate(client: StepFun, **kwargs: Any) -> StepFunImage:
    params = {"model": "step-2x-large", "prompt": "A cat in a hat!", "size": "256x256", "seed": 1234, **kwargs}
    return client.images.generate(**params).data[0]  # type: ignore[index]


# --- bytes -------------------------------------------------------------------------------------


def test_a_url_result_and_a_b64_result_give_the_same_png(stepfun_client: StepFun) -> None:
    by_url = generate(stepfun_client)
    by_b64 = generate(stepfun_client, response_format="b64_json")
    assert by_url.url and by_b64.b64_json
    assert by_url.read().startswith(b"\x89PNG") and by_b64.read().startswith(b"\x89PNG")
    assert by_url.to_pil().tobytes() == by_b64.to_pil().tobytes(), "the same pixels either way"


async def test_async_read_and_save(async_stepfun_client: AsyncStepFun, tmp_path: Path) -> None:
    response = await async_stepfun_client.images.generate(model="step-2x-large", prompt="a cat", size="256x256", seed=7)
    image = response.images[0]
    data = await image.aread()
    path = await image.asave(tmp_path / "cat.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    assert Image.open(path).size == (256, 256) and data.startswith(b"\x89PNG")
    assert [p.name for p in await response.asave_all(tmp_path / "all")] == ["a-cat-7.png"]


# --- saving ------------------------------------------------------------------------------------


def test_save_into_a_directory_names_the_file_from_seed_and_prompt(stepfun_client: StepFun, tmp_path: Path) -> None:
    image = generate(stepfun_client)
    path = image.save(f"{tmp_path}/out/")
    assert path == tmp_path / "out" / "a-cat-in-a-hat-1234.png"
    again = image.save(tmp_path / "out")
    assert again.name == "a-cat-in-a-hat-1234-2.png", "an existing file is never overwritten"
    assert image.save(tmp_path / "new").parent == tmp_path / "new", "a name without a suffix is a directory"


def test_save_to_a_file_name_and_save_all(stepfun_client: StepFun, tmp_path: Path) -> None:
    image = generate(stepfun_client)
    assert image.save(tmp_path / "deep" / "er" / "mine.png") == tmp_path / "deep" / "er" / "mine.png"
    response = stepfun_client.images.generate(model="step-2x-large", prompt="一只猫", size="256x256", seed=9)
    paths = response.save_all(tmp_path / "batch")
    assert [p.name for p in paths] == ["一只猫-9.png"]


def test_a_crash_mid_write_leaves_no_file_under_the_final_name(
    stepfun_client: StepFun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = generate(stepfun_client)
    image.read()

    def crash(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="No space left"):
        image.save(tmp_path / "cat.png")
    assert list(tmp_path.iterdir()) == [], "neither the final file nor a temporary file is left"


def test_a_crash_mid_write_keeps_the_previous_file_intact(
    stepfun_client: StepFun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "cat.png"
    target.write_bytes(b"the previous image")
    image = generate(stepfun_client)
    image.read()
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        image.save(target)
    assert target.read_bytes() == b"the previous image"
    assert [p.name for p in tmp_path.iterdir()] == ["cat.png"]


# --- Pillow ------------------------------------------------------------------------------------


def test_to_pil_opens_the_image(stepfun_client: StepFun) -> None:
    picture = generate(stepfun_client, size="512x512").to_pil()
    assert picture.size == (512, 512) and picture.mode == "RGB"


def test_to_pil_without_pillow_names_the_extra(stepfun_client: StepFun, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    image = generate(stepfun_client)
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"pip install 'stepfun-openai\[pil\]'"):
        image.to_pil()


# --- Jupyter -----------------------------------------------------------------------------------


def test_a_b64_result_shows_inline_without_reencoding(stepfun_client: StepFun) -> None:
    image = generate(stepfun_client, response_format="b64_json")
    bundle = image._repr_mimebundle_()
    assert bundle["image/png"] is image.b64_json, "the server's base64 string itself, not a re-encoded copy"
    assert "text/plain" in bundle


def test_a_jpeg_b64_result_shows_as_jpeg() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    image = StepFunImage(b64_json=base64.b64encode(buffer.getvalue()).decode(), seed=1)
    assert list(image._repr_mimebundle_()) == ["image/jpeg", "text/plain"]


def test_a_url_result_shows_as_an_img_tag(stepfun_client: StepFun) -> None:
    image = generate(stepfun_client, prompt='a "quoted" <cat>')
    html = image._repr_mimebundle_()["text/html"]
    assert html.startswith('<img src="http://127.0.0.1:')
    assert "&amp;X-Tos-Expires=3600" in html and 'alt="a &quot;quoted&quot; &lt;cat&gt;"' in html


def test_a_filtered_result_shows_as_text(stepfun_emulator_factory: Factory) -> None:
    emu = stepfun_emulator_factory(filter_words=["forbidden"])
    with StepFun(api_key="k", base_url=emu.base_url) as client:
        image = generate(client, prompt="forbidden fruit")
    assert list(image._repr_mimebundle_()) == ["text/plain"]
    assert "content_filtered" in image._repr_mimebundle_()["text/plain"]


# --- content filter ----------------------------------------------------------------------------


def test_content_filtered_images_raise_and_are_skipped_when_saving(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(filter_words=["forbidden"])
    with StepFun(api_key="k", base_url=emu.base_url) as client:
        response = client.images.generate(model="step-2x-large", prompt="forbidden fruit", size="256x256")
        fine = client.images.generate(model="step-2x-large", prompt="an apple", size="256x256")
    with pytest.raises(ContentFilteredError) as caught:
        response.raise_for_content_filter()
    assert caught.value.indices == [0]
    assert fine.raise_for_content_filter() is fine
    with pytest.raises(ContentFilteredError):
        response.images[0].read()
    with pytest.warns(UserWarning, match="content_filtered"):
        assert response.save_all(tmp_path) == []


# --- URL expiry and downloads ------------------------------------------------------------------


def test_expires_at_comes_from_the_presigned_url(stepfun_client: StepFun) -> None:
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    image = generate(stepfun_client)
    assert image.expires_at is not None
    assert before + dt.timedelta(seconds=3599) <= image.expires_at <= before + dt.timedelta(seconds=3602)
    assert image.expired is False
    assert generate(stepfun_client, response_format="b64_json").expires_at is None


def test_an_expired_url_says_so_and_when(stepfun_emulator_factory: Factory) -> None:
    now = [1_790_000_000.0]
    emu = stepfun_emulator_factory(clock=lambda: now[0], url_ttl=60)
    with StepFun(api_key="k", base_url=emu.base_url) as client:
        image = generate(client)
    assert image.expires_at == dt.datetime.fromtimestamp(1_790_000_060, dt.timezone.utc)
    assert image.expired, "the emulator's clock is in the past, so the URL is already past its time"
    now[0] += 61
    with pytest.raises(ImageURLExpiredError) as caught:
        image.read()
    assert caught.value.expires_at == image.expires_at
    assert "expired at 2026-09-21 14:14:20 UTC" in str(caught.value)
    assert "X-Tos-Signature" not in str(caught.value), "the signature is not repeated in errors"


def test_the_size_cap_is_enforced(stepfun_client: StepFun) -> None:
    image = generate(stepfun_client)
    with pytest.raises(ImageDownloadError, match="larger than max_bytes=100"):
        image.read(max_bytes=100)
    assert image.read().startswith(b"\x89PNG"), "a refused download caches nothing"


def mock_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> httpx2.Client:
    return httpx2.Client(transport=httpx2.MockTransport(handler))


def test_the_size_cap_is_enforced_while_streaming_without_content_length() -> None:
    def endless(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=iter([b"x" * 1000] * 100))  # chunked: no Content-Length

    with pytest.raises(ImageDownloadError, match="larger than max_bytes=5000"):
        download("https://res.example/a.png", max_bytes=5000, client=mock_client(endless))


@pytest.mark.parametrize(
    "url",
    [
        "http://res.stepfun.com/a.png",
        "file:///etc/passwd",
        "ftp://res.stepfun.com/a.png",
        "javascript:alert(1)",
        "data:image/png;base64,AAAA",
    ],
)
def test_only_https_or_loopback_http_is_downloaded(url: str) -> None:
    def never(request: httpx2.Request) -> httpx2.Response:
        raise AssertionError("nothing may be fetched")

    with pytest.raises(ImageDownloadError, match=r"refusing|not a valid URL"):
        download(url, client=mock_client(never))


@pytest.mark.parametrize("location", ["http://res.example/b.png", "file:///etc/passwd", "ftp://x/y"])
def test_redirects_go_only_to_https(location: str) -> None:
    seen: list[str] = []

    def redirect(request: httpx2.Request) -> httpx2.Response:
        seen.append(str(request.url))
        return httpx2.Response(302, headers={"Location": location})

    with pytest.raises(ImageDownloadError, match="redirects are followed only to https"):
        download("https://res.example/a.png", client=mock_client(redirect))
    assert seen == ["https://res.example/a.png"]


def test_an_https_redirect_is_followed() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/a.png":
            return httpx2.Response(301, headers={"Location": "https://cdn.example/b.png"})
        return httpx2.Response(200, content=tiny_png())

    assert download("https://res.example/a.png", client=mock_client(handler)) == tiny_png()


def test_a_timeout_becomes_a_download_error() -> None:
    def slow(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    with pytest.raises(ImageDownloadError, match="ReadTimeout"):
        download("https://res.example/a.png?X-Tos-Signature=secret", client=mock_client(slow))


def test_a_server_error_names_the_status_not_the_signature() -> None:
    def broken(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(500)

    with pytest.raises(ImageDownloadError, match="HTTP 500") as caught:
        download("https://res.example/a.png?X-Tos-Signature=secret", client=mock_client(broken))
    assert "secret" not in str(caught.value) and caught.value.status_code == 500


# --- sidecar for non-PNG results --------------------------------------------------------------


def test_a_jpeg_result_gets_its_metadata_in_a_sidecar(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG")
    image = StepFunImage(b64_json=base64.b64encode(buffer.getvalue()).decode(), seed=77)
    image._context = {"endpoint": "generations", "model": "step-2x-large", "prompt": "a jpeg cat", "seed": 1}
    path = image.save(tmp_path)
    assert path.name == "a-jpeg-cat-77.jpg" and path.read_bytes() == buffer.getvalue()
    assert (tmp_path / "a-jpeg-cat-77.jpg.json").is_file()
    meta = read_metadata(path)
    assert meta is not None and meta["seed"] == 77 and meta["prompt"] == "a jpeg cat"
