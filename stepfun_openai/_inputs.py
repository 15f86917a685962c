"""Turning what a user has (a path, bytes, a file, a URL, base64) into what StepFun takes.

JSON endpoints take a string: an http(s) URL as is, a ``data:`` URL, or (``source_image`` on
generations, as the seed guide sends it) bare base64. The edits endpoint takes a file upload.

Every local input is bounded by ``limit`` (the model's byte limit, or :data:`MAX_INPUT_BYTES`):
a path is ``stat``-ed before it is opened and refused unless it is a regular file no larger than
the limit (a FIFO, a device such as ``/dev/zero``, a directory or a socket would block or never
end); it is opened non-blocking and checked again with ``fstat`` (it may have been swapped); and
every read, from a path or a file object, stops after ``limit + 1`` bytes, so a file that grows
or a file object that yields more than it claimed costs at most that much memory. Bytes are
measured before they are copied, base64 by its length before it is decoded, and a PIL image is
encoded into a buffer that refuses to grow past the limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from ._exceptions import StepFunValidationError
from ._sniff import HEADER_BYTES, ImageInfo, sniff
from ._urls import is_data_url, is_http_url

__all__ = [
    "MAX_INPUT_BYTES",
    "EncodedImage",
    "InlineImage",
    "decode_image_string",
    "encode_image",
    "encode_inline",
    "image_bytes",
    "inspect_image_string",
    "open_image_file",
    "read_bounded",
]

MAX_INPUT_BYTES = 64 * 1024 * 1024
"""The most an image input is read (or decoded) to when no model limit applies: with
``validate=False``, with ``fit=True`` (which may shrink a larger image) or for a model the catalog
does not know. With validation on, the model's own limit (10 MB) applies instead."""

_ACCEPTED = "an http(s) URL, a data: URL, bare base64, a file path, bytes, a binary file object, or a PIL image"
_BASE64_RE = re.compile(rb"^[A-Za-z0-9+/\r\n]+={0,2}$")
_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.IGNORECASE)
# 4 base64 characters carry 3 bytes: this many characters decode to HEADER_BYTES.
_HEAD_CHARS = (HEADER_BYTES // 3) * 4
_MAX_PATH_CHARS = 4096
"""Longer strings are never taken for a file path (they are base64)."""
_FIT_HINT = "pass fit=True (needs the [pil] extra: pip install 'stepfun-openai[pil]') to convert or scale it"


def _megabytes(count: int) -> str:
    return f"{count / (1024 * 1024):g} MB"


def too_large(param: str, shown: object, limit: int) -> StepFunValidationError:
    """The error for an input over ``limit`` bytes. The model's limit can be lifted (``fit=True``
    shrinks the image, ``validate=False`` sends it); :data:`MAX_INPUT_BYTES` cannot."""
    if limit >= MAX_INPUT_BYTES:
        return StepFunValidationError(
            param,
            shown,
            f"at most {limit} bytes ({_megabytes(limit)}), the cap on any image input",
            skippable=False,
        )
    return StepFunValidationError(
        param, shown, f"at most {limit} bytes ({_megabytes(limit)})", hint=_FIT_HINT, skippable=True
    )


_SPECIAL_FILES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _check_regular(info: os.stat_result, param: str, shown: str, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "not a regular file")
        raise StepFunValidationError(
            param, shown, f"a regular image file; this is {kind}, which is never read", skippable=False
        )
    if info.st_size > limit:
        raise too_large(param, shown, limit)


_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0)


