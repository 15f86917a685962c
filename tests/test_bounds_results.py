"""Bounds on what comes back: server answers, result images, provenance, manifests, files on disk.

Each test is a hostile or broken input and what the user sees instead of a crash, a hang, a blown
memory or a lost file: an answer that is not a usable image is a ``MalformedResponseError`` (a
batch records the job as failed, never done); a PNG's text is inflated under a budget; Pillow
decodes at most ``MAX_DECODE_PIXELS``; a manifest survives any line; saving never replaces a file
the package did not write.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stepfun_openai import (
    AsyncStepFun,
    ImageDownloadError,
    MalformedResponseError,
    RetryPolicy,
    StepFun,
    StepFunImage,
    StepFunValidationError,
    _png,
    _requests,
    batch,
    read_metadata,
)
from stepfun_openai._download import DEFAULT_MAX_BYTES, download
from stepfun_openai._fit import MAX_DECODE_PIXELS
from stepfun_openai._metadata import METADATA_KEYWORD, embed_png_metadata, sidecar_path
from stepfun_openai.batch._manifest import MAX_LINE_BYTES, Manifest
from stepfun_openai.emulator import Emulator

from ._hostile import run_bounded, within
from ._mock import tiny_png

KEY = "sk-bounds-results"
MODEL = "step-2x-large"
NO_RETRIES = RetryPolicy(max_retries=0)
PNG = tiny_png()
JOB = {"id": "cat", "prompt": "a cat", "model": MODEL, "size": "256x256"}


def _body(*items: dict[str, Any]) -> bytes:
    return json.dumps({"created": 1723595647, "data": list(items)}).encode()


def _item(b64: str, **extra: Any) -> dict[str, Any]:
    return {"b64_json": b64, "seed": 7, "finish_reason": "success", **extra}


def _transport(*bodies: bytes) -> tuple[httpx2.MockTransport, list[int]]:
    """Answers ``bodies`` in turn (the last one again after that); the list counts requests."""
    sent: list[int] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        sent.append(1)
        body = bodies[min(len(sent), len(bodies)) - 1]
        return httpx2.Response(200, content=body, headers={"content-type": "application/json", "x-trace-id": "t-9"})

    return httpx2.MockTransport(handle), sent


def _client(*bodies: bytes, policy: RetryPolicy = NO_RETRIES) -> tuple[StepFun, list[int]]:
    transport, sent = _transport(*bodies)
    client = StepFun(
        api_key=KEY,
        base_url="http://127.0.0.1:9/v1",
        retry_policy=policy,
        http_client=httpx2.Client(transport=transport),
    )
    return client, sent


def _async_client(*bodies: bytes, policy: RetryPolicy = NO_RETRIES) -> tuple[AsyncStepFun, list[int]]:
    transport, sent = _transport(*bodies)
    client = AsyncStepFun(
        api_key=KEY,
        base_url="http://127.0.0.1:9/v1",
        retry_policy=policy,
        http_client=httpx2.AsyncClient(transport=transport),
    )
    return client, sent


def _jpeg(width: int = 16, height: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _broken_in_the_middle(data: bytes) -> str:
    text = _b64(data)
    middle = len(text) // 2 // 4 * 4
    return text[:middle] + "!!!!" + text[middle + 4 :]


LONG_PNG = tiny_png(64, 64) + b"\x00" * 30_000  # long enough that only its ends are decoded by the check


# --- 1. every answer that is not a usable image is a MalformedResponseError --------------------

UNUSABLE = {
    "empty": ("", "b64_json is empty"),
    "not an image": (_b64(b"<html>an error page, base64 encoded</html>"), "is not a PNG, JPEG, WebP or GIF"),
    "zero bytes of padding": ("====", "not valid base64"),
    "broken in the middle": (_broken_in_the_middle(LONG_PNG), "not valid base64"),
    "not base64 at all": ("%%not*base64%%", "not valid base64"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
def test_an_unusable_b64_json_is_a_malformed_response_error(case: str) -> None:
    b64, reason = UNUSABLE[case]
    client, sent = _client(_body(_item(b64)))

    with pytest.raises(MalformedResponseError) as caught:
        client.images.generate(model=MODEL, prompt="a cat")

    assert reason in caught.value.reason and caught.value.status_code == 200 and caught.value.trace_id == "t-9"
    assert len(sent) == 1


@pytest.mark.parametrize("case", sorted(UNUSABLE))
async def test_an_unusable_b64_json_is_malformed_for_the_async_client_and_the_old_image_field(case: str) -> None:
    b64, reason = UNUSABLE[case]
    client, _ = _async_client(_body({"image": b64, "seed": 7, "finish_reason": "success"}))

    with pytest.raises(MalformedResponseError, match="data\\[0\\]") as caught:
        await client.images.generate(model=MODEL, prompt="a cat")

    assert reason in caught.value.reason
    await client.close()


def test_a_b64_json_larger_than_the_cap_is_refused_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_MAX_BYTES == 50 * 1024 * 1024  # the documented cap (inline results and downloads)
    monkeypatch.setattr(_requests, "DEFAULT_MAX_BYTES", len(LONG_PNG) - 1)
    decoded: list[int] = []
    real = base64.b64decode
    monkeypatch.setattr(base64, "b64decode", lambda data, *a, **k: decoded.append(len(data)) or real(data, *a, **k))
    client, _ = _client(_body(_item(_b64(LONG_PNG))))

    with pytest.raises(MalformedResponseError, match=f"decodes to {len(LONG_PNG):,} bytes, more than the"):
        client.images.generate(model=MODEL, prompt="a cat")

    assert decoded == [], "nothing was decoded"


def test_an_image_exactly_at_the_cap_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_requests, "DEFAULT_MAX_BYTES", len(LONG_PNG))
    client, _ = _client(_body(_item(_b64(LONG_PNG))))

    assert client.images.generate(model=MODEL, prompt="a cat").images[0].read() == LONG_PNG


NESTED = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_a_body_nested_too_deeply_is_a_malformed_response_error() -> None:
    client, _ = _client(NESTED)

    with pytest.raises(MalformedResponseError, match="nested too deeply"):
        within(10, lambda: client.images.generate(model=MODEL, prompt="a cat"))


async def test_a_body_nested_too_deeply_is_malformed_for_the_async_client_too() -> None:
    client, _ = _async_client(b"[" * 100_000 + b"]" * 100_000)

    with pytest.raises(MalformedResponseError, match="nested too deeply"):
        await client.images.generate(model=MODEL, prompt="a cat")
    await client.close()


def test_a_body_nested_too_deeply_is_malformed_when_a_raw_response_is_parsed() -> None:
    client, _ = _client(NESTED)
    raw = client.images.with_raw_response.generate(model=MODEL, prompt="a cat")

    with pytest.raises(MalformedResponseError, match="nested too deeply"):
        raw.parse()


def test_an_unusable_answer_is_retried_per_the_policy_and_a_good_one_then_used() -> None:
    client, sent = _client(
        _body(_item("")),
        _body(_item(_b64(b"not an image"))),
        _body(_item(_b64(PNG))),
        policy=RetryPolicy(max_retries=3, sleep=lambda seconds: None),
    )

    assert client.images.generate(model=MODEL, prompt="a cat").images[0].read() == PNG
    assert len(sent) == 3


def test_retry_malformed_false_gives_up_at_the_first_unusable_answer() -> None:
    client, sent = _client(_body(_item("")), policy=RetryPolicy(retry_malformed=False, sleep=lambda seconds: None))

    with pytest.raises(MalformedResponseError, match="empty"):
        client.images.generate(model=MODEL, prompt="a cat")
    assert len(sent) == 1


def test_a_content_filtered_image_may_carry_an_empty_b64_json() -> None:
    client, _ = _client(_body(_item("", finish_reason="content_filtered")))

    image = client.images.generate(model=MODEL, prompt="a cat").images[0]

    assert image.content_filtered
    with pytest.raises(ValueError, match="content_filtered"):
        image.read()


def test_an_emulator_bad_b64_fault_is_malformed(stepfun_emulator: Emulator) -> None:
    client = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url, retry_policy=NO_RETRIES)

    with pytest.raises(MalformedResponseError, match="not valid base64"):
        client.images.generate(model=MODEL, prompt="a cat", extra_headers={"X-Emulator-Fault": "bad-b64"})


@pytest.mark.parametrize("b64", ["", _b64(b"plain text, not an image"), "%%%%"])
def test_a_hand_built_image_with_unusable_b64_json_refuses_to_read_or_save(b64: str, tmp_path: Path) -> None:
    image = StepFunImage(b64_json=b64)

    with pytest.raises(ValueError, match=r"not a PNG, JPEG, WebP or GIF|not valid base64"):
        image.save(tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == [], "no 0-byte or junk file"


@pytest.mark.parametrize("body", [b"", b"<html><body>Access denied</body></html>"])
def test_a_download_that_is_not_an_image_is_refused(body: bytes) -> None:
    client = httpx2.Client(transport=httpx2.MockTransport(lambda request: httpx2.Response(200, content=body)))

    with pytest.raises(ImageDownloadError, match="not a PNG, JPEG, WebP or GIF image"):
        download("https://res.example/a.png?X-Tos-Signature=secret", client=client)


# --- the batch: such a job is failed, never done ------------------------------------------------


@pytest.mark.parametrize("b64", ["", _b64(b"not an image"), _broken_in_the_middle(LONG_PNG)])
async def test_a_batch_job_answered_with_an_unusable_image_is_failed_not_done(b64: str, tmp_path: Path) -> None:
    client, sent = _async_client(_body(_item(b64)), policy=RetryPolicy(max_retries=1, async_sleep=_no_wait))

    result = await batch.arun([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    assert result.succeeded == 0 and result.failed == 1 and result.failures == {"MalformedResponseError": 1}
    assert len(sent) == 2, "retried per the client's policy"
    (line,) = [json.loads(text) for text in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert line["status"] == "failed" and line["error"]["type"] == "MalformedResponseError" and line["file"] is None
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.jsonl"], "no image file, not even an empty one"
    await client.close()

    good, _ = _async_client(_body(_item(_b64(PNG))))
    again = await batch.arun([JOB], out=tmp_path, client=good, concurrency=1, rpm=None, progress=False)
    assert again.generated == 1 and again.succeeded == 1, "resuming runs the failed job again"
    (written,) = again.files
    assert written.parent == tmp_path and written.read_bytes().startswith(PNG[:16])
    await good.close()


async def _no_wait(seconds: float) -> None:
    return None


def test_a_batch_against_the_emulators_bad_b64_fault_records_failed_jobs(
    stepfun_emulator_factory: Callable[..., Emulator], tmp_path: Path
) -> None:
    emulator = stepfun_emulator_factory(faults="bad-b64=1")
    client = StepFun(api_key=emulator.api_key, base_url=emulator.base_url, retry_policy=NO_RETRIES)

    result = batch.run([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    assert result.failed == 1 and result.failures == {"MalformedResponseError": 1} and result.succeeded == 0
    assert [path.name for path in tmp_path.iterdir()] == ["manifest.jsonl"]


# --- 2. decoder caps: PNG text, Pillow -----------------------------------------------------------


def _ztxt_bomb(chunks: int, inflated: int = _png.MAX_TEXT_BYTES) -> bytes:
    """A PNG with ``chunks`` zTXt chunks of distinct keywords, each inflating to ``inflated`` bytes."""
    packed = zlib.compress(b"A" * inflated, 9)
    bombs = b"".join(_png.build_chunk(b"zTXt", f"k{n}".encode() + b"\x00\x00" + packed) for n in range(chunks))
    return PNG[:33] + bombs + PNG[33:]


def test_many_zip_bomb_text_chunks_are_read_within_a_memory_cap(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_ztxt_bomb(1500))  # 1.5 GB of text once inflated, in about 1.5 MB
    source = textwrap.dedent(
        f"""
        from stepfun_openai import _png
        from stepfun_openai._metadata import read_metadata
        data = open({str(path)!r}, "rb").read()
        texts = _png.text_chunks(data)
        assert sum(map(len, texts.values())) <= _png.MAX_TEXT_TOTAL, sum(map(len, texts.values()))
        assert read_metadata({str(path)!r}) is None
        print("ok", len(texts))
        """
    )

    done = run_bounded(source, seconds=30, memory_mb=400)

    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-2000:]


def test_text_chunks_stop_at_the_chunk_count_and_the_total_budget() -> None:
    many = PNG[:33] + b"".join(_png.build_chunk(b"tEXt", f"k{n}\x00v".encode()) for n in range(1000)) + PNG[33:]
    assert len(_png.text_chunks(many)) == _png.MAX_TEXT_CHUNKS

    texts = _png.text_chunks(_ztxt_bomb(10, inflated=_png.MAX_TEXT_BYTES))
    assert sum(map(len, texts.values())) <= _png.MAX_TEXT_TOTAL and len(texts) == 4


def test_our_own_metadata_is_still_read_after_a_bomb() -> None:
    png = embed_png_metadata(_ztxt_bomb(50), {"prompt": "a cat"})

    meta = read_metadata(png)

    assert meta is not None and meta["prompt"] == "a cat"


def test_metadata_nested_too_deeply_reads_as_none(tmp_path: Path) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    png = _png.set_text(PNG, METADATA_KEYWORD, nested)
    (tmp_path / "a.jpg").write_bytes(_jpeg())
    (tmp_path / "a.jpg.json").write_text(nested)

    assert read_metadata(png) is None
    assert read_metadata(tmp_path / "a.jpg") is None


def _sparse_png(path: Path, head: bytes, kind: bytes, size: int, tail: bytes = b"") -> None:
    """``head``, then a ``kind`` chunk of ``size`` zero bytes (sparse: no disk used), then ``tail`` and IEND."""
    with open(path, "wb") as handle:
        handle.write(head + struct.pack(">I", size) + kind)
        handle.truncate(len(head) + 8 + size)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\x00" * 4 + tail + _png.build_chunk(b"IEND", b""))


def test_reading_metadata_walks_a_large_png_instead_of_reading_it(tmp_path: Path) -> None:
    size = 300 * 1024 * 1024
    tagged = embed_png_metadata(PNG, {"prompt": "a cat"})
    _sparse_png(tmp_path / "large.png", tagged[: tagged.index(b"IDAT") - 4], b"IDAT", size)
    keyword = METADATA_KEYWORD.encode() + b"\x00\x00\x00\x00\x00"
    huge_text = PNG[:33] + struct.pack(">I", size) + b"iTXt" + keyword  # our keyword, 300 MB of text
    with open(tmp_path / "huge-text.png", "wb") as handle:
        handle.write(huge_text)
        handle.truncate(len(huge_text) - len(keyword) + size + 4)
        handle.seek(0, os.SEEK_END)
        handle.write(_png.build_chunk(b"IEND", b""))
    (tmp_path / "big.jpg").write_bytes(_jpeg())
    with open(tmp_path / "big.jpg.json", "wb") as handle:
        handle.truncate(size)

    tracemalloc.start()
    try:
        meta = read_metadata(tmp_path / "large.png")
        huge = read_metadata(tmp_path / "huge-text.png")
        sidecar = read_metadata(tmp_path / "big.jpg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert meta is not None and meta["prompt"] == "a cat" and huge is None and sidecar is None
    assert peak < 8 * 1024 * 1024, f"{peak:,} bytes allocated reading the metadata of 300 MB files"


def _zero_png(width: int, height: int) -> bytes:
    """A real grey PNG of ``width`` x ``height``, compressed row by row (never whole in memory)."""
    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        _png.SIGNATURE
        + _png.build_chunk(b"IHDR", header)
        + _png.build_chunk(b"IDAT", idat)
        + _png.build_chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int, padding: int = 3) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``, behind ``padding`` 64 KB
    APP segments (past what the sniff reads), so only Pillow's header read sees the size."""
    data = _jpeg()
    app = b"\xff\xe9" + struct.pack(">H", 65535) + b"\x00" * 65533
    data = data[:2] + app * padding + data[2:]
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


