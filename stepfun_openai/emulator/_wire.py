"""Bounded socket I/O for the emulator: reads with a deadline, and one small bounded HTTP GET.

Users run the emulator in their CI, next to code that may misbehave, so nothing a peer does may
hold a thread or grow memory without a limit. :class:`DeadlineReader` is the read side of a socket
where every read waits at most until a deadline, however the bytes trickle in (a per-``recv``
timeout alone lets a client sending one byte every 29 s hold a 30 s timeout forever). The server
reads requests through it, and :func:`get` reads the responses it fetches through it.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from .._urls import redact_url

__all__ = ["DeadlineReader", "FetchError", "get"]


class DeadlineReader(io.RawIOBase):
    """The read side of ``sock``; after :meth:`start` (``seconds``), reads past that deadline raise ``TimeoutError``.

    Wrap it in an ``io.BufferedReader``. ``received`` counts the bytes since :meth:`start`, so a
    caller can tell a silent peer from one that stopped half-way. Closing it leaves the socket open.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        super().__init__()
        self._sock = sock
        self._seconds = seconds
        self._deadline = time.monotonic() + seconds
        self.received = 0

    def start(self, seconds: float | None = None) -> None:
        """A new deadline ``seconds`` (default: the constructor's) from now."""
        self._deadline = time.monotonic() + (self._seconds if seconds is None else seconds)
        self.received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self._sock.settimeout(remaining)
        try:
            count = self._sock.recv_into(buffer)
        finally:
            # Writes (the response) get the whole budget again, not what the read left over.
            self._sock.settimeout(self._seconds)
        self.received += count
        return count


class FetchError(Exception):
    """A fetch refused or failed; the message says why and never holds a URL's signature."""


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _DeadlineSocket:
    """A connected socket whose ``makefile`` (what ``http.client`` reads a response from) keeps a deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        reader = DeadlineReader(self._sock, max(self._deadline - time.monotonic(), 0.001))
        return io.BufferedReader(reader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def get(
    url: str,
    *,
    max_bytes: int,
    seconds: float,
    host_allowed: Callable[[str], bool] = lambda host: True,
    max_redirects: int = 0,
) -> bytes:
    """The body at ``url`` (``http``/``https``), read within ``seconds`` in all, at most ``max_bytes`` long.

    Redirects are followed only up to ``max_redirects``, and every host on the way, the first one
    included, must pass ``host_allowed``: a redirect cannot lead the fetch off the hosts allowed.
    A longer body is refused as soon as its length is known (the header, or the byte past the limit).
    """
    deadline = time.monotonic() + seconds
    for hop in range(max_redirects + 1):
        try:
            parts = urllib.parse.urlsplit(url)
            host, port = parts.hostname or "", parts.port
        except ValueError:  # an unclosed "[", a port out of range
            raise FetchError(f"not a valid URL: {redact_url(url)}") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise FetchError(f"not an http(s) URL: {redact_url(url)}")
        if not host_allowed(host):
            raise FetchError(f"the host {host!r} is not allowed ({redact_url(url)})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"no answer within {seconds:g} s")
        https = parts.scheme.lower() == "https"
        connection_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
        connection = connection_class(host, port, timeout=remaining)
        try:
            connection.connect()
            connection.sock = _DeadlineSocket(connection.sock, deadline)
            connection.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")))
            response = connection.getresponse()
            if response.status in _REDIRECTS and response.getheader("Location"):
                target = urllib.parse.urljoin(url, response.getheader("Location", ""))
                if hop == max_redirects:
                    raise FetchError(
                        f"HTTP {response.status} from {redact_url(url)} redirects to {redact_url(target)}; "
                        f"at most {max_redirects} redirects are followed"
                    )
                url = target
                continue
            if response.status != 200:
                raise FetchError(f"HTTP {response.status} from {redact_url(url)}")
            return _read_at_most(response, max_bytes)
        except TimeoutError:
            raise FetchError(f"no complete answer within {seconds:g} s from {redact_url(url)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"fetching {redact_url(url)} failed: {exc!r}") from None
        finally:
            connection.close()
    raise AssertionError("unreachable: the last hop returns or raises")


def _read_at_most(response: http.client.HTTPResponse, limit: int) -> bytes:
    too_large = FetchError(f"the body is larger than {limit} bytes")
    declared = response.getheader("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    parts: list[bytes] = []
    total = 0
    while True:
        part = response.read(min(limit + 1 - total, 1 << 16))
        if not part:
            return b"".join(parts)
        total += len(part)
        if total > limit:
            raise too_large
        parts.append(part)
