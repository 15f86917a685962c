"""Hostile inputs on the request side: reads that must stay bounded, files that must not be opened,
and values that must end in ``StepFunValidationError`` (never a raw Python error), with and
without ``validate``.

The cases that would eat memory or block forever on a regression run under a hard cap: in a child
process with an address-space limit (``run_bounded``) or in a thread with a deadline (``within``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import textwrap
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepfun_openai import StepFun, StepFunValidationError, StyleReference, batch
from stepfun_openai._inputs import MAX_INPUT_BYTES

from ._hostile import run_bounded, within
from ._mock import PNG_B64, Recorder, tiny_png

PNG = tiny_png(64, 64)
TEN_MB = 10 * 1024 * 1024
ROOT = Path(__file__).resolve().parents[1]


def make_client(recorder: Recorder, **options: Any) -> StepFun:
    return StepFun(
        api_key="k",
        base_url="http://stepfun.test/v1",
        http_client=httpx2.Client(transport=recorder.transport),
        max_retries=0,
        **options,
    )


def send(client: StepFun, endpoint: str, image: Any, **kwargs: Any) -> Any:
    """The image as the endpoint's image parameter (``source_url`` / ``image``)."""
    if endpoint == "image2image":
        return client.images.image2image(
            model="step-2x-large", prompt="a cat", source_url=image, source_weight=0.5, **kwargs
        )
    if endpoint == "edit":
        return client.images.edit(model="step-image-edit-2", prompt="a cat", image=image, **kwargs)
    return client.images.generate(
        model="step-1x-medium", prompt="a cat", style_reference=StyleReference(image, 1.0), **kwargs
    )


ENDPOINTS = ["image2image", "edit", "style_reference"]
PARAM = {"image2image": "source_url", "edit": "image", "style_reference": "style_reference.image"}


def refused(endpoint: str, image: Any, *, validate: bool = True, **kwargs: Any) -> StepFunValidationError:
    """The error the call raised (the test fails if it sent anything or raised anything else)."""
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # step-1x-medium is retired
        with pytest.raises(StepFunValidationError) as caught:
            send(make_client(recorder, validate=validate), endpoint, image, **kwargs)
    assert recorder.requests == [], "nothing may be sent"
    assert caught.value.param == PARAM[endpoint]
    return caught.value


# --- special files: refused by name, without opening or reading them ----------------------------------

CHILD_PRELUDE = textwrap.dedent(
    """
    import json, os, sys, warnings
    from pathlib import Path
    import httpx2
    from stepfun_openai import StepFun, StepFunValidationError, StyleReference
    from tests._mock import Recorder

    warnings.simplefilter("ignore")
    out = []

    def attempt(image, endpoint, **options):
        recorder = Recorder()
        client = StepFun(api_key="k", base_url="http://stepfun.test/v1",
                         http_client=httpx2.Client(transport=recorder.transport), max_retries=0, **options)
        try:
            if endpoint == "image2image":
                client.images.image2image(model="step-2x-large", prompt="x", source_url=image, source_weight=0.5)
            elif endpoint == "edit":
                client.images.edit(model="step-image-edit-2", prompt="x", image=image)
            else:
                client.images.generate(model="step-1x-medium", prompt="x", style_reference=StyleReference(image, 1))
            out.append({"sent": len(recorder.requests)})
        except StepFunValidationError as exc:
            out.append({"param": exc.param, "message": str(exc), "sent": len(recorder.requests)})
    """
)


