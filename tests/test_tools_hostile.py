"""The agent tools against a hostile model: whatever a tool call holds, the tool answers with a
result (never an exception), reads local files only inside ``input_dirs``, sends only bytes that
are an image, and never repeats the API key.

A prompt injection can make a model name ``/etc/passwd`` as its "source image" or send JSON no
schema allows; the client's ``validate=False`` must not open either door, so most tests run with
both settings. A :class:`~tests._mock.Recorder` transport answers instead of StepFun and records
what would have left the machine.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from stepfun_openai import AsyncStepFun, StepFun
from stepfun_openai._tool_args import IMAGE_TEXT_MAX_CHARS, TEXT_MAX_CHARS
from stepfun_openai.tools import (
    ARGUMENTS_MAX_CHARS,
    IMAGE_TOOL_NAME,
    ImageToolArgs,
    arun_tool_call,
    run_image_tool,
    run_tool_call,
)
from tests._hostile import run_bounded, within
from tests._mock import Recorder, error_response, tiny_png

API_KEY = "sk-hostile-test-key-0123456789"
NOT_AN_IMAGE = b"root:x:0:0:root:/root:/bin/bash\n"


def make_client(recorder: Recorder, *, validate: bool) -> StepFun:
    return StepFun(
        api_key=API_KEY,
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.Client(transport=recorder.transport),
        validate=validate,
        max_retries=0,
    )


@pytest.fixture(params=[True, False], ids=["validate", "no-validate"])
def recorder_client(request: pytest.FixtureRequest) -> Iterator[tuple[Recorder, StepFun]]:
    recorder = Recorder()
    with make_client(recorder, validate=request.param) as client:
        yield recorder, client


def call(arguments: Any) -> dict[str, Any]:
    """A Chat Completions tool call as a dict; ``arguments`` is usually JSON text."""
    return {"id": "call_1", "type": "function", "function": {"name": IMAGE_TOOL_NAME, "arguments": arguments}}


def source_call(path: object, **more: Any) -> dict[str, Any]:
    return call(json.dumps({"prompt": "the same, as a watercolour", "source_image": str(path), **more}))


def sent_source(recorder: Recorder) -> bytes:
    """The bytes of the source image in the one request that was sent."""
    (request,) = recorder.requests
    data_url = json.loads(request.content)["source_url"]
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.split(",", 1)[1])


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """``allowed/`` holding ``cat.png``, and ``secret/`` next to it holding ``key.png`` (an image,
    so that only the directory check can keep it home) and ``id_rsa``."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "cat.png").write_bytes(tiny_png(16, 16))
    (secret / "key.png").write_bytes(tiny_png(24, 24))
    (secret / "id_rsa").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n")
    return allowed, secret


# --- local files ----------------------------------------------------------------------------------