def open_image_file(path: str | bytes, *, param: str, limit: int = MAX_INPUT_BYTES) -> IO[bytes]:
    """A regular file of at most ``limit`` bytes, opened for reading; anything else is refused
    without blocking.

    ``stat`` first, so a FIFO is never opened (opening one waits for a writer) nor a device read
    (``/dev/zero`` never ends); opened with ``O_NONBLOCK`` in case the path was swapped for a FIFO
    since, and checked again with ``fstat`` on what was opened. The size the filesystem reports is
    not trusted further: reads stay bounded by :func:`read_bounded`.
    """
    shown = os.fsdecode(path)
    try:
        before = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _unreadable(param, shown, exc) from None
    _check_regular(before, param, shown, limit)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise _unreadable(param, shown, exc) from None
    try:
        _check_regular(os.fstat(fd), param, shown, limit)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bounded(
    handle: Any, *, param: str, shown: object, limit: int = MAX_INPUT_BYTES, chunk: int | None = None
) -> Iterator[bytes]:
    """``handle``'s bytes, ``chunk`` at a time (default: the encoder's piece), never reading more
    than ``limit + 1`` bytes: one byte past the limit is enough to know it is too large."""
    size = chunk or _CHUNK
    total = 0
    read = getattr(handle, "read", None)
    if not callable(read):
        raise StepFunValidationError(param, shown, f"expected {_ACCEPTED}")
    try:
        while True:
            want = min(size, limit + 1 - total)
            piece = bytearray()
            while len(piece) < want:  # short reads (pipes, sockets): fill the piece
                more = read(want - len(piece))
                if isinstance(more, str):
                    raise StepFunValidationError(param, shown, "a file object must be opened in binary mode ('rb')")
                if not isinstance(more, (bytes, bytearray, memoryview)):
                    raise StepFunValidationError(
                        param, shown, f"a binary file object whose read() gives bytes, not {type(more).__name__}"
                    )
                if not more:
                    break
                piece += more
            total += len(piece)
            if total > limit:
                raise too_large(param, shown, limit)
            if not piece:
                return
            yield bytes(piece)
            if len(piece) < want:
                return
    except StepFunValidationError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a closed file
        raise _unreadable(param, shown, exc) from None


def _unreadable(param: str, shown: object, exc: Exception) -> StepFunValidationError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StepFunValidationError(param, shown, f"could not read the file: {reason}", skippable=False)


def _local_path(value: Any, param: str) -> str | bytes | None:
    """The file path ``value`` names (a ``PathLike``, or a string naming something that exists:
    a special file included, for :func:`open_image_file` to refuse by name), else ``None``."""
    if isinstance(value, os.PathLike):
        try:
            path: str | bytes = os.fspath(value)
            return path
        except TypeError:
            raise StepFunValidationError(param, value, f"expected {_ACCEPTED}") from None
    if not isinstance(value, str) or len(value) >= _MAX_PATH_CHARS or is_http_url(value) or is_data_url(value):
        return None
    try:
        os.stat(value)
    except (OSError, ValueError):
        return None
    return value


def _from_bytes(value: bytes | bytearray | memoryview, param: str, limit: int) -> memoryview:
    view = value if isinstance(value, memoryview) else memoryview(value)
    if view.nbytes > limit:
        raise too_large(param, f"<{view.nbytes} bytes>", limit)
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def _read_all(handle: Any, param: str, shown: object, limit: int) -> bytes:
    return b"".join(read_bounded(handle, param=param, shown=shown, limit=limit))


@dataclass(frozen=True)
class EncodedImage:
    """An image as it goes on the wire in a JSON body."""

    text: str
    """The string to send: an http(s) URL, a ``data:`` URL or bare base64."""
    info: ImageInfo
    nbytes: int | None
    """Decoded size in bytes; ``None`` for a remote URL."""
    is_url: bool = False


