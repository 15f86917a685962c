"""Cassettes stay safe to publish and small: no key, no real signature, no real image, no bloat.

The first half checks every cassette on disk; the second half checks the recording hooks
themselves, on a request and a response shaped like the live API's."""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import random
import re
from pathlib import Path
from typing import Any

import pytest
import vcr
import yaml  # type: ignore[import-untyped]
from PIL import Image
from vcr.request import Request

from stepfun_openai._sniff import sniff

from .conftest import (
    AUTH_PLACEHOLDER,
    CASSETTE_DIR,
    REPLAY_API_KEY,
    SCRUBBED_MARKER,
    build_multipart,
    match_stepfun_body,
)

SIZE_BUDGET = 50 * 1024
"""Bytes per cassette file."""

CASSETTES = sorted(CASSETTE_DIR.rglob("*.yaml"))

KEY_SHAPES = {
    "an OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    "a bearer token": re.compile(r"Bearer\s+(?!<STEPFUN_API_KEY>)\S+"),
    "a TOS access key": re.compile(r"\bAKLT[A-Za-z0-9]{16,}"),
    # StepFun keys are long mixed-case alphanumerics; hex ids and trace ids are all lower case.
    "a long mixed-case token": re.compile(
        r"(?<![A-Za-z0-9+/])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*\d)[A-Za-z0-9]{32,}(?![A-Za-z0-9+/])"
    ),
    # Secrets, session ids and signatures are often hex (e.g. ``x-debug: key=3fa9...``). The hex a
    # cassette may legitimately hold is whitelisted field by field in LEGITIMATE_HEX below.
    "a long hex token": re.compile(r"(?<![A-Za-z0-9+/])[0-9a-fA-F]{32,}(?![A-Za-z0-9+/])"),
}

_HEX32 = r"[0-9a-f]{32}"
LEGITIMATE_HEX = {
    "the X-Trace-Id response header (32 hex)": re.compile(rf"(?im)^(?:[\w-]+: )*x-trace-id: {_HEX32}(?=\r?$)"),
    'the response\'s "id" (hex.hex)': re.compile(rf'"id": "{_HEX32}(?:\.{_HEX32})?"'),
    "a result image's file name in its URL path": re.compile(
        rf"/image_gen/[0-9a-z]+/{_HEX32}\.(?:png|jpe?g|webp)(?=[?\"\s])"
    ),
}
_BOUNDARY = re.compile(r"(?i)multipart/form-data; boundary=([0-9a-f]{32})\b")


def key_shapes_in(text: str) -> list[tuple[str, str]]:
    """``(what, found)`` for everything in ``text`` shaped like a key, a token or a signature,
    after removing the hex a cassette legitimately holds: the trace id header, the response id,
    a result image's file name and the multipart boundary (only where the boundary is used)."""
    for allowed in LEGITIMATE_HEX.values():
        text = allowed.sub("<allowed hex>", text)
    for boundary in set(_BOUNDARY.findall(text)):
        text = re.sub(rf"(?m)(?<=boundary=){boundary}\b|^(?:[^\n]*: )?--{boundary}(?:--)?(?=\r?$)", "<boundary>", text)
    return [(what, found.group(0)) for what, shape in KEY_SHAPES.items() for found in shape.finditer(text)]


_IMAGE_BASE64 = re.compile(r"(data:image/[\w.+-]+;base64,)?(iVBORw0KGgo|/9j/)[A-Za-z0-9+/]*={0,2}")


def load(path: Path) -> list[dict[str, Any]]:
    interactions: list[dict[str, Any]] = yaml.safe_load(path.read_text(encoding="utf-8"))["interactions"]
    return interactions


