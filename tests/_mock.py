"""A recording mock transport: what the client sent, and a scripted answer."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import httpx2


def tiny_png(width: int = 8, height: int = 8) -> bytes:
    """A real, valid RGB PNG of the given size."""
    raw = b"".join(b"\x00" + b"\x80\x40\x20" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


PNG_B64 = base64.b64encode(tiny_png()).decode()


def ok_body(**image: Any) -> dict[str, Any]:
    item = {"b64_json": PNG_B64, "finish_reason": "success", "seed": 42, **image}
    return {"id": "abc.def", "created": 1723595647, "data": [item]}


class Recorder:
    """``transport`` for ``httpx2.Client``/``AsyncClient``; ``requests`` lists what was sent."""

    def __init__(self, answer: Callable[[httpx2.Request], httpx2.Response] | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self.answer = answer or (lambda request: httpx2.Response(200, json=ok_body(), headers={"X-Trace-Id": "t-1"}))
        self.transport = httpx2.MockTransport(self._handle)

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        return self.answer(request)

    @property
    def last(self) -> httpx2.Request:
        return self.requests[-1]

    def last_json(self) -> dict[str, Any]:
        return json.loads(self.last.content)

    def last_form(self) -> dict[str, str]:
        """Form fields of a multipart request (files excluded)."""
        content_type = self.last.headers["content-type"]
        boundary = content_type.split("boundary=")[1].encode()
        fields: dict[str, str] = {}
        for part in self.last.content.split(b"--" + boundary):
            if b"Content-Disposition" not in part:
                continue
            head, _, value = part.partition(b"\r\n\r\n")
            name = head.split(b'name="')[1].split(b'"')[0].decode()
            if b"filename=" in head:
                fields[name] = "<file>"
                continue
            fields[name] = value.rstrip(b"\r\n").decode()
        return fields

    def file_part(self, name: str = "image") -> tuple[str, bytes]:
        """(content-type, bytes) of an uploaded file."""
        boundary = self.last.headers["content-type"].split("boundary=")[1].encode()
        for part in self.last.content.split(b"--" + boundary):
            if f'name="{name}"'.encode() in part and b"filename=" in part:
                head, _, value = part.partition(b"\r\n\r\n")
                ctype = head.split(b"Content-Type: ")[1].split(b"\r\n")[0].decode()
                return ctype, value[: -len(b"\r\n")]
        raise AssertionError(f"no file part {name!r}")


def error_response(status: int, message: str, error_type: str, trace: str = "trace-err") -> httpx2.Response:
    return httpx2.Response(
        status, json={"error": {"message": message, "type": error_type}}, headers={"X-Trace-Id": trace}
    )