def _read_source(value: Any, param: str, limit: int = MAX_INPUT_BYTES) -> bytes | str:
    """Bytes for local sources (at most ``limit``); the string itself for URL/data URL/base64 strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _from_bytes(value, param, limit).tobytes()
    path = _local_path(value, param)
    if path is not None:
        with open_image_file(path, param=param, limit=limit) as handle:
            return _read_all(handle, param, os.fsdecode(path), limit)
    if isinstance(value, str):
        if is_http_url(value) or is_data_url(value):
            return value
        if len(value) >= 16 and _BASE64_RE.match(value[:_HEAD_CHARS].encode("ascii", "replace")):
            return value
        raise StepFunValidationError(param, value, f"expected {_ACCEPTED}; this is none of those (no such file?)")
    if hasattr(value, "read"):
        return _read_all(value, param, value, limit)
    pil = _from_pil(value, param, limit)
    if pil is not None:
        return pil
    raise StepFunValidationError(param, type(value).__name__, f"expected {_ACCEPTED}")


class _BoundedBuffer(io.BytesIO):
    """A buffer that refuses to grow past ``limit`` bytes (a PIL image is encoded into it)."""

    def __init__(self, limit: int, param: str) -> None:
        super().__init__()
        self.limit = limit
        self.param = param

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.tell() + size > self.limit:
            raise too_large(self.param, "<PIL image>", self.limit)
        return super().write(data)


def _from_pil(value: Any, param: str, limit: int) -> bytes | None:
    """A ``PIL.Image.Image`` becomes PNG bytes (JPEG for photos without alpha would be smaller,
    but PNG is lossless and accepted everywhere), at most ``limit`` of them."""
    module = type(value).__module__
    if not module.startswith("PIL."):
        return None
    buffer = _BoundedBuffer(limit, param)
    image = value
    try:
        if image.mode not in ("RGB", "RGBA", "L", "LA"):
            # a palette image's transparency lives in image.info, not in a band: keep it as alpha
            has_alpha = "A" in image.getbands() or "transparency" in image.info
            image = image.convert("RGBA" if has_alpha else "RGB")
        image.save(buffer, format="PNG")
    except StepFunValidationError:
        raise
    except (OSError, ValueError, AttributeError) as exc:
        raise StepFunValidationError(param, value, f"a PIL image that can be saved as PNG ({exc})") from None
    return buffer.getvalue()


def encode_image(value: Any, *, param: str, data_url: bool = True, limit: int = MAX_INPUT_BYTES) -> EncodedImage:
    """Encode an image input for a JSON body.

    ``data_url=False`` gives bare base64 (``source_image`` on generations); strings the user
    already encoded are sent as they are, never decoded and re-encoded.
    """
    source = _read_source(value, param, limit)
    if isinstance(source, str):
        inspected = inspect_image_string(source, param=param, limit=limit)
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


def _payload_start(text: str, param: str) -> int:
    """Where the base64 of a data URL starts (0 for bare base64)."""
    if not is_data_url(text):
        return 0
    match = _DATA_URL_RE.match(text[:200])
    if not match:
        raise StepFunValidationError(param, text, "a data: URL must look like data:image/png;base64,<data>")
    return match.end()


def _decoded_size(text: str, start: int, limit: int | None = None) -> int:
    """The bytes base64 ``text[start:]`` decodes to, from its length alone. Line breaks are not
    counted when it matters: when the length says more than ``limit``."""
    chars = len(text) - start
    padding = text.endswith("==") + text.endswith("=")
    if limit is not None and chars * 3 // 4 - padding > limit:
        chars -= text.count("\n", start) + text.count("\r", start)
    return chars * 3 // 4 - padding


def inspect_image_string(text: str, *, param: str, limit: int | None = None) -> EncodedImage:
    """Format, pixel size and byte count of an image string, decoding only its first bytes.
    With ``limit``, a string that would decode to more bytes is refused."""
    if is_http_url(text):
        return EncodedImage(text=text, info=ImageInfo(None, None, None), nbytes=None, is_url=True)
    payload_start = _payload_start(text, param)
    nbytes = _decoded_size(text, payload_start, limit)
    if limit is not None and nbytes > limit:
        raise too_large(param, f"<base64 of {nbytes} bytes>", limit)
    head_chars = text[payload_start : payload_start + _HEAD_CHARS]
    try:
        head = base64.b64decode(_pad(head_chars))
    except (binascii.Error, ValueError):
        raise StepFunValidationError(param, text, f"not valid base64; expected {_ACCEPTED}") from None
    return EncodedImage(text=text, info=sniff(head), nbytes=nbytes)


def _pad(chars: str) -> str:
    chars = "".join(chars.split())
    usable = len(chars) - len(chars) % 4
    return chars[:usable]


def decode_image_string(text: str, *, param: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes behind a data URL or bare base64 string, refused from its length (before
    decoding) when they would be more than ``limit``."""
    start = _payload_start(text, param)
    nbytes = _decoded_size(text, start, limit)
    if nbytes > limit:
        raise too_large(param, f"<base64 of {nbytes} bytes>", limit)
    try:
        return base64.b64decode(text[start:], validate=False)
    except (binascii.Error, ValueError):
        raise StepFunValidationError(param, text, f"not valid base64; expected {_ACCEPTED}") from None