def text_of(value: Any) -> str:
    """Every string in a cassette, bodies decoded, image base64 cut out (it is data, not text)."""
    if isinstance(value, dict):
        return "\n".join(f"{key}: {text_of(item)}" for key, item in value.items())
    if isinstance(value, list):
        return "\n".join(text_of(item) for item in value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _IMAGE_BASE64.sub("<image>", str(value))


def headers_named(headers: dict[str, list[str]], name: str) -> list[str]:
    return [value for key, values in headers.items() if key.lower() == name for value in values]


def response_json(interaction: dict[str, Any]) -> Any:
    body = interaction["response"]["body"]["string"]
    try:
        return json.loads(body)
    except ValueError:
        return None


def test_there_are_cassettes() -> None:
    assert len(CASSETTES) >= 15, "cassettes/ lost its recordings"


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.stem)
def test_a_cassette_fits_the_size_budget(path: Path) -> None:
    assert path.stat().st_size <= SIZE_BUDGET, f"{path.name}: {path.stat().st_size} bytes > {SIZE_BUDGET}"


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.stem)
def test_a_cassette_holds_only_the_placeholder_authorization(path: Path) -> None:
    for interaction in load(path):
        assert headers_named(interaction["request"]["headers"], "authorization") == [AUTH_PLACEHOLDER]


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.stem)
def test_a_cassette_holds_nothing_shaped_like_a_key(path: Path) -> None:
    found = key_shapes_in(text_of(load(path)))
    assert not found, f"{path.name} holds " + ", ".join(f"{what}: {value[:12]}..." for what, value in found)


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.stem)
def test_a_cassette_does_not_hold_the_key_in_the_environment(path: Path) -> None:
    raw = path.read_text(encoding="utf-8")
    decoded = text_of(load(path))
    for name in ("STEPFUN_API_KEY", "STEP_API_KEY"):
        key = os.environ.get(name)
        if key and key != REPLAY_API_KEY:
            assert key not in raw and key not in decoded, f"{path.name} holds ${name}"


@pytest.mark.parametrize("path", CASSETTES, ids=lambda p: p.stem)
def test_a_cassette_holds_only_tiny_placeholder_images_and_normalised_urls(path: Path) -> None:
    for interaction in load(path):
        for item in (response_json(interaction) or {}).get("data") or []:
            for field in ("b64_json", "image"):
                if item.get(field):
                    png = base64.b64decode(item[field])
                    assert SCRUBBED_MARKER.encode() in png and len(png) < 2048
            if item.get("url") and "X-Tos-" in item["url"]:
                assert "X-Tos-Signature=SIGNATURE" in item["url"]
                assert "X-Tos-Credential=CREDENTIAL" in item["url"]


def test_every_cassette_belongs_to_a_test() -> None:
    for directory in {path.parent for path in CASSETTES}:
        module = Path(__file__).with_name(f"{directory.name}.py")
        assert module.exists(), f"cassettes/{directory.name}/ has no test module"
        names = {node.name for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.FunctionDef)}
        names |= {
            node.name for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.AsyncFunctionDef)
        }
        stale = sorted(path.stem for path in directory.glob("*.yaml") if path.stem not in names)
        assert not stale, f"stale cassettes (no such test): {stale}"


# --- the recording hooks -----------------------------------------------------------------------


def noisy_png(width: int, height: int) -> bytes:
    """An incompressible PNG: what a real generated image costs in a cassette."""
    rng = random.Random(7)
    image = Image.frombytes("L", (width, height), rng.randbytes(width * height))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


LIVE_KEY = "sk-" + "Ab3" * 16
SIGNED_URL = (
    "https://res.stepfun.com/image_gen/20250919/0199615079387bdab3f0916a187701c8.png?X-Tos-Algorithm=TOS4-HMAC-SHA256"
    "&X-Tos-Credential=AKLTMmVmYjcxNDdhZWE4NDU4NzllMTc1MmIyMGUzYzBlYWY%2F20250919%2Fcn-shanghai%2Ftos%2Frequest"
    "&X-Tos-Date=20250919T093128Z&X-Tos-Expires=3600&X-Tos-Signature=fe146e28c50c567fab00a3410d659de45b58344f7b804ef4"
    "&X-Tos-SignedHeaders=host"
)