BOMB = _zero_png(9000, 9000)  # 81 million pixels (below Pillow's own warning) in a few hundred kB


def test_to_pil_refuses_a_decompression_bomb_before_decoding() -> None:
    assert MAX_DECODE_PIXELS == 8192 * 8192
    client, _ = _client(_body(_item(_b64(BOMB))))
    image = client.images.generate(model=MODEL, prompt="a cat").images[0]

    with pytest.raises(ValueError, match="to_pil\\(\\): image 0 is png of 9000x9000 = 81,000,000 pixels"):
        within(5, image.to_pil)


@pytest.mark.parametrize("claim", [(20000, 20000), (9000, 9000)])
def test_to_pil_refuses_a_size_only_pillow_sees(claim: tuple[int, int]) -> None:
    image = StepFunImage(b64_json=_b64(_jpeg_claiming(*claim)))

    with pytest.raises(ValueError, match=r"to_pil\(\): image 0 is .* pixels|more pixels than Pillow allows"):
        image.to_pil()


def test_to_pil_of_a_bomb_stays_within_a_memory_cap() -> None:
    source = textwrap.dedent(
        f"""
        import base64
        from stepfun_openai import StepFunImage
        image = StepFunImage(b64_json={_b64(BOMB)!r})
        try:
            image.to_pil()
        except ValueError as exc:
            print("refused", exc)
        else:
            print("decoded")
        """
    )

    done = run_bounded(source, seconds=30, memory_mb=220)

    assert done.stdout.startswith("refused"), (done.stdout, done.stderr[-2000:])