def run_child(body: str, *, memory_mb: int = 400, seconds: float = 60) -> list[dict[str, Any]]:
    """Run ``body`` after :data:`CHILD_PRELUDE` under a memory cap; the ``out`` list it fills."""
    source = CHILD_PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = run_bounded(source, seconds=seconds, memory_mb=memory_mb, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, f"the child died (a bound does not hold):\n{done.stderr[-2000:]}"
    results: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def test_dev_zero_is_refused_without_being_read() -> None:
    """``/dev/zero`` never ends: read, it would fill memory (the child's cap is 400 MB)."""
    results = run_child(
        """
        for validate in (True, False):
            for endpoint in ("image2image", "edit", "style_reference"):
                for image in (Path("/dev/zero"), "/dev/zero"):
                    attempt(image, endpoint, validate=validate)
        """
    )
    assert len(results) == 12
    for result in results:
        assert result["sent"] == 0
        assert "'/dev/zero'" in result["message"] and "character device" in result["message"], result


def _unblock_fifo(path: Path) -> None:
    """Let a reader stuck opening ``path`` (a regression) go: open the other end and close it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "image.png"
    os.mkfifo(path)
    yield path
    _unblock_fifo(path)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("kind", [Path, str])
def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(
    fifo: Path, endpoint: str, validate: bool, kind: Callable[[Path], Any]
) -> None:
    error = within(3, lambda: refused(endpoint, kind(fifo), validate=validate))
    assert "FIFO" in str(error) and str(fifo) in str(error)
    assert error.skippable is False


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_path_swapped_for_a_fifo_after_the_stat_is_caught_after_opening(
    fifo: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: ``stat`` saw a regular file, then the path became a FIFO. Opened non-blocking
    (so the open returns at once) and checked again with ``fstat``, it is still refused."""
    regular = os.stat(__file__)
    real_stat = os.stat
    monkeypatch.setattr(
        os, "stat", lambda path, *a, **k: regular if str(path) == str(fifo) else real_stat(path, *a, **k)
    )
    error = within(3, lambda: refused(endpoint, fifo))
    assert "FIFO" in str(error)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("kind", [Path, str])
def test_a_directory_is_refused_by_name(tmp_path: Path, endpoint: str, validate: bool, kind: Any) -> None:
    error = within(3, lambda: refused(endpoint, kind(tmp_path), validate=validate))
    assert "a regular image file; this is a directory" in str(error)
    assert error.value == str(tmp_path) and error.skippable is False


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_socket_and_dev_null_are_refused_even_without_validation(tmp_path: Path, endpoint: str) -> None:
    """``/dev/null`` reads as empty: with validate=False an empty image used to be sent."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "s"))
    try:
        error = within(3, lambda: refused(endpoint, tmp_path / "s", validate=False))
        assert "this is a socket" in str(error)
    finally:
        listener.close()
    error = within(3, lambda: refused(endpoint, Path("/dev/null"), validate=False))
    assert "this is a character device" in str(error)


# --- large files: refused from their size; reads stop at the limit ----------------------------------


@pytest.fixture
def sparse_2gib(tmp_path: Path) -> Path:
    """A 2 GiB file (sparse: it takes no disk) that starts like a PNG."""
    path = tmp_path / "huge.png"
    with path.open("wb") as handle:
        handle.write(PNG)
        handle.truncate(2 * 1024**3)
    return path


def test_a_2_gib_file_is_refused_from_its_size_without_being_read(sparse_2gib: Path) -> None:
    results = run_child(
        f"""
        huge = Path({str(sparse_2gib)!r})
        for options in ({{}}, {{"validate": False}}, {{"fit": True}}):
            for endpoint in ("image2image", "edit", "style_reference"):
                attempt(huge, endpoint, **options)
                attempt(str(huge), endpoint, **options)
        """
    )
    assert len(results) == 18
    for result in results:
        assert result["sent"] == 0 and str(sparse_2gib) in result["message"], result
    messages = [result["message"] for result in results]
    assert all(f"at most {TEN_MB} bytes (10 MB)" in text for text in messages[:6])
    assert all(f"at most {MAX_INPUT_BYTES} bytes (64 MB)" in text for text in messages[6:])


def test_a_file_larger_than_the_filesystem_says_is_read_only_to_the_limit(sparse_2gib: Path) -> None:
    """The size from ``stat``/``fstat`` is a claim: a file that grows after it (here: a filesystem
    that reports 100 bytes for 2 GiB) is caught by the bounded read, at the limit plus one."""
    results = run_child(
        f"""
        real_stat, real_fstat = os.stat, os.fstat

        def small(result):
            fields = list(result)
            fields[6] = 100  # st_size
            return os.stat_result(fields)

        os.stat = lambda *a, **k: small(real_stat(*a, **k))
        os.fstat = lambda *a, **k: small(real_fstat(*a, **k))
        huge = Path({str(sparse_2gib)!r})
        for options in ({{}}, {{"validate": False}}):
            for endpoint in ("image2image", "edit", "style_reference"):
                attempt(huge, endpoint, **options)
        """
    )
    assert len(results) == 6
    for result, limit in zip(results, [TEN_MB] * 3 + [MAX_INPUT_BYTES] * 3, strict=True):
        assert result["sent"] == 0 and f"at most {limit} bytes" in result["message"], result


def test_a_file_object_that_never_ends_is_read_only_to_the_limit() -> None:
    """A file object that yields more than it claims (its ``read`` ignores the size asked for, and
    there is always more): reading stops past the limit instead of filling memory."""
    results = run_child(
        """
        from tests._mock import tiny_png

        class Endless:
            served = 0
            def read(self, size=-1):
                chunk = tiny_png(64, 64) + bytes(8 * 1024 * 1024)  # more than asked, every time
                Endless.served += len(chunk)
                return chunk
            def tell(self):
                return 0
            def seek(self, *args):
                return 0
            def __len__(self):
                return 100

        for options in ({}, {"validate": False}):
            for endpoint in ("image2image", "edit", "style_reference"):
                Endless.served = 0
                attempt(Endless(), endpoint, **options)
                out[-1]["served"] = Endless.served
        """
    )
    assert len(results) == 6
    for result, limit in zip(results, [TEN_MB] * 3 + [MAX_INPUT_BYTES] * 3, strict=True):
        assert result["sent"] == 0 and f"at most {limit} bytes" in result["message"], result
        assert result["served"] <= limit + 9 * 1024 * 1024, "read stopped right after the limit"


class Trickle(io.RawIOBase):
    """A binary stream that gives one byte per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.position >= len(self.data):
            return 0
        buffer[0] = self.data[self.position]
        self.position += 1
        return 1


def test_a_file_object_with_short_reads_is_read_whole() -> None:
    recorder = Recorder()
    make_client(recorder).images.edit(model="step-image-edit-2", prompt="x", image=Trickle(PNG))
    assert recorder.file_part()[1] == PNG


def test_a_2_gib_buffer_is_refused_from_its_size_without_a_copy(sparse_2gib: Path) -> None:
    """A memoryview of a 2 GiB memory map: measured, not copied (a copy, or its base64, would not
    fit in the child's address space: 2 GiB for the map and 400 MB more)."""
    results = run_child(
        f"""
        import mmap
        handle = open({str(sparse_2gib)!r}, "rb")
        view = memoryview(mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ))
        for options in ({{}}, {{"validate": False}}):
            for endpoint in ("image2image", "edit", "style_reference"):
                attempt(view, endpoint, **options)
        """,
        memory_mb=2048 + 400,
    )
    assert len(results) == 6
    for result, limit in zip(results, [TEN_MB] * 3 + [MAX_INPUT_BYTES] * 3, strict=True):
        assert result["sent"] == 0 and f"<{2 * 1024**3} bytes>" in result["message"], result
        assert f"at most {limit} bytes" in result["message"], result


def test_a_memoryview_that_is_not_contiguous_is_read() -> None:
    """A strided view (every other byte) is an image as much as its bytes are (it used to raise a
    raw ``TypeError`` from ``memoryview.cast`` on the JSON endpoints)."""
    interleaved = bytearray(2 * len(PNG))
    interleaved[::2] = PNG
    recorder = Recorder()
    send(make_client(recorder), "image2image", memoryview(interleaved)[::2])
    source = json.loads(recorder.last.content)["source_url"]
    assert base64.b64decode(source.partition(",")[2]) == PNG
    send(make_client(recorder), "edit", memoryview(interleaved)[::2])
    assert recorder.file_part()[1] == PNG


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
@pytest.mark.parametrize("validate", [True, False])
def test_base64_over_the_limit_is_refused_from_its_length_before_decoding(
    prefix: str, validate: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base64 string is in memory already; its decoded size is known from its length, so it is
    refused without decoding it (which would cost three quarters of it again). With validation
    the model's 10 MB applies; without, the cap on any input (made 1 MB here)."""
    import stepfun_openai._inputs as inputs
    import stepfun_openai._requests as requests

    if not validate:
        monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", 1024 * 1024)
        monkeypatch.setattr(requests, "MAX_INPUT_BYTES", 1024 * 1024)
    decoded: list[int] = []
    real = base64.b64decode

    def counting(data: Any, *args: Any, **kwargs: Any) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(inputs.base64, "b64decode", counting)
    text = prefix + base64.b64encode(PNG + bytes(TEN_MB)).decode()
    for endpoint in ENDPOINTS:
        error = refused(endpoint, text, validate=validate)
        limit = TEN_MB if validate else 1024 * 1024
        assert f"<base64 of {len(PNG) + TEN_MB} bytes>" in str(error) and f"at most {limit} bytes" in str(error)
        assert error.skippable is validate
    assert all(size < 1024 for size in decoded), f"only a head may be decoded, not {max(decoded)} chars"


def test_a_file_of_exactly_the_limit_is_sent(tmp_path: Path) -> None:
    path = tmp_path / "limit.png"
    path.write_bytes(PNG + bytes(TEN_MB - len(PNG)))
    recorder = Recorder()
    make_client(recorder).images.edit(model="step-image-edit-2", prompt="x", image=path)
    assert len(recorder.file_part()[1]) == TEN_MB


# --- hostile values: a StepFunValidationError naming the parameter, never a raw error ----------------

HUGE = [10**400, -(10**30), 10**5000, 2**63, float("inf"), float("-inf"), float("nan"), 1e309, True]
HUGE_IDS = ["10**400", "-10**30", "10**5000", "2**63", "inf", "-inf", "nan", "1e309", "True"]


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("param", ["seed", "steps", "cfg_scale", "n"])
@pytest.mark.parametrize("value", HUGE, ids=HUGE_IDS)
def test_numbers_no_parameter_takes_are_refused_by_name(validate: bool, param: str, value: Any) -> None:
    recorder = Recorder()
    try:
        make_client(recorder, validate=validate).images.generate(model="step-2x-large", prompt="x", **{param: value})
    except StepFunValidationError as exc:
        assert exc.param == param
        return
    assert not validate, "with validation on, every one of these is refused"
    assert isinstance(value, bool) or (isinstance(value, int) and value.bit_length() <= 1024), value
    assert json.loads(recorder.last.content)[param] == value


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize(
    ("endpoint", "param"),
    [
        ("generate", "prompt"),
        ("generate", "negative_prompt"),
        ("generate", "size"),
        ("generate", "model"),
        ("generate", "response_format"),
        ("generate", "text_mode"),
        ("image2image", "prompt"),
        ("edit", "prompt"),
        ("edit", "negative_prompt"),
        ("edit", "size"),
    ],
)
def test_a_lone_surrogate_in_any_string_is_refused_by_name(validate: bool, endpoint: str, param: str) -> None:
    """``"\\ud800"`` (a JSONL line's ``"\\\\ud800"``, or a model's output) cannot be UTF-8: refused
    before the SDK's serialiser would raise ``UnicodeEncodeError``."""
    arguments = {**BASE[endpoint], param: "a cat \ud800"}
    with pytest.raises(StepFunValidationError) as caught:
        call(make_client(Recorder(), validate=validate), endpoint, arguments)
    assert caught.value.param == param


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"note": "\udcff"}, "note"),
        ({"deep": {"er": ["ok", "\ud800"]}}, "deep.er[1]"),
        ({"raw": b"\x00"}, "raw"),
        ({"thing": object()}, "thing"),
        ({"weight": float("nan")}, "weight"),
        ({"big": 10**5000}, "big"),
        ({"\ud800": 1}, "\ud800"),
    ],
)
def test_extra_body_values_json_cannot_carry_are_refused_by_name(
    validate: bool, extra: dict[str, Any], param: str
) -> None:
    for endpoint in ("generate", "edit"):
        with pytest.raises(StepFunValidationError) as caught:
            call(make_client(Recorder(), validate=validate), endpoint, {**BASE[endpoint], "extra_body": extra})
        assert caught.value.param == param


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"extra_headers": {"X-Note": "caf\u00e9"}}, "extra_headers['X-Note']"),
        ({"extra_headers": {"X-Note": "a\r\nX-Injected: 1"}}, "extra_headers['X-Note']"),
        ({"extra_headers": {"X-Note": "\ud800"}}, "extra_headers['X-Note']"),
        ({"extra_headers": {"X-Note": 5}}, "extra_headers['X-Note']"),
        ({"extra_headers": {5: "x"}}, "extra_headers[5]"),
        ({"extra_headers": ["X-Note"]}, "extra_headers"),
        ({"extra_query": {"q": "\udcff"}}, "extra_query.q"),
        ({"extra_query": ["q"]}, "extra_query"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": 10**400}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"timeout": httpx2.Timeout(-1)}, "timeout"),
    ],
    ids=lambda value: value if isinstance(value, str) else next(iter(value)),
)
def test_call_options_the_transport_would_choke_on_are_refused_by_name(options: dict[str, Any], param: str) -> None:
    """Not parameters StepFun reads, but the same rule: refused by name before anything is sent,
    instead of a raw UnicodeEncodeError/TypeError/OverflowError from inside httpx."""
    for endpoint in ("generate", "edit"):
        recorder = Recorder()
        with pytest.raises(StepFunValidationError) as caught:
            call(make_client(recorder, validate=False), endpoint, {**BASE[endpoint], **options})
        assert caught.value.param == param and recorder.requests == []


