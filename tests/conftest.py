"""Shared test fixtures.

Cassettes (pytest-recording + vcrpy)
------------------------------------
Tests marked ``@pytest.mark.vcr`` replay HTTP interactions from the top-level ``cassettes/``
directory (``cassettes/<test module>/<test name>.yaml``). What goes into a cassette is scrubbed
on the way in, and the same scrubbing is applied to a live request before it is matched:

* ``Authorization`` becomes :data:`AUTH_PLACEHOLDER`; ``X-Stainless-*`` (OS, arch, runtime) are
  dropped, and so are ``Set-Cookie`` response headers.
* Every image, in a request (a data URL, bare base64, a multipart file) or in a response
  (``b64_json``, a downloaded PNG), becomes a tiny valid PNG of the *same width and height*; a
  request image also carries the SHA-256 of the original in a ``tEXt`` chunk, so a different
  source image still fails to match.
* Presigned URL query strings (``X-Tos-Signature``, ``X-Tos-Credential``, ``X-Tos-Date``) get
  fixed values, in URLs and in JSON bodies.

Requests match on method, path, query and the body: parsed JSON (key order and whitespace do not
matter, every value does, the seed included) or multipart form fields (not the boundary). The
host is not matched, so one cassette replays whether it was recorded against the emulator or
api.stepfun.com. See cassettes/README.md for how to (re-)record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stepfun_openai import DEFAULT_BASE_URL, AsyncStepFun, StepFun
from stepfun_openai._sniff import sniff

ROOT = Path(__file__).resolve().parents[1]
CASSETTE_DIR = ROOT / "cassettes"

AUTH_PLACEHOLDER = "Bearer <STEPFUN_API_KEY>"
"""What every recorded ``Authorization`` header says."""

REPLAY_API_KEY = "replay-placeholder"
"""The key cassette tests use when ``STEPFUN_API_KEY`` is unset (replay never sends it anywhere)."""

REPLAY_BASE_URL = DEFAULT_BASE_URL
"""The base URL when ``STEPFUN_BASE_URL`` is unset. Hosts are not matched, so any URL replays; the
live one means a request that escaped the cassette would be caught by ``--block-network``."""

SCRUBBED_MARKER = "vcr-scrubbed"
"""``tEXt`` keyword of the tiny PNGs that stand in for real images."""

_SIGNED_QUERY_VALUES = {
    "x-tos-signature": "SIGNATURE",
    "x-tos-credential": "CREDENTIAL",
    "x-tos-date": "20250101T000000Z",
    "x-tos-security-token": "TOKEN",
}
_DATA_URL = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.DOTALL)
_MIN_BARE_BASE64 = 64
"""Shorter strings are never taken for an image (a prompt, a model name)."""


# --- images ------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def tiny_png(width: int, height: int, note: str | None = None) -> bytes:
    """A valid black 1-bit PNG of ``width`` x ``height``: a few hundred bytes even at 2048x2048."""
    width, height = max(1, width), max(1, height)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    text = f"{SCRUBBED_MARKER}\x00{note or ''}".encode("latin-1")
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"tEXt", text)
        + _chunk(b"IDAT", zlib.compress(row * height, 9))
        + _chunk(b"IEND", b"")
    )


def _scrubbed_note(data: bytes) -> str | None:
    """The note of one of our tiny PNGs, or None for any other bytes."""
    marker = b"tEXt" + SCRUBBED_MARKER.encode() + b"\x00"
    position = data.find(marker, 0, 200)
    if not data.startswith(b"\x89PNG") or position < 4:
        return None
    (length,) = struct.unpack(">I", data[position - 4 : position])
    text = data[position + 4 : position + 4 + length]
    return text.partition(b"\x00")[2].decode("latin-1")


def image_identity(data: bytes) -> str:
    """What a request image is compared by: its size and the hash of the original bytes."""
    note = _scrubbed_note(data)
    if note is not None:
        return note
    info = sniff(data[:65536])
    return f"{info.width}x{info.height} sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def shrink_image(data: bytes, *, keep_identity: bool) -> bytes:
    """``data`` as a tiny PNG of the same size (unchanged if it already is one of ours)."""
    if _scrubbed_note(data) is not None:
        return data
    info = sniff(data[:65536])
    return tiny_png(info.width or 1, info.height or 1, image_identity(data) if keep_identity else None)


def _decode_image_string(text: str) -> tuple[str | None, bytes] | None:
    """``(data-URL mime or None for bare base64, bytes)`` if ``text`` holds an image, else None."""
    match = _DATA_URL.match(text)
    if match is None and (len(text) < _MIN_BARE_BASE64 or text.startswith(("http://", "https://"))):
        return None
    payload = match.group(2) if match else text
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if sniff(data[:65536]).format is None:
        return None
    return (match.group(1) if match else None), data


def normalise_url(url: str) -> str:
    """A presigned URL with its signature, credential and date replaced by fixed values."""
    parts = urllib.parse.urlsplit(url)
    if not parts.query:
        return url
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if not any(name.lower() in _SIGNED_QUERY_VALUES for name, _ in pairs):
        return url
    pairs = [(name, _SIGNED_QUERY_VALUES.get(name.lower(), value)) for name, value in pairs]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs)))


def _scrub_string(text: str, *, keep_identity: bool) -> str:
    if text.startswith(("http://", "https://")):
        return normalise_url(text)
    decoded = _decode_image_string(text)
    if decoded is None:
        return text
    mime, data = decoded
    encoded = base64.b64encode(shrink_image(data, keep_identity=keep_identity)).decode()
    return f"data:image/png;base64,{encoded}" if mime else encoded


def _walk(value: Any, leaf: Callable[[str], Any]) -> Any:
    if isinstance(value, dict):
        return {key: _walk(item, leaf) for key, item in value.items()}
    if isinstance(value, list):
        return [_walk(item, leaf) for item in value]
    if isinstance(value, str):
        return leaf(value)
    return value


# --- bodies ------------------------------------------------------------------------------------


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return bytes(body)


def _boundary(content_type: str) -> bytes | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    return match.group(1).encode() if match else None


def parse_multipart(body: bytes, boundary: bytes) -> list[tuple[bytes, bytes]]:
    """``[(part headers, part content)]`` of a multipart body."""
    parts = []
    for segment in body.split(b"--" + boundary)[1:]:
        if segment.startswith(b"--"):
            break
        head, _, content = segment.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        parts.append((head, content.removesuffix(b"\r\n")))
    return parts


def build_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes) -> bytes:
    out = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + content + b"\r\n" for head, content in parts)
    return out + b"--" + boundary + b"--\r\n"


def _disposition(head: bytes) -> dict[str, str]:
    text = head.decode("utf-8", "replace")
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def comparable_body(content_type: str, body: bytes) -> Any:
    """What two request bodies are compared by (see the module docstring)."""
    if not body:
        return None
    if "json" in content_type:
        try:
            return _walk(json.loads(body), _comparable_string)
        except ValueError:
            return body
    boundary = _boundary(content_type) if "multipart/" in content_type else None
    if boundary is not None:
        form: dict[str, Any] = {}
        for head, content in parse_multipart(body, boundary):
            meta = _disposition(head)
            name = meta.get("name", "")
            if "filename" in meta:
                form[name] = {"filename": meta["filename"], "image": image_identity(content)}
            else:
                form[name] = content.decode("utf-8", "replace")
        return form
    return body


def _comparable_string(text: str) -> str:
    if text.startswith(("http://", "https://")):
        return normalise_url(text)
    decoded = _decode_image_string(text)
    return text if decoded is None else f"<image {image_identity(decoded[1])}>"


def match_stepfun_body(r1: Any, r2: Any) -> None:
    """vcrpy matcher: the bodies are equal as JSON or as multipart form fields."""
    a = comparable_body(r1.headers.get("Content-Type", ""), _body_bytes(r1.body))
    b = comparable_body(r2.headers.get("Content-Type", ""), _body_bytes(r2.body))
    if a != b:
        if isinstance(a, dict) and isinstance(b, dict):
            differing = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            raise AssertionError(f"request bodies differ in {differing}: {a} != {b}")
        raise AssertionError(f"request bodies differ: {a!r} != {b!r}")


# --- before_record hooks -----------------------------------------------------------------------


def scrub_request(request: Any) -> Any:
    """before_record_request: placeholder auth, tiny images, normalised URLs (vcrpy passes a copy)."""
    request.uri = normalise_url(request.uri)
    for name in list(request.headers):
        if name.lower().startswith("x-stainless-"):
            del request.headers[name]
    if "Authorization" in request.headers:
        request.headers["Authorization"] = AUTH_PLACEHOLDER
    content_type = request.headers.get("Content-Type", "")
    body = _body_bytes(request.body)
    if not body:
        return request
    if "json" in content_type:
        try:
            parsed = json.loads(body)
        except ValueError:
            return request
        scrubbed = _walk(parsed, lambda text: _scrub_string(text, keep_identity=True))
        request.body = json.dumps(scrubbed, ensure_ascii=False).encode()
    elif "multipart/" in content_type and (boundary := _boundary(content_type)) is not None:
        parts = [
            (head, shrink_image(content, keep_identity=True) if b"filename=" in head else content)
            for head, content in parse_multipart(body, boundary)
        ]
        request.body = build_multipart(parts, boundary)
    else:
        return request
    if "Content-Length" in request.headers:
        request.headers["Content-Length"] = str(len(request.body))
    return request


def _header(headers: dict[str, list[str]], name: str) -> str:
    for key, values in headers.items():
        if key.lower() == name and values:
            return values[0]
    return ""


def scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    """before_record_response: no cookies, tiny images, normalised URLs, a matching Content-Length."""
    headers = {k: v for k, v in response["headers"].items() if k.lower() != "set-cookie"}
    body = _body_bytes(response["body"]["string"])
    content_type = _header(headers, "content-type")
    if content_type.startswith("image/") and body:
        body = shrink_image(body, keep_identity=False)
    elif "json" in content_type and body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if parsed is not None:
            scrubbed = _walk(parsed, lambda text: _scrub_string(text, keep_identity=False))
            body = json.dumps(scrubbed, ensure_ascii=False).encode()
    for key in headers:
        if key.lower() == "content-length":
            headers[key] = [str(len(body))]
    return {**response, "headers": headers, "body": {**response["body"], "string": body}}


# --- pytest-recording wiring -------------------------------------------------------------------


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("stepfun_body", match_stepfun_body)


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    """cassettes/<test module>/ at the top of the repository."""
    return str(CASSETTE_DIR / request.path.stem)


@pytest.fixture
def vcr_config() -> dict[str, Any]:
    return {
        "filter_headers": [("Authorization", AUTH_PLACEHOLDER)],
        "before_record_request": scrub_request,
        "before_record_response": scrub_response,
        "decode_compressed_response": True,
        "match_on": ("method", "path", "query", "stepfun_body"),
    }


def _recording(config: pytest.Config) -> bool:
    return (config.getoption("--record-mode", default=None) or "none") != "none"


def cassette_base_url() -> str:
    return os.environ.get("STEPFUN_BASE_URL") or REPLAY_BASE_URL


def cassette_api_key() -> str:
    return os.environ.get("STEPFUN_API_KEY") or REPLAY_API_KEY


# Only gzip: httpx2 may offer zstd, which vcrpy cannot decode when recording a live answer.
_CASSETTE_HEADERS = {"Accept-Encoding": "gzip"}


@pytest.fixture
def cassette_client() -> Iterator[StepFun]:
    """A client for cassette tests: STEPFUN_BASE_URL / STEPFUN_API_KEY or replay placeholders, no retries."""
    with StepFun(
        api_key=cassette_api_key(), base_url=cassette_base_url(), max_retries=0, default_headers=_CASSETTE_HEADERS
    ) as client:
        yield client


@pytest.fixture
async def async_cassette_client() -> Any:
    async with AsyncStepFun(
        api_key=cassette_api_key(), base_url=cassette_base_url(), max_retries=0, default_headers=_CASSETTE_HEADERS
    ) as client:
        yield client


@pytest.fixture
def emulator_only() -> None:
    """Marks a test whose interaction only the emulator can force (``X-Emulator-Fault``): see
    :func:`pytest_collection_modifyitems`."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # When recording against a non-loopback host, emulator-only tests are skipped *before* their
    # fixtures run: opening a cassette in rewrite mode would already delete the old recording.
    host = urllib.parse.urlsplit(cassette_base_url()).hostname or ""
    if not _recording(config) or host in ("127.0.0.1", "localhost", "::1"):
        return
    skip = pytest.mark.skip(reason="recording against the live API: this cassette can only be recorded by the emulator")
    for item in items:
        if "emulator_only" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _retired_model_warning_is_fresh_per_test() -> Iterator[None]:
    """The retired-model DeprecationWarning is given once per process; each test starts anew,
    so a test that expects it does not depend on which tests ran before."""
    from stepfun_openai import _validation

    _validation._warned_models.clear()
    yield