def image_bytes(value: Any, *, param: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """Raw bytes of an image input (at most ``limit``), for multipart uploads. URLs are not fetched."""
    source = _read_source(value, param, limit)
    if isinstance(source, bytes):
        return source
    if is_http_url(source):
        raise StepFunValidationError(
            param, source, "the edits endpoint uploads a file; pass a path, bytes, a file object or base64, not a URL"
        )
    return decode_image_string(source, param=param, limit=limit)


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
    value: Any,
    *,
    param: str,
    data_url: bool = True,
    fit: Callable[[bytes], bytes] | None = None,
    limit: int = MAX_INPUT_BYTES,
) -> EncodedImage | InlineImage:
    """Like :func:`encode_image`, but a local image becomes an :class:`InlineImage` (base64 bytes).

    URLs are sent as they are (an ``EncodedImage``); base64 the user encoded goes unchanged. Files
    and bytes are encoded a piece at a time. ``fit`` (``fit=True``: a function that converts or
    scales image bytes) needs the whole image, and may change it. No input is read or decoded
    past ``limit`` bytes.
    """
    pieces = _pieces(value, param, limit) if fit is None else None
    if pieces is None:
        source = _read_source(value, param, limit)
        if isinstance(source, str):
            if is_http_url(source) or (fit is None and not source.isascii()):
                return encode_image(source, param=param, data_url=data_url, limit=limit)
            if fit is None:
                return _inline_from_text(source, param=param, data_url=data_url, limit=limit)
            source = decode_image_string(source, param=param, limit=limit)
        if fit is not None:
            source = fit(source)
        pieces = _pieces(source, param, MAX_INPUT_BYTES if fit is not None else limit)
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


def _pieces(value: Any, param: str, limit: int = MAX_INPUT_BYTES) -> Iterator[bytes | memoryview] | None:
    """Raw bytes ``_CHUNK`` at a time (at most ``limit`` of them) from bytes, a file path or a
    binary file; ``None`` for the other kinds (strings that are not paths, PIL images)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        view = _from_bytes(value, param, limit)
        return (view[start : start + _CHUNK] for start in range(0, len(view), _CHUNK))
    path = _local_path(value, param)
    if path is not None:
        handle = open_image_file(path, param=param, limit=limit)
        return _closing(handle, read_bounded(handle, param=param, shown=os.fsdecode(path), limit=limit))
    if hasattr(value, "read") and not isinstance(value, str):
        return read_bounded(value, param=param, shown=value, limit=limit)
    return None


def _closing(handle: IO[bytes], pieces: Iterator[bytes]) -> Iterator[bytes]:
    with handle:
        yield from pieces


def _inline_from_text(text: str, *, param: str, data_url: bool, limit: int) -> EncodedImage | InlineImage:
    """A data URL or base64 string the user encoded: its base64 goes on the wire unchanged, as
    bytes (one ``encode``, no ``json.dumps`` copies)."""
    inspected = inspect_image_string(text, param=param, limit=limit)
    start = _payload_start(text, param)
    if any(char in text for char in '\r\n"\\'):
        # not writable into JSON as is; the ordinary path escapes it
        return encode_image(text, param=param, data_url=data_url, limit=limit)
    encoded = text.encode("ascii")
    prefix = encoded[:start] if start else None
    b64 = encoded[start:] if start else encoded
    return InlineImage([b64], inspected.info, inspected.nbytes or 0, data_url=data_url, prefix=prefix)