def test_sane_call_options_still_go_out() -> None:
    recorder = Recorder()
    options = {"extra_headers": {"X-Note": "a b"}, "extra_query": {"trace": 1}, "timeout": httpx2.Timeout(5, connect=2)}
    make_client(recorder).images.generate(model="step-image-edit-2", prompt="x", **options)
    assert recorder.last.headers["x-note"] == "a b" and recorder.last.url.params["trace"] == "1"


def test_a_pil_image_is_encoded_only_up_to_the_limit() -> None:
    """A PIL image whose PNG is 12 MB (noise): encoded into a buffer that stops at the 10 MB limit,
    not encoded whole, copied and then measured."""
    import tracemalloc

    from PIL import Image

    noise = Image.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
    tracemalloc.start()
    try:
        error = refused("image2image", noise)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "'<PIL image>'" in str(error) and f"at most {TEN_MB} bytes" in str(error)
    assert peak < TEN_MB * 1.25, f"peak {peak / 2**20:.1f} MB while encoding"


def test_the_async_client_applies_the_same_bounds(tmp_path: Path) -> None:
    import asyncio

    from stepfun_openai import AsyncStepFun

    os.mkfifo(tmp_path / "fifo")
    recorder = Recorder()

    async def main() -> None:
        client = AsyncStepFun(
            api_key="k", base_url="http://stepfun.test/v1", http_client=httpx2.AsyncClient(transport=recorder.transport)
        )
        with pytest.raises(StepFunValidationError, match="FIFO"):
            await client.images.edit(model="step-image-edit-2", prompt="x", image=tmp_path / "fifo")
        with pytest.raises(StepFunValidationError) as caught:
            await client.images.generate(model="step-image-edit-2", prompt="\ud800")
        assert caught.value.param == "prompt"

    try:
        within(5, lambda: asyncio.run(main()))  # a blocking open() would stall the event loop itself
    finally:
        _unblock_fifo(tmp_path / "fifo")
    assert recorder.requests == []


