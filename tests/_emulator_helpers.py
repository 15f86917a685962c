"""Shared bits of the emulator tests: tiny images, raw HTTP calls, a fake clock, pixel maths."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import httpx2
from PIL import Image, ImageChops, ImageStat

from stepfun_openai.emulator import Emulator

KEY = "sk-test"

http = httpx2.Client()
"""One client for the raw calls: a fresh ``httpx2.post`` builds an SSL context each time (tens of ms)."""


def make_png(width: int, height: int, rgb: tuple[int, int, int] = (200, 40, 40), *, level: int = 6) -> bytes:
    """A solid-colour RGB PNG written by hand (rows unfiltered)."""
    raw = (b"\x00" + bytes(rgb) * width) * height

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, level))
        + chunk(b"IEND", b"")
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def post(emu: Emulator, path: str, *, key: str | None = KEY, **kwargs: Any) -> httpx2.Response:
    headers = dict(kwargs.pop("headers", None) or {})
    if key is not None:
        headers.setdefault("Authorization", f"Bearer {key}")
    kwargs.setdefault("timeout", 30)
    return http.post(emu.url + path, headers=headers, **kwargs)


def generate(emu: Emulator, **body: Any) -> httpx2.Response:
    body = {
        "model": "step-2x-large",
        "prompt": "a lighthouse",
        "size": "256x256",
        "response_format": "b64_json",
        **body,
    }
    return post(emu, "/v1/images/generations", json=body)


def png_of(response: httpx2.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["data"][0]["b64_json"])


def image(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def mean_abs_diff(a: bytes, b: bytes) -> float:
    first, second = image(a), image(b)
    second = second.resize(first.size)
    return sum(ImageStat.Stat(ImageChops.difference(first, second)).mean) / 3


def mean_colour(png: bytes) -> tuple[float, ...]:
    return tuple(ImageStat.Stat(image(png)).mean)


def error_of(response: httpx2.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["type"], error["message"]


class FakeClock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