def test_fit_refuses_an_input_over_the_pixel_cap_naming_the_parameter() -> None:
    client, sent = _client(_body(_item(_b64(PNG))))
    client = client.with_options(fit=True)

    with pytest.raises(StepFunValidationError, match="fit=True decodes images of at most 67,108,864") as caught:
        within(5, lambda: client.images.image2image(model=MODEL, prompt="a cat", source_url=BOMB, source_weight=0.5))

    assert caught.value.param == "source_url" and "9000x9000" in str(caught.value)
    assert sent == [], "refused before any request"


# --- 3. manifests survive any line ---------------------------------------------------------------


def _write_manifest(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


ODD_LINES = [
    b'{"id": "x", "status": 5}',
    b'{"id": "x", "status": null}',
    b'{"id": "x", "status": ["succeeded"]}',
    b'{"id": "x", "status": {"a": 1}}',
    b'{"id": 7, "status": "succeeded"}',
    b"[1, 2, 3]",
    b"42",
    b'"succeeded"',
    b"null",
    b"\xff\xfe not utf-8 \x80",
    b'{"id": "x", "status": "succe',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"id": "big", "status": "succeeded", "pad": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}',
]


@pytest.mark.parametrize("line", ODD_LINES, ids=range(len(ODD_LINES)))
def test_a_manifest_line_of_any_shape_is_skipped_and_counted(line: bytes, tmp_path: Path) -> None:
    (tmp_path / "done.png").write_bytes(PNG)
    good = json.dumps({"id": "done", "status": "succeeded", "file": "done.png"}).encode()
    manifest = Manifest(tmp_path / "manifest.jsonl")
    _write_manifest(manifest.path, [good, line, b"", good])

    finished = within(10, manifest.finished)

    assert finished == {"done": ("succeeded", None)}
    assert manifest.skipped_lines == 1