def json_request(body: dict[str, Any]) -> Request:
    return Request(
        "POST",
        "https://api.stepfun.com/v1/images/image2image",
        json.dumps(body).encode(),
        {"Authorization": f"Bearer {LIVE_KEY}", "Content-Type": "application/json", "X-Stainless-OS": "Linux"},
    )


def test_recording_a_request_hides_the_key_and_shrinks_its_images(vcr_config: dict[str, Any]) -> None:
    source = noisy_png(300, 200)
    data_url = "data:image/png;base64," + base64.b64encode(source).decode()
    request = json_request(
        {"model": "step-2x-large", "prompt": "猫", "source_url": data_url, "source_weight": 0.5, "seed": 1}
    )
    assert len(request.body) > 50_000

    recorded = vcr_config["before_record_request"](request)

    assert recorded.headers["Authorization"] == AUTH_PLACEHOLDER
    assert "X-Stainless-OS" not in recorded.headers
    assert len(recorded.body) < 1024
    body = json.loads(recorded.body)
    assert body["source_url"].startswith("data:image/png;base64,")
    tiny = base64.b64decode(body["source_url"].split(",", 1)[1])
    assert (sniff(tiny).width, sniff(tiny).height) == (300, 200)
    assert body["seed"] == 1 and body["prompt"] == "猫"


def test_recording_a_request_shrinks_bare_base64_and_nested_images(vcr_config: dict[str, Any]) -> None:
    bare = base64.b64encode(noisy_png(64, 64)).decode()
    request = json_request({"source_image": bare, "style_reference": {"source_url": bare, "weight": 1}})

    body = json.loads(vcr_config["before_record_request"](request).body)

    assert not body["source_image"].startswith("data:")  # bare stays bare: the guide sends it so
    assert len(body["source_image"]) < 400
    assert len(body["style_reference"]["source_url"]) < 400


def test_recording_a_multipart_request_shrinks_the_file_and_keeps_the_fields(vcr_config: dict[str, Any]) -> None:
    boundary = b"b0undary"
    parts = [
        (b'Content-Disposition: form-data; name="prompt"', "换成雪地".encode()),
        (
            b'Content-Disposition: form-data; name="image"; filename="image.png"\r\nContent-Type: image/png',
            noisy_png(96, 64),
        ),
    ]
    request = Request(
        "POST",
        "https://api.stepfun.com/v1/images/edits",
        build_multipart(parts, boundary),
        {"Content-Type": "multipart/form-data; boundary=b0undary", "Authorization": f"Bearer {LIVE_KEY}"},
    )

    recorded = vcr_config["before_record_request"](request)

    assert len(recorded.body) < 1024
    assert "换成雪地".encode() in recorded.body
    png = recorded.body[recorded.body.index(b"\x89PNG") :]
    assert (sniff(png).width, sniff(png).height) == (96, 64)
    match_stepfun_body(recorded, vcr_config["before_record_request"](request))  # stable: matches itself


def test_recording_a_response_shrinks_b64_json_and_normalises_signed_urls(vcr_config: dict[str, Any]) -> None:
    image = noisy_png(320, 240)
    body = {
        "created": 1,
        "data": [
            {"b64_json": base64.b64encode(image).decode(), "seed": 5, "finish_reason": "success"},
            {"url": SIGNED_URL, "seed": 5, "finish_reason": "success"},
        ],
    }
    encoded = json.dumps(body).encode()
    response: dict[str, Any] = {
        "status": {"code": 200, "message": "OK"},
        "headers": {
            "Content-Type": ["application/json"],
            "Content-Length": [str(len(encoded))],
            "Set-Cookie": ["session=secret"],
        },
        "body": {"string": encoded},
    }

    recorded = vcr_config["before_record_response"](response)

    data = json.loads(recorded["body"]["string"])["data"]
    tiny = base64.b64decode(data[0]["b64_json"])
    assert (sniff(tiny).width, sniff(tiny).height) == (320, 240)
    assert len(tiny) < 600
    assert data[0]["seed"] == 5
    assert "X-Tos-Signature=SIGNATURE" in data[1]["url"]
    assert "AKLT" not in data[1]["url"] and "X-Tos-Date=20250101T000000Z" in data[1]["url"]
    assert data[1]["url"].startswith("https://res.stepfun.com/image_gen/20250919/")
    assert "Set-Cookie" not in recorded["headers"]
    assert recorded["headers"]["Content-Length"] == [str(len(recorded["body"]["string"]))]
    assert response["body"]["string"] == encoded  # the caller's response is untouched


