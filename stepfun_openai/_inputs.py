"""Turning what a user has (a path, bytes, a file, a URL, base64) into what StepFun takes.

JSON endpoints take a string: an http(s) URL as is, a ``data:`` URL, or (``source_image`` on
generations, as the seed guide sends it) bare base64. The edits endpoint takes a file upload.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._exceptions import StepFunValidationError
from ._sniff import HEADER_BYTES, ImageInfo, sniff
from ._urls import is_data_url, is_http_url

__all__ = [
    "EncodedImage",
    "InlineImage",
    "decode_image_string",
    "encode_image",
    "encode_inline",
    "image_bytes",
    "inspect_image_string",
]

_ACCEPTED = "an http(s) URL, a data: URL, bare base64, a file path, bytes, a binary file object, or a PIL image"
_BASE64_RE = re.compile(rb"^[A-Za-z0-9+/\r\n]+={0,2}$")
_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.IGNORECASE)
# 4 base64 characters carry 3 bytes: this many characters decode to HEADER_BYTES.
_HEAD_CHARS = (HEADER_BYTES // 3) * 4


@dataclass(frozen=True)
class EncodedImage:
    """An image as it goes on the wire in a JSON body."""

    text: str
    """The string to send: an http(s) URL, a ``data:`` URL or bare base64."""
    info: ImageInfo
    nbytes: int | None
    """Decoded size in bytes; ``None`` for a remote URL."""
    is_url: bool = False


def _read_source(value: Any, param: str) -> bytes | str:
    """Bytes for local sources; the string itself for URL/data URL/base64 strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, os.PathLike):
        return _read_file(os.fspath(value), param)
    if isinstance(value, str):
        if is_http_url(value) or is_data_url(value):
            return value
        if len(value) < 4096 and os.path.isfile(value):
            return _read_file(value, param)
        if len(value) >= 16 and _BASE64_RE.match(value[:_HEAD_CHARS].encode("ascii", "replace")):
            return value
        raise StepFunValidationError(param, value, f"expected {_ACCEPTED}; this is none of those (no such file?)")
    if hasattr(value, "read"):
        data = value.read()
        if isinstance(data, str):
            raise StepFunValidationError(param, value, "a file object must be opened in binary mode ('rb')")
        return bytes(data)
    pil = _from_pil(value)
    if pil is not None:
        return pil
    raise StepFunValidationError(param, type(value).__name__, f"expected {_ACCEPTED}")