def test_a_body_that_holds_itself_is_refused_not_recursed_into() -> None:
    loop: dict[str, Any] = {}
    loop["again"] = loop
    with pytest.raises(StepFunValidationError, match="nesting"):
        make_client(Recorder(), validate=False).images.generate(model="m", prompt="x", extra_body={"loop": loop})


# --- property tests: any value gives a request or a StepFunValidationError ---------------------------

BASE: dict[str, dict[str, Any]] = {
    "generate": {"model": "step-image-edit-2", "prompt": "a cat"},
    "image2image": {"model": "step-2x-large", "prompt": "a cat", "source_url": PNG, "source_weight": 0.5},
    "edit": {"model": "step-image-edit-2", "prompt": "a cat", "image": PNG},
}
PARAMS: dict[str, list[str]] = {
    "generate": [
        "model", "prompt", "size", "n", "response_format", "seed", "steps", "cfg_scale", "negative_prompt",
        "text_mode", "style_reference", "source_image", "source_weight", "fit", "extra_body",
    ],
    "image2image": [
        "model", "prompt", "source_url", "source_weight", "size", "n", "response_format", "seed", "steps",
        "cfg_scale", "fit", "extra_body",
    ],
    "edit": [
        "model", "prompt", "image", "size", "n", "response_format", "seed", "steps", "cfg_scale",
        "negative_prompt", "text_mode", "fit", "extra_body",
    ],
}  # fmt: skip