def test_json_bodies_match_regardless_of_key_order_but_not_of_values() -> None:
    a = json_request({"prompt": "猫", "seed": 1, "size": "512x512"})
    b = Request("POST", a.uri, b'{"size": "512x512",  "seed": 1, "prompt": "\\u732b"}', dict(a.headers))
    c = Request("POST", a.uri, b'{"size": "512x512", "seed": 2, "prompt": "\\u732b"}', dict(a.headers))

    match_stepfun_body(a, b)
    with pytest.raises(AssertionError, match=r"differ in \['seed'\]"):
        match_stepfun_body(a, c)


def test_multipart_bodies_match_regardless_of_the_boundary() -> None:
    parts = [(b'Content-Disposition: form-data; name="seed"', b"7")]
    first = Request("POST", "http://x/v1/images/edits", build_multipart(parts, b"aaaa"), {})
    first.headers["Content-Type"] = "multipart/form-data; boundary=aaaa"
    second = Request("POST", "http://x/v1/images/edits", build_multipart(parts, b"bbbb"), {})
    second.headers["Content-Type"] = "multipart/form-data; boundary=bbbb"

    match_stepfun_body(first, second)


def test_vcr_accepts_the_config(vcr_config: dict[str, Any]) -> None:
    recorder = vcr.VCR(**vcr_config)
    recorder.register_matcher("stepfun_body", match_stepfun_body)
    assert recorder.match_on == ("method", "path", "query", "stepfun_body")


# --- the key-shape checker itself ---------------------------------------------------------------

HEX40 = "3fa9c2e14b7d8a0f6e5d4c3b2a1908f7e6d5c4b3"
TRACE = "09d8a5e31aa24dc8aedbcd42c3bbf245"
BOUNDARY = "65d4f3c57910be8d4a32aab58afb82a8"
CLEAN = (
    f"request: headers: content-type: multipart/form-data; boundary={BOUNDARY}\n"
    f'body: --{BOUNDARY}\r\nContent-Disposition: form-data; name="seed"\r\n\r\n7\r\n--{BOUNDARY}--\r\n'
    f"response: headers: x-trace-id: {TRACE}\n"
    f'body: string: {{"id": "{TRACE}.{TRACE}", "data": [{{"url": '
    f'"https://res.stepfun.com/image_gen/20250919/{TRACE}.png?X-Tos-Signature=SIGNATURE"}}]}}'
)


def test_the_checker_passes_what_cassettes_legitimately_hold() -> None:
    assert key_shapes_in(CLEAN) == []


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(f"x-debug: key={HEX40}", id="40-char hex in a header"),
        pytest.param(f"x-session: {TRACE}", id="a trace-id-shaped value in another header"),
        pytest.param(f"x-trace-id: {HEX40}", id="a trace id of the wrong length"),
        pytest.param(f'"prompt": "token {TRACE.upper()}"', id="upper-case hex in a body"),
        pytest.param(f"--{HEX40}", id="a boundary-shaped line that is no boundary"),
        pytest.param(f"https://res.stepfun.com/image_gen/x/a.png?X-Tos-Signature={HEX40}", id="a real signature"),
        pytest.param("Authorization: Bearer abc", id="a bearer token"),
        pytest.param("sk-" + "Ab3" * 10, id="an OpenAI-style key"),
        pytest.param("Xy9" * 12, id="a mixed-case token"),
    ],
)
def test_the_checker_finds_a_planted_secret(planted: str) -> None:
    found = key_shapes_in(CLEAN + "\n" + planted)
    assert found, f"missed: {planted}"
    assert key_shapes_in(CLEAN) == []