def _from_pil(value: Any) -> bytes | None:
    """A ``PIL.Image.Image`` becomes PNG bytes (JPEG for photos without alpha would be smaller,
    but PNG is lossless and accepted everywhere)."""
    module = type(value).__module__
    if not module.startswith("PIL."):
        return None
    import io

    buffer = io.BytesIO()
    image = value
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        # a palette image's transparency lives in image.info, not in a band: keep it as alpha
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _read_file(path: str, param: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise StepFunValidationError(param, path, f"could not read the file: {exc.strerror or exc}") from None


def encode_image(value: Any, *, param: str, data_url: bool = True) -> EncodedImage:
    """Encode an image input for a JSON body.

    ``data_url=False`` gives bare base64 (``source_image`` on generations); strings the user
    already encoded are sent as they are, never decoded and re-encoded.
    """
    source = _read_source(value, param)
    if isinstance(source, str):
        inspected = inspect_image_string(source, param=param)
        if inspected.is_url:
            return inspected
        inline = is_data_url(source)
        if data_url and not inline:
            source = f"data:{inspected.info.mime_type};base64,{source}"
        elif not data_url and inline:
            source = source[source.index(",") + 1 :]
        return EncodedImage(text=source, info=inspected.info, nbytes=inspected.nbytes)
    info = sniff(source[:HEADER_BYTES])
    encoded = base64.b64encode(source).decode("ascii")
    if data_url:
        encoded = f"data:{info.mime_type};base64,{encoded}"
    return EncodedImage(text=encoded, info=info, nbytes=len(source))


def inspect_image_string(text: str, *, param: str) -> EncodedImage:
    """Format, pixel size and byte count of an image string, decoding only its first bytes."""
    if is_http_url(text):
        return EncodedImage(text=text, info=ImageInfo(None, None, None), nbytes=None, is_url=True)
    payload_start = 0
    if is_data_url(text):
        match = _DATA_URL_RE.match(text[:200])
        if not match:
            raise StepFunValidationError(param, text, "a data: URL must look like data:image/png;base64,<data>")
        payload_start = match.end()
    head_chars = text[payload_start : payload_start + _HEAD_CHARS]
    try:
        head = base64.b64decode(_pad(head_chars))
    except (binascii.Error, ValueError):
        raise StepFunValidationError(param, text, f"not valid base64; expected {_ACCEPTED}") from None
    payload_len = len(text) - payload_start
    nbytes = payload_len * 3 // 4 - (text.endswith("==") + text.endswith("="))
    return EncodedImage(text=text, info=sniff(head), nbytes=nbytes)


def _pad(chars: str) -> str:
    chars = "".join(chars.split())
    usable = len(chars) - len(chars) % 4
    return chars[:usable]


def decode_image_string(text: str, *, param: str) -> bytes:
    """The bytes behind a data URL or bare base64 string."""
    start = 0
    if is_data_url(text):
        match = _DATA_URL_RE.match(text[:200])
        if not match:
            raise StepFunValidationError(param, text, "a data: URL must look like data:image/png;base64,<data>")
        start = match.end()
    try:
        return base64.b64decode(text[start:], validate=False)
    except (binascii.Error, ValueError):
        raise StepFunValidationError(param, text, f"not valid base64; expected {_ACCEPTED}") from None


def image_bytes(value: Any, *, param: str) -> bytes:
    """Raw bytes of an image input, for multipart uploads. URLs are not fetched."""
    source = _read_source(value, param)
    if isinstance(source, bytes):
        return source
    if is_http_url(source):
        raise StepFunValidationError(
            param, source, "the edits endpoint uploads a file; pass a path, bytes, a file object or base64, not a URL"
        )
    return decode_image_string(source, param=param)


# --- Inline images without intermediate copies ---------------------------------------------------

_CHUNK = 3 * 256 * 1024
"""Raw bytes encoded at a time (a multiple of 3, so the pieces join into valid base64)."""


class InlineImage:
    """A local image going into a JSON body, base64-encoded once, as ``bytes`` pieces.

    It never becomes a ``str``, nor one big buffer: the file is read and encoded a piece at a
    time, and the request body is written around the pieces (see ``_requests.JSONContent``), so a
    10 MB source costs about its base64 once instead of the several copies ``json.dumps`` makes.
    """

    __slots__ = ("chunks", "info", "nbytes", "prefix")

    def __init__(
        self, chunks: list[bytes], info: ImageInfo, nbytes: int, *, data_url: bool, prefix: bytes | None = None
    ) -> None:
        self.chunks = chunks
        self.info = info
        self.nbytes = nbytes
        if prefix is None:
            prefix = f"data:{info.mime_type};base64,".encode("ascii") if data_url else b""
        self.prefix = prefix if data_url else b""

    def __len__(self) -> int:
        """Characters on the wire."""
        return len(self.prefix) + sum(len(chunk) for chunk in self.chunks)

    def head_text(self) -> str:
        """The prefix and enough base64 to sniff: a short stand-in for checks that read the head."""
        head = bytearray(self.prefix)
        for chunk in self.chunks:
            if len(head) >= len(self.prefix) + _HEAD_CHARS:
                break
            head += chunk[:_HEAD_CHARS]
        return head[: len(self.prefix) + _HEAD_CHARS].decode("ascii")

    def text(self) -> str:
        """The whole wire string (a copy: for tests and debugging, not for sending)."""
        return (self.prefix + b"".join(self.chunks)).decode("ascii")

    def encoded(self) -> EncodedImage:
        return EncodedImage(text=self.head_text(), info=self.info, nbytes=self.nbytes)

    def __repr__(self) -> str:
        kind = "data URL" if self.prefix else "base64"
        return f"<inline {self.info.format or 'unknown'} image, {self.nbytes} bytes as {kind}>"


def encode_inline(
    value: Any, *, param: str, data_url: bool = True, fit: Callable[[bytes], bytes] | None = None
) -> EncodedImage | InlineImage:
    """Like :func:`encode_image`, but a local image becomes an :class:`InlineImage` (base64 bytes).

    URLs are sent as they are (an ``EncodedImage``); base64 the user encoded goes unchanged. Files
    and bytes are encoded a piece at a time. ``fit`` (``fit=True``: a function that converts or
    scales image bytes) needs the whole image, and may change it.
    """
    pieces = _pieces(value, param) if fit is None else None
    if pieces is None:
        source = _read_source(value, param)
        if isinstance(source, str):
            if is_http_url(source) or (fit is None and not source.isascii()):
                return encode_image(source, param=param, data_url=data_url)
            if fit is None:
                return _inline_from_text(source, param=param, data_url=data_url)
            source = decode_image_string(source, param=param)
        if fit is not None:
            source = fit(source)
        pieces = _pieces(source, param)
        assert pieces is not None
    head = b""
    nbytes = 0
    chunks: list[bytes] = []
    for piece in pieces:
        if len(head) < HEADER_BYTES:
            head += bytes(piece[: HEADER_BYTES - len(head)])
        nbytes += len(piece)
        chunks.append(base64.b64encode(piece))
    return InlineImage(chunks, sniff(head), nbytes, data_url=data_url)


def _pieces(value: Any, param: str) -> Iterator[bytes | memoryview] | None:
    """Raw bytes ``_CHUNK`` at a time from bytes, a file path or a binary file; ``None`` for the
    other kinds (strings that are not paths, PIL images)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        view = memoryview(value).cast("B")
        return (view[start : start + _CHUNK] for start in range(0, len(view), _CHUNK))
    path = None
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
    elif isinstance(value, str) and not is_http_url(value) and not is_data_url(value):
        if len(value) < 4096 and os.path.isfile(value):
            path = value
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path is not None:
        try:
            handle = open(path, "rb")  # closed by _read_pieces
        except OSError as exc:
            raise StepFunValidationError(param, path, f"could not read the file: {exc.strerror or exc}") from None
        return _read_pieces(handle, param, path, close=True)
    if hasattr(value, "read") and not isinstance(value, str):
        return _read_pieces(value, param, value, close=False)
    return None


def _read_pieces(handle: Any, param: str, shown: object, *, close: bool) -> Iterator[bytes]:
    try:
        while True:
            piece = handle.read(_CHUNK)
            if isinstance(piece, str):
                raise StepFunValidationError(param, shown, "a file object must be opened in binary mode ('rb')")
            while piece and len(piece) < _CHUNK:  # short reads (pipes, sockets): fill the piece
                more = handle.read(_CHUNK - len(piece))
                if not more:
                    break
                piece += more
            if not piece:
                return
            yield bytes(piece)
    except OSError as exc:
        raise StepFunValidationError(param, shown, f"could not read the file: {exc.strerror or exc}") from None
    finally:
        if close:
            handle.close()


def _inline_from_text(text: str, *, param: str, data_url: bool) -> EncodedImage | InlineImage:
    """A data URL or base64 string the user encoded: its base64 goes on the wire unchanged, as
    bytes (one ``encode``, no ``json.dumps`` copies)."""
    inspected = inspect_image_string(text, param=param)
    start = 0
    if is_data_url(text):
        match = _DATA_URL_RE.match(text[:200])
        start = match.end() if match else 0
    if any(char in text for char in '\r\n"\\'):
        # not writable into JSON as is; the ordinary path escapes it
        return encode_image(text, param=param, data_url=data_url)
    encoded = text.encode("ascii")
    prefix = encoded[:start] if start else None
    b64 = encoded[start:] if start else encoded
    return InlineImage([b64], inspected.info, inspected.nbytes or 0, data_url=data_url, prefix=prefix)