CALL_OPTIONS = ["extra_headers", "extra_query", "timeout"]
for names in PARAMS.values():
    names += CALL_OPTIONS


def call(client: StepFun, endpoint: str, arguments: dict[str, Any]) -> Any:
    method = {"generate": client.images.generate, "image2image": client.images.image2image}.get(endpoint)
    return (method or client.images.edit)(**arguments)


any_text = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates included
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**31, 2**63, 0, -1, 2147483647]),
    st.sampled_from([5000, -5000]).map(lambda digits: 10 ** abs(digits) * (1 if digits > 0 else -1)),  # no repr
    st.floats(allow_nan=True, allow_infinity=True),
    any_text,
    st.binary(max_size=32),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "/dev/zero",
            "/dev/null",
            "/",
            ".",
            "data:image/png;base64,",
            "data:,",
            "http://x",
            "1024x1024",
            "10000000000000000000x1",
            "step-2x-large",
            "step-1x-medium",
            "url",
            "b64_json",
            PNG_B64,
            "data:image/png;base64," + PNG_B64,
            "A" * 5000,
            "\ud800" * 3,
            "a\udcffb",
        ]
    ),
    st.sampled_from([PNG, bytearray(PNG), memoryview(PNG), b"\x89PNG\r\n\x1a\n"]),
    st.builds(object),
    st.frozensets(st.integers(), max_size=2),
    st.builds(StyleReference, st.sampled_from([PNG, "x", None, 5]), st.one_of(st.none(), st.floats())),
    st.builds(io.BytesIO, st.sampled_from([PNG, b"", b"junk"])),
    st.builds(io.StringIO, st.just("text")),
)
hostile = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.one_of(any_text, st.integers()), inner, max_size=3),
    max_leaves=6,
)