def test_etc_passwd_is_refused_by_default_whatever_validate_says(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client

    content = run_tool_call(client, source_call("/etc/passwd"))

    assert content.startswith("Invalid argument source_image='/etc/passwd'. Allowed: an http(s) URL or a data: URL")
    assert "this tool may not read local files" in content and "Nothing was generated" in content
    assert recorder.requests == []
    # What the error offers works: an http(s) URL goes as it is, for StepFun to fetch.
    assert run_tool_call(client, source_call("https://example.com/cat.png")).startswith("Transformed")
    assert recorder.last_json()["source_url"] == "https://example.com/cat.png"


def test_a_file_in_an_allowed_dir_is_sent(recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs

    content = run_tool_call(client, source_call(allowed / "cat.png"), input_dirs=[allowed])

    assert content.startswith("Transformed the source image"), content
    assert sent_source(recorder) == (allowed / "cat.png").read_bytes()


def test_a_relative_path_inside_an_allowed_dir_is_sent(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs
    monkeypatch.chdir(allowed.parent)

    content = run_tool_call(client, source_call("allowed/cat.png"), input_dirs="allowed")

    assert content.startswith("Transformed the source image"), content
    assert sent_source(recorder) == (allowed / "cat.png").read_bytes()


def test_a_file_outside_the_allowed_dirs_is_refused_and_the_error_lists_them(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, secret = dirs

    content = run_tool_call(client, source_call(secret / "key.png"), input_dirs=[allowed])

    assert content.startswith(f"Invalid argument source_image={str(secret / 'key.png')!r}. Allowed:")
    assert "an http(s) URL or a data: URL (data:image/png;base64,...)" in content
    assert f"or the path of a PNG, JPEG, WebP or GIF file inside {allowed}" in content
    assert "this path is outside them" in content
    assert recorder.requests == []


def test_dot_dot_out_of_an_allowed_dir_is_refused(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs

    content = run_tool_call(client, source_call(f"{allowed}/../secret/key.png"), input_dirs=[allowed])

    assert "this path is outside them" in content
    assert recorder.requests == []


def test_a_symlink_inside_an_allowed_dir_pointing_outside_is_refused(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, secret = dirs
    (allowed / "innocent.png").symlink_to(secret / "key.png")
    (allowed / "photos").symlink_to(secret, target_is_directory=True)

    through_file = run_tool_call(client, source_call(allowed / "innocent.png"), input_dirs=[allowed])
    through_dir = run_tool_call(client, source_call(allowed / "photos" / "key.png"), input_dirs=[allowed])

    assert "this path is outside them" in through_file
    assert "this path is outside them" in through_dir
    assert recorder.requests == []


def test_a_symlink_to_a_file_inside_an_allowed_dir_is_followed(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs
    (allowed / "latest.png").symlink_to(allowed / "cat.png")

    content = run_tool_call(client, source_call(allowed / "latest.png"), input_dirs=[allowed])

    assert content.startswith("Transformed the source image"), content
    assert sent_source(recorder) == (allowed / "cat.png").read_bytes()


def test_an_allowed_dir_reached_through_a_symlink_is_the_same_dir(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs
    alias = allowed.parent / "alias"
    alias.symlink_to(allowed, target_is_directory=True)

    content = run_tool_call(client, source_call(allowed / "cat.png"), input_dirs=[alias])

    assert content.startswith("Transformed the source image"), content
    assert len(recorder.requests) == 1


def test_a_non_image_file_inside_an_allowed_dir_is_never_sent(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, secret = dirs
    (allowed / "notes.png").write_bytes(NOT_AN_IMAGE)  # the name says image; the bytes do not
    (allowed / "id_rsa").write_bytes((secret / "id_rsa").read_bytes())

    for name in ("notes.png", "id_rsa"):
        content = run_tool_call(client, source_call(allowed / name), input_dirs=[allowed])
        assert "this file is not a PNG, JPEG, WebP or GIF image" in content

    assert recorder.requests == []


def test_a_style_reference_obeys_the_same_rules(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, secret = dirs
    arguments = {"prompt": "a fox", "model": "step-1x-medium", "style_reference": str(secret / "key.png")}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # step-1x-medium is retired (warned once a process)
        content = run_tool_call(client, call(json.dumps(arguments)), input_dirs=[allowed])

    assert content.startswith(f"Invalid argument style_reference={str(secret / 'key.png')!r}")
    assert "this path is outside them" in content
    assert recorder.requests == []


def test_an_image_the_catalog_refuses_is_named_by_its_path_not_its_bytes(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs
    (allowed / "huge.png").write_bytes(tiny_png(3000, 3000))

    content = run_tool_call(client, source_call(allowed / "huge.png"), input_dirs=[allowed])

    if client.validate:
        assert content.startswith(f"Invalid argument source_image={str(allowed / 'huge.png')!r} for model")
        assert "at most 2048x2048 pixels" in content
        assert recorder.requests == []
    else:  # an image, so it may go: StepFun decides
        assert sent_source(recorder) == tiny_png(3000, 3000)


def test_a_path_longer_than_any_file_system_takes_is_refused(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs

    content = run_tool_call(client, source_call(f"{allowed}/{'a/' * 2500}cat.png"), input_dirs=[allowed])

    assert "this is neither a URL nor a usable path" in content
    assert recorder.requests == []


def test_a_fifo_inside_an_allowed_dir_is_refused_without_blocking(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs
    os.mkfifo(allowed / "pipe.png")

    content = within(10, lambda: run_tool_call(client, source_call(allowed / "pipe.png"), input_dirs=[allowed]))

    assert "this is not a regular file" in content
    assert recorder.requests == []


def test_a_file_larger_than_stepfun_takes_is_refused_unread(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    recorder, client = recorder_client
    allowed, _ = dirs
    big = allowed / "huge.png"
    with open(big, "wb") as handle:  # sparse: a PNG header, then 11 MB of nothing on disk
        handle.write(tiny_png(8, 8))
        handle.truncate(11 * 1024 * 1024)

    content = within(10, lambda: run_tool_call(client, source_call(big), input_dirs=[allowed]))

    assert "this file is larger than 10 MB" in content
    assert recorder.requests == []


def test_outside_an_allowed_dir_a_missing_file_and_an_existing_one_look_the_same(
    recorder_client: tuple[Recorder, StepFun], dirs: tuple[Path, Path]
) -> None:
    # The model must not learn which files exist elsewhere on the disk.
    _, client = recorder_client
    allowed, secret = dirs

    exists = run_tool_call(client, source_call(secret / "id_rsa"), input_dirs=[allowed])
    missing = run_tool_call(client, source_call(secret / "id_dsa"), input_dirs=[allowed])

    assert exists.replace("id_rsa", "id_dsa") == missing
    assert "this path is outside them" in missing


def test_a_data_url_is_sent_only_when_it_holds_an_image(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client

    for payload in (NOT_AN_IMAGE, b"", b"\x89PN"):  # text, nothing, a truncated PNG signature
        data_url = "data:image/png;base64," + base64.b64encode(payload).decode()
        content = run_tool_call(client, source_call(data_url))
        assert content.startswith("Invalid argument source_image='data:image/png;base64,")
        assert "this data: URL holds no PNG, JPEG, WebP or GIF image" in content
    assert recorder.requests == []

    content = run_tool_call(client, source_call("data:image/png;base64," + base64.b64encode(tiny_png(16, 16)).decode()))

    assert content.startswith("Transformed the source image"), content
    assert sent_source(recorder) == tiny_png(16, 16)


async def test_the_async_twin_refuses_the_same_files(dirs: tuple[Path, Path]) -> None:
    recorder = Recorder()
    allowed, secret = dirs
    async with AsyncStepFun(
        api_key=API_KEY,
        base_url="http://127.0.0.1:9/v1",
        http_client=httpx2.AsyncClient(transport=recorder.transport),
        validate=False,
    ) as client:
        refused = await arun_tool_call(client, source_call(secret / "key.png"), input_dirs=[allowed])
        accepted = await arun_tool_call(client, source_call(allowed / "cat.png"), input_dirs=[allowed])

    assert "this path is outside them" in refused
    assert accepted.startswith("Transformed the source image")
    assert sent_source(recorder) == (allowed / "cat.png").read_bytes()


# --- hostile JSON ---------------------------------------------------------------------------------


def _deep(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        pytest.param("[" * 100_000, "The arguments were not valid: expected a JSON object", id="nested-arrays"),
        pytest.param('{"a":' * 100_000, "The arguments were not valid: expected a JSON object", id="nested-objects"),
        pytest.param('{"prompt": "x", "seed": ' + "9" * 5000 + "}", "seed=inf", id="5000-digit-seed"),
        pytest.param('{"prompt": "x", "cfg_scale": 1e999}', "cfg_scale=inf: Input should be a finite", id="1e999"),
        pytest.param('{"prompt": "x", "cfg_scale": NaN}', "cfg_scale=nan: Input should be a finite number", id="NaN"),
        pytest.param('{"prompt": "x", "cfg_scale": -Infinity}', "cfg_scale=-inf: Input should be a finite", id="-Inf"),
        pytest.param('{"prompt": "\\ud800 fox"}', r"prompt='\ud800 fox': not valid Unicode", id="lone-surrogate"),
        pytest.param(b'{"prompt": "\xff\xfe"}', "expected UTF-8 text of a JSON object", id="not-utf8"),
        pytest.param('{"prompt": "' + "x" * (TEXT_MAX_CHARS + 1) + '"}', "prompt='xxxx", id="long-prompt"),
        pytest.param('"a fox"', "not a JSON string", id="a-string"),
        pytest.param(
            '{"prompt": "x", "source_image": "https://example.com/' + "b" * 9000 + '"}',
            "this URL is longer than 8192 characters",
            id="long-url",
        ),
        pytest.param("[1, 2]", "not a JSON array", id="an-array"),
        pytest.param('{"prompt": "x", "seed": 18446744073709551616}', "seed=<an integer of about 20", id="2**64"),
        pytest.param('{"prompt": "x", "seed": "123456789012345678901234"}', "seed='1234", id="a-long-digit-string"),
    ],
)
def test_hostile_json_becomes_an_error_result_naming_the_problem(
    recorder_client: tuple[Recorder, StepFun], arguments: str | bytes, expected: str
) -> None:
    recorder, client = recorder_client

    content = within(20, lambda: run_tool_call(client, call(arguments)))

    assert expected in content, content
    assert "Nothing was generated" in content
    assert len(content) < 3000
    content.encode("utf-8")  # a tool message the chat API can carry
    assert recorder.requests == []


def test_a_flood_of_unknown_arguments_gives_a_short_result(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client
    arguments = {"prompt": "a fox", **{f"colour{i}": "x" * 1000 for i in range(10_000)}}

    content = run_tool_call(client, call(json.dumps(arguments)))

    assert content.count("unknown argument") == 5 and "and 9995 more" in content
    assert len(content) < 2000
    assert recorder.requests == []


def test_an_enormous_prompt_is_refused_naming_it(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client

    content = run_tool_call(client, call(json.dumps({"prompt": "x" * 1_000_000})))

    assert f"too long (1000000 characters); at most {TEXT_MAX_CHARS}" in content
    assert content.startswith("Invalid arguments for generate_image: prompt='xxx")
    assert recorder.requests == []


def test_an_enormous_data_url_is_refused_naming_it(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client
    data_url = "data:image/png;base64," + "A" * IMAGE_TEXT_MAX_CHARS

    content = within(20, lambda: run_tool_call(client, source_call(data_url)))

    assert "source_image='data:image/png;base64,AAAA" in content and f"at most {IMAGE_TEXT_MAX_CHARS}" in content
    assert recorder.requests == []


def test_arguments_longer_than_any_call_needs_are_refused_unparsed(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client
    arguments = '{"prompt": "' + "x" * ARGUMENTS_MAX_CHARS + '"}'

    content = within(20, lambda: run_tool_call(client, call(arguments)))

    assert f"of at most {ARGUMENTS_MAX_CHARS} characters" in content
    assert recorder.requests == []


def test_python_callers_values_json_cannot_hold_are_explained_too(recorder_client: tuple[Recorder, StepFun]) -> None:
    recorder, client = recorder_client

    huge = run_image_tool(client, {"prompt": "x", "seed": 10**5000})
    nested = run_image_tool(client, {"prompt": _deep(100_000)})
    odd_key = run_image_tool(client, {"prompt": "x", 7: "y"})

    assert huge.error == nested.error == odd_key.error == "invalid_arguments"
    assert "seed=<an integer of about 5001 digits>: too large" in huge.content
    assert "prompt=[[[...]]]: Input should be a valid string" in nested.content
    assert recorder.requests == []


# --- the API key ----------------------------------------------------------------------------------


def test_the_api_key_never_appears_in_a_tool_result_even_when_stepfun_echoes_it() -> None:
    def echo_the_key(request: httpx2.Request) -> httpx2.Response:
        auth = request.headers["authorization"]
        return error_response(400, f"Request param: size is invalid (request authorized as {auth})", "invalid_request")

    recorder = Recorder(echo_the_key)
    with make_client(recorder, validate=False) as client:
        content = run_tool_call(client, call('{"prompt": "a fox", "model": "step-2x-large", "size": "768x1360"}'))

    assert len(recorder.requests) == 1
    assert recorder.last.headers["authorization"] == f"Bearer {API_KEY}"  # the server did get the key
    assert content.startswith("StepFun rejected the request: Request param: size is invalid")
    assert API_KEY not in content and "REDACTED" in content


# --- properties: any JSON at all -------------------------------------------------------------------

FIELDS = list(ImageToolArgs.model_fields)

# Text with lone surrogates, which JSON's \ud800 escapes produce and UTF-8 cannot carry.
_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=30)
_numbers = (
    st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 10**30, 10**300, 10**3999])
    | st.floats(allow_nan=True, allow_infinity=True)
)
_scalars = st.none() | st.booleans() | _numbers | _text
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=8
)
_PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
# Values the tool might take, so that some calls get as far as a request.
_plausible = {
    "prompt": st.sampled_from(["a fox", "", "x" * 600]),
    "model": st.sampled_from(["step-image-edit-2", "step-2x-large", "step-1x-medium", "dall-e-3"]),
    "size": st.sampled_from(["1024x1024", "768x1360", "1280x800", "3x3"]),
    "seed": st.integers(-5, 2**31 + 5),
    "steps": st.integers(-1, 60),
    "cfg_scale": st.floats(-1, 20),
    "negative_prompt": st.sampled_from(["blur", ""]),
    "text_mode": st.booleans(),
    "source_image": st.sampled_from(
        [
            "/etc/passwd",
            "https://example.com/cat.png",
            _PNG_DATA_URL,
            "data:image/png;base64," + base64.b64encode(NOT_AN_IMAGE).decode(),
            "data:;base64,!!",
            "../../../../etc/shadow",
        ]
    ),
    "source_weight": st.floats(-1, 2),
    "style_reference": st.sampled_from(["https://example.com/style.png", "/etc/hostname"]),
    "style_weight": st.floats(-1, 3),
}
_valid = st.fixed_dictionaries(
    {"prompt": st.just("a fox")},
    optional={
        "seed": st.integers(0, 2**31 - 1),
        "steps": st.integers(1, 8),
        "source_image": st.sampled_from(["https://example.com/cat.png", _PNG_DATA_URL]),
    },
)
# A call that would succeed, with one argument replaced by anything JSON can hold; the values that
# broke the tool once are drawn often.
_nasty = st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, 2**63, 10**3999, "\ud800", "fox\udfff", True, "", [], {}, None]
)
_one_hostile = st.builds(
    lambda valid, name, value: {**valid, name: value}, _valid, st.sampled_from(FIELDS), _nasty | _scalars
)
json_arguments = st.one_of(
    _valid,
    _one_hostile,
    st.fixed_dictionaries({"prompt": _plausible["prompt"]}, optional={name: _plausible[name] for name in FIELDS[1:]}),
    st.fixed_dictionaries({}, optional={name: _plausible[name] | _json for name in FIELDS}),
    st.dictionaries(st.sampled_from(FIELDS) | _text, _json, max_size=4),
    _json,
)
text_arguments = st.one_of(
    st.text(max_size=50),
    st.builds(lambda n, opener: opener * n, st.integers(1, 50_000), st.sampled_from(["[", '{"a":', '{"prompt":['])),
    st.sampled_from(["NaN", "Infinity", '{"prompt": "x", "seed": ' + "9" * 5000 + "}", '"\\udfff"', "", "null"]),
    st.binary(max_size=30),
)


def _as_json_text(value: Any, ascii_only: bool) -> str:
    try:
        return json.dumps(value, ensure_ascii=ascii_only)
    except ValueError:  # an integer too long for Python to print: a raw 5000-digit literal instead
        return '{"seed": ' + "9" * 5000 + "}"


_HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_RETIRED_MODEL = pytest.mark.filterwarnings("ignore:StepFun retired:DeprecationWarning")
_SUCCESS = re.compile(r"^(Generated|Transformed the source image into) a ")


def _check_result(content: Any) -> None:
    assert isinstance(content, str)
    content.encode("utf-8")
    assert len(content) < 3000
    assert API_KEY not in content
    assert _SUCCESS.match(content) or "Nothing was generated" in content or "moderation" in content, content
    event("generated" if _SUCCESS.match(content) else "error result")


# Cases that once escaped as exceptions, always run on top of the generated ones.
KNOWN_BREAKERS = [
    {"prompt": "a fox", "cfg_scale": math.nan},  # ValueError: JSON has no NaN
    {"prompt": "a fox", "cfg_scale": math.inf},
    {"prompt": "a fox \ud800"},  # UnicodeEncodeError in the request body
    {"prompt": "a fox", "source_image": "\udfff.png"},  # ... or in the file system
    {"prompt": "a fox", "seed": 10**5000},  # ValueError: too many digits to print
    {"prompt": "a fox", "negative_prompt": "blur", "source_image": "https://example.com/cat.png"},  # TypeError
]


def _known_breakers(**fixed: Any) -> Any:
    def add(test: Any) -> Any:
        for arguments in KNOWN_BREAKERS:
            test = example(arguments=arguments, validate=False, **fixed)(test)
        return test

    return add


@_RETIRED_MODEL
@_HYPOTHESIS
@given(arguments=json_arguments, as_text=st.booleans(), ascii_only=st.booleans(), validate=st.booleans())
@_known_breakers(as_text=False, ascii_only=False)
@example(arguments={"prompt": "a fox", "cfg_scale": math.nan}, as_text=True, ascii_only=True, validate=False)
def test_any_json_arguments_give_a_result_never_an_exception(
    arguments: Any, as_text: bool, ascii_only: bool, validate: bool
) -> None:
    recorder = Recorder()
    with make_client(recorder, validate=validate) as client:
        sent = _as_json_text(arguments, ascii_only) if as_text else arguments
        content = run_tool_call(client, call(sent))

    _check_result(content)
    for request in recorder.requests:  # what left the machine: no local file, only images
        body = json.loads(request.content)
        for key in ("source_url",):
            if key in body and body[key].startswith("data:"):
                assert base64.b64decode(body[key].split(",", 1)[1]).startswith(b"\x89PNG")


@_HYPOTHESIS
@given(arguments=text_arguments, validate=st.booleans())
def test_any_text_as_arguments_gives_a_result_never_an_exception(arguments: str | bytes, validate: bool) -> None:
    recorder = Recorder()
    with make_client(recorder, validate=validate) as client:
        content = run_tool_call(client, call(arguments))

    _check_result(content)
    assert recorder.requests == []  # none of these is an object with a prompt


@_RETIRED_MODEL
@_HYPOTHESIS
@given(arguments=json_arguments, validate=st.booleans())
@_known_breakers()
def test_run_image_tool_takes_any_mapping(arguments: Any, validate: bool) -> None:
    recorder = Recorder()
    with make_client(recorder, validate=validate) as client:
        result = run_image_tool(client, arguments)

    assert result.ok == (result.image is not None)
    _check_result(result.content)


def test_an_oversized_call_is_refused_within_a_memory_cap() -> None:
    # 60 MB of "image" in one call: refused by its length, before it is parsed, encoded or sent.
    result = run_bounded(
        f"""
import base64, httpx2
from stepfun_openai import StepFun
from stepfun_openai.tools import run_tool_call
from tests._mock import Recorder, tiny_png

recorder = Recorder()
client = StepFun(api_key={API_KEY!r}, base_url="http://127.0.0.1:9/v1",
                 http_client=httpx2.Client(transport=recorder.transport), validate=False, max_retries=0)
image = "data:image/png;base64," + base64.b64encode(tiny_png()).decode() + "A" * 60_000_000
arguments = '{{"prompt": "a fox", "source_image": "' + image + '"}}'
del image
content = run_tool_call(client, {{"name": "generate_image", "arguments": arguments}})
print(len(recorder.requests), content[:300])
""",
        seconds=60,
        memory_mb=400,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("0 The arguments were not valid"), result.stdout
    assert "characters; pass images as URLs or file paths" in result.stdout