def test_a_manifest_ending_in_invalid_utf8_opens_for_appending(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.path.write_bytes(b'{"id": "a", "status": "failed"}\n\xff\xfe')

    manifest.open()
    error = {"type": "BadRequestError", "status": 400}  # StepFun's 400: final (a local refusal is re-checked)
    manifest.append({"id": "b", "status": "invalid", "error": error, "note": "lone \ud800 surrogate"})
    manifest.close()

    assert manifest.finished() == {"b": ("invalid", "BadRequestError")} and manifest.skipped_lines == 1
    assert manifest.read()["b"]["note"] == "lone \ud800 surrogate"


async def test_resume_reports_skipped_lines_in_the_result_and_summary(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.jsonl"
    _write_manifest(manifest, ODD_LINES)
    client, _ = _async_client(_body(_item(_b64(PNG))))

    result = await batch.arun([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    assert result.succeeded == 1 and result.unreadable_lines == len(ODD_LINES)
    assert f"manifest: {len(ODD_LINES)} unreadable line(s) skipped" in result.summary()
    await client.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_EVENTISH = st.fixed_dictionaries(
    {"id": _JSON | st.sampled_from(["done", "gone", "new"]), "status": _JSON | st.sampled_from(["succeeded", "x"])},
    optional={"file": _JSON, "files": _JSON, "error": _JSON},
)
_GARBAGE_LINE = st.one_of(
    st.binary(max_size=40).map(lambda data: data.replace(b"\n", b"")),
    _JSON.map(lambda value: json.dumps(value).encode()),
    _EVENTISH.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


def _oracle_skipped(line: bytes) -> bool:
    """Whether the manifest should skip (and count) this line: an independent statement of the rule."""
    if not line.strip():
        return False
    try:
        value = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return True
    return not (isinstance(value, dict) and isinstance(value.get("id"), str) and isinstance(value.get("status"), str))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(_GARBAGE_LINE, max_size=12))
def test_any_manifest_lines_resume_the_planted_jobs_and_count_the_rest(garbage: list[bytes], tmp_path: Path) -> None:
    (tmp_path / "done.png").write_bytes(PNG)
    planted = [
        json.dumps({"id": "done", "status": "succeeded", "file": "done.png"}).encode(),
        json.dumps({"id": "gone", "status": "succeeded", "file": "deleted.png"}).encode(),
        json.dumps({"id": "blocked", "status": "blocked", "error": {"type": "ContentBlockedError"}}).encode(),
    ]
    manifest = Manifest(tmp_path / "manifest.jsonl")
    _write_manifest(manifest.path, garbage + planted)

    finished = manifest.finished()

    assert finished == {"done": ("succeeded", None), "blocked": ("blocked", "ContentBlockedError")}
    assert manifest.skipped_lines == sum(map(_oracle_skipped, garbage))
    assert manifest.missing_files >= 1  # "gone" at least; a garbage line may name a missing file too


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(_GARBAGE_LINE, min_size=1, max_size=6))
def test_a_batch_resumes_over_any_manifest_lines(
    garbage: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    out = tmp_path_factory.mktemp("resume")
    _write_manifest(out / "manifest.jsonl", garbage)

    result = _run_batch(out, PNG)

    assert result.succeeded == 1 and result.unreadable_lines == sum(map(_oracle_skipped, garbage))
    again = _run_batch(out, PNG)
    assert again.skipped == 1 and again.generated == 0 and again.unreadable_lines == result.unreadable_lines


async def test_a_succeeded_job_whose_file_was_deleted_runs_again(tmp_path: Path) -> None:
    client, sent = _async_client(_body(_item(_b64(PNG))))
    first = await batch.arun([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)
    assert first.generated == 1
    (tmp_path / "a-cat-cat.png").unlink()

    again = await batch.arun([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    assert again.generated == 1 and again.skipped == 0 and again.missing_files == 1 and len(sent) == 2
    assert (tmp_path / "a-cat-cat.png").is_file()
    assert "1 succeeded job(s) run again: their image file was missing" in again.summary()
    third = await batch.arun([JOB], out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)
    assert third.skipped == 1 and third.missing_files == 0 and len(sent) == 2
    await client.close()


# --- 3. saving never replaces a file the package did not write -----------------------------------

FOREIGN = b'{"mine": "a note of the user, not a sidecar"}'


def _run_batch(out: Path, image: bytes) -> batch.BatchResult:
    """One batch of ``JOB`` whose answer carries ``image`` (a mock server, so ``arun``)."""

    async def main() -> batch.BatchResult:
        client, _ = _async_client(_body(_item(_b64(image))))
        async with client:
            return await batch.arun([JOB], out=out, client=client, concurrency=1, rpm=None, progress=False)

    return asyncio.run(main())


def _jpeg_image() -> StepFunImage:
    client, _ = _client(_body(_item(_b64(_jpeg()))))
    return client.images.generate(model=MODEL, prompt="a cat", seed=7).images[0]


def test_saving_a_jpeg_into_a_folder_never_overwrites_an_unrelated_json(tmp_path: Path) -> None:
    image = _jpeg_image()
    (tmp_path / "a-cat-7.jpg.json").write_bytes(FOREIGN)

    path = image.save(tmp_path)

    assert path.name == "a-cat-7-2.jpg" and (tmp_path / "a-cat-7.jpg.json").read_bytes() == FOREIGN
    assert json.loads(sidecar_path(path).read_text())["prompt"] == "a cat"
    assert not (tmp_path / "a-cat-7.jpg").exists(), "a name is given back when its sidecar's is taken"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-cat-7-2.jpg", "a-cat-7-2.jpg.json", "a-cat-7.jpg.json"]


def test_saving_a_jpeg_under_a_name_refuses_to_replace_an_unrelated_json(tmp_path: Path) -> None:
    image = _jpeg_image()
    (tmp_path / "cat.jpg.json").write_bytes(FOREIGN)

    with pytest.raises(FileExistsError, match=r"cat\.jpg\.json, which this package did not write"):
        image.save(tmp_path / "cat.jpg")

    assert (tmp_path / "cat.jpg.json").read_bytes() == FOREIGN and not (tmp_path / "cat.jpg").exists()
    image.save(tmp_path / "cat.jpg", metadata=False)  # nothing of ours next to it: allowed
    assert (tmp_path / "cat.jpg.json").read_bytes() == FOREIGN


def test_saving_again_under_a_name_replaces_its_own_sidecar(tmp_path: Path) -> None:
    image = _jpeg_image()
    image.save(tmp_path / "cat.jpg")

    image.save(tmp_path / "cat.jpg")

    assert read_metadata(tmp_path / "cat.jpg") is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.jpg", "cat.jpg.json"]


def _jpeg_batch(out: Path) -> batch.BatchResult:
    return _run_batch(out, _jpeg())


def test_a_batch_never_overwrites_an_unrelated_file_or_sidecar(tmp_path: Path) -> None:
    (tmp_path / "a-cat-cat.jpg.json").write_bytes(FOREIGN)
    (tmp_path / "a-cat-cat-2.jpg").write_bytes(b"the user's own photo")

    result = _jpeg_batch(tmp_path)

    assert result.succeeded == 1 and [path.name for path in result.files] == ["a-cat-cat-3.jpg"]
    assert (tmp_path / "a-cat-cat.jpg.json").read_bytes() == FOREIGN
    assert (tmp_path / "a-cat-cat-2.jpg").read_bytes() == b"the user's own photo"
    line = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[-1])
    assert line["file"] == "a-cat-cat-3.jpg"
    assert read_metadata(tmp_path / "a-cat-cat-3.jpg") is not None


def test_a_batch_replaces_its_own_file_of_the_same_job(tmp_path: Path) -> None:
    first = _jpeg_batch(tmp_path)
    (tmp_path / "manifest.jsonl").unlink()  # the line is lost (say, a crash before it was written)

    again = _jpeg_batch(tmp_path)

    assert [path.name for path in first.files] == [path.name for path in again.files] == ["a-cat-cat.jpg"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-cat-cat.jpg", "a-cat-cat.jpg.json", "manifest.jsonl"]


def test_a_png_batch_never_overwrites_an_unrelated_png(tmp_path: Path) -> None:
    (tmp_path / "a-cat-cat.png").write_bytes(tiny_png(3, 3))  # a PNG without our provenance
    result = _run_batch(tmp_path, PNG)

    assert [path.name for path in result.files] == ["a-cat-cat-2.png"]
    assert (tmp_path / "a-cat-cat.png").read_bytes() == tiny_png(3, 3)


def test_the_cli_never_overwrites_an_unrelated_file_in_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepfun_openai.cli import main

    for name in ("STEPFUN_API_KEY", "STEP_API_KEY", "STEPFUN_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    taken = tmp_path / "a-cat-7.png"  # the name the CLI makes for this prompt and seed
    taken.write_bytes(b"the user's file")

    code = main(["generate", "a cat", "--seed", "7", "--emulator", "--out", f"{tmp_path}/"])

    assert code == 0 and taken.read_bytes() == b"the user's file"
    assert f"wrote {tmp_path / 'a-cat-7-2.png'}" in capsys.readouterr().out
    assert read_metadata(tmp_path / "a-cat-7-2.png") is not None