def check_any_values(endpoint: str, data: st.DataObject, validate: bool) -> None:
    names = data.draw(st.lists(st.sampled_from(PARAMS[endpoint]), min_size=1, max_size=3, unique=True))
    arguments = {**BASE[endpoint], **{name: data.draw(hostile, label=name) for name in names}}
    recorder = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # retired models, fit=True changes
        try:
            call(make_client(recorder, validate=validate), endpoint, arguments)
        except StepFunValidationError as exc:
            assert recorder.requests == [], "refused means nothing was sent"
            assert isinstance(exc.param, str) and exc.param and str(exc)
            return
    assert len(recorder.requests) == 1, "no error means one request"


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data(), validate=st.booleans())
def test_generate_gives_a_request_or_a_validation_error_for_any_values(data: st.DataObject, validate: bool) -> None:
    check_any_values("generate", data, validate)


@PROPERTY
@given(data=st.data(), validate=st.booleans())
def test_image2image_gives_a_request_or_a_validation_error_for_any_values(data: st.DataObject, validate: bool) -> None:
    check_any_values("image2image", data, validate)


@PROPERTY
@given(data=st.data(), validate=st.booleans())
def test_edit_gives_a_request_or_a_validation_error_for_any_values(data: st.DataObject, validate: bool) -> None:
    check_any_values("edit", data, validate)


