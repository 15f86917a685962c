"""Saving many images into one folder at once, file modes, short reprs, refused downloads."""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import os
import stat
import threading
from pathlib import Path
from typing import Any

import httpx2
import pytest

from stepfun_openai import AsyncStepFun, ImageDownloadError, ImageURLExpiredError, StepFun, StepFunImage
from stepfun_openai._download import download

SIZES = ["256x256", "512x512", "768x768", "1024x1024"]


async def four_foxes(client: AsyncStepFun) -> list[StepFunImage]:
    """Same prompt and seed at four sizes: four different images wanting the same file name."""
    responses = await asyncio.gather(
        *(client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size=size) for size in SIZES)
    )
    images = [response.images[0] for response in responses]
    await asyncio.gather(*(image.aread() for image in images))
    return images


async def test_concurrent_asaves_into_one_folder_keep_every_image(
    async_stepfun_client: AsyncStepFun, tmp_path: Path
) -> None:
    images = await four_foxes(async_stepfun_client)
    paths = await asyncio.gather(*(image.asave(tmp_path) for image in images))
    assert sorted(p.name for p in paths) == ["a-fox-7-2.png", "a-fox-7-3.png", "a-fox-7-4.png", "a-fox-7.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths), "no temp file is left"
    for image, path in zip(images, paths, strict=True):
        assert path.stat().st_size > len(image.read()), "each name holds its own image (plus metadata)"
        assert image.to_pil().size == tuple(int(n) for n in (image.metadata["size"]).split("x"))


def test_eight_threads_saving_into_one_folder_write_eight_files(stepfun_client: StepFun, tmp_path: Path) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size="256x256").images[0]
    image.read()
    barrier = threading.Barrier(8)
    paths: list[Path] = []

    def save() -> None:
        barrier.wait()
        paths.append(image.save(tmp_path))

    threads = [threading.Thread(target=save) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(paths)) == 8
    assert len(list(tmp_path.iterdir())) == 8


def test_without_hard_links_names_are_still_claimed_exclusively(
    stepfun_client: StepFun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size="256x256").images[0]
    image.read()

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    names = [image.save(tmp_path).name for _ in range(3)]
    assert names == ["a-fox-7.png", "a-fox-7-2.png", "a-fox-7-3.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert all((tmp_path / name).read_bytes().startswith(b"\x89PNG") for name in names)


def test_a_crash_while_claiming_a_name_leaves_nothing_behind(
    stepfun_client: StepFun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size="256x256").images[0]
    image.read()
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        image.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_saving_to_an_explicit_file_name_still_replaces_it(stepfun_client: StepFun, tmp_path: Path) -> None:
    target = tmp_path / "fox.png"
    target.write_bytes(b"old")
    image = stepfun_client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size="256x256").images[0]
    assert image.save(target) == target and target.read_bytes().startswith(b"\x89PNG")


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("into_directory", [True, False])
def test_saved_files_get_the_usual_mode_from_the_umask(
    stepfun_client: StepFun, tmp_path: Path, into_directory: bool
) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size="256x256").images[0]
    old = os.umask(0o027)
    try:
        path = image.save(tmp_path if into_directory else tmp_path / "fox.png")
        other = tmp_path / "other.txt"
        other.write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 == stat.S_IMODE(other.stat().st_mode)


# --- repr and Jupyter's text/plain -----------------------------------------------------------


def test_jupyter_text_is_short_and_repr_does_not_dump_the_image(stepfun_client: StepFun) -> None:
    image = stepfun_client.images.generate(
        model="step-2x-large", prompt="a fox", seed=7, size="1024x1024", response_format="b64_json"
    ).images[0]
    assert image.b64_json is not None and len(image.b64_json) > 10_000
    text = image._repr_mimebundle_()["text/plain"]
    assert text.startswith("<StepFunImage 1024x1024 png, seed 7, b64_json ") and text.endswith(" kB>")
    assert len(text) < 100
    assert len(repr(image)) < 400 and image.b64_json[:40] in repr(image) and "chars" in repr(image)
    assert len(image.b64_json) > 10_000, "the field itself is untouched"
    assert image.model_dump()["b64_json"] == image.b64_json


def test_jupyter_text_of_a_url_result_names_the_url_without_its_signature(stepfun_client: StepFun) -> None:
    image = stepfun_client.images.generate(model="step-2x-large", prompt="a fox", seed=7, size="256x256").images[0]
    text = image._repr_mimebundle_()["text/plain"]
    assert text.startswith("<StepFunImage seed 7, url http://127.0.0.1:") and "Signature" not in text


# --- a refused download that has not expired -------------------------------------------------


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


def test_a_403_before_the_expiry_is_a_refusal_not_an_expiry() -> None:
    signed = _stamp(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    url = f"https://res.example/a.png?X-Tos-Date={signed}&X-Tos-Expires=3600&X-Tos-Signature=tampered"
    client = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(403)))
    with pytest.raises(ImageDownloadError) as caught:
        download(url, client=client)
    assert not isinstance(caught.value, ImageURLExpiredError)
    message = str(caught.value)
    assert "refused" in message and "signature invalid or access denied" in message
    assert "expire" not in message and "tampered" not in message
    assert caught.value.status_code == 403


def test_a_403_after_the_expiry_still_says_expired() -> None:
    signed = _stamp(dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2))
    url = f"https://res.example/a.png?X-Tos-Date={signed}&X-Tos-Expires=3600&X-Tos-Signature=s"
    client = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(403)))
    with pytest.raises(ImageURLExpiredError, match="expired at"):
        download(url, client=client)