# --- the batch: hostile JSONL lines become invalid jobs, the others run --------------------------------


async def test_hostile_jsonl_lines_are_invalid_jobs_and_the_batch_goes_on(tmp_path: Path) -> None:
    import asyncio

    from stepfun_openai import AsyncStepFun, batch

    nested = '{"a":' * 5000 + "1" + "}" * 5000
    lines = [
        '{"prompt": "a \\ud800 cat"}',
        '{"prompt": "p", "seed": 1e400}',
        '{"prompt": "p", "steps": 100000000000000000000000000000000000000000}',
        '{"prompt": "p", "seed": ' + "9" * 5000 + "}",
        '{"prompt": "p", "extra_body": ' + nested + "}",
        '{"prompt": "p", "image": "/dev/zero"}',
        '{"prompt": "p", "endpoint": "edit"}',
        '{"prompt": "p", "id": "\\udcff"}',
        '{"prompt": "a fine cat", "id": "fine"}',
    ]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_bytes(("\n".join(lines) + '\n{"prompt": "not utf-8 \xff"}\n').encode("latin-1"))
    recorder = Recorder()
    client = AsyncStepFun(
        api_key="k", base_url="http://stepfun.test/v1", http_client=httpx2.AsyncClient(transport=recorder.transport)
    )
    jobs = batch.load_jobs(jobs_file)
    result = await asyncio.wait_for(batch.arun(jobs, out=tmp_path / "out", client=client, rpm=None, progress=False), 60)
    assert (result.succeeded, result.invalid) == (1, len(lines))
    assert [json.loads(request.content)["prompt"] for request in recorder.requests] == ["a fine cat"]
    events = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(event["status"] for event in events) == ["invalid"] * len(lines) + ["succeeded"]


# -- the jobs file ----------------------------------------------------------------------------------


def test_a_jobs_file_without_line_ends_is_refused_without_reading_it_whole() -> None:
    """``/dev/zero`` as a jobs file: refused at the first line's cap, in bounded memory and time
    (before, the whole file was read into memory)."""
    source = (
        "from stepfun_openai import batch\n"
        "try:\n"
        "    batch.load_jobs('/dev/zero')\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = run_bounded(source, seconds=60, memory_mb=1024)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: /dev/zero:1: a line of more than" in done.stdout


def test_a_jobs_file_is_read_line_by_line_within_its_caps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from stepfun_openai.batch import _jobs

    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a red fox\r\n\n# a comment\na blue fox\n")
    assert [job.params["prompt"] for job in batch.load_jobs(jobs)] == ["a red fox", "a blue fox"]
    monkeypatch.setattr(_jobs, "MAX_JOBS_FILE_BYTES", 15)
    with pytest.raises(ValueError, match=r"jobs.txt: more than 15 bytes of jobs: split it"):
        batch.load_jobs(jobs)
    monkeypatch.setattr(_jobs, "MAX_JOB_LINE_BYTES", 5)
    with pytest.raises(ValueError, match=r"jobs.txt:1: a line of more than 5 bytes"):
        batch.load_jobs(jobs)


def test_jobs_can_come_from_a_pipe(tmp_path: Path) -> None:
    fifo = tmp_path / "jobs.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "w") as writer:
            writer.write("a lighthouse\na harbour\n")

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    loaded = within(10, lambda: batch.load_jobs(fifo))
    feeder.join(5)
    assert [job.params["prompt"] for job in loaded] == ["a lighthouse", "a harbour"]
