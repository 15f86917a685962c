"""Total deadlines for HTTP calls: a whole call, from its first byte sent to its last byte read.

httpx2's timeouts bound the gap between two bytes, not a whole response: a server that sends one
byte a second never trips a read timeout of two seconds, and a call can run for hours. So the
package sets a deadline (a ``time.monotonic()`` instant, in a context variable) around each call
and each attempt, and the connection pool's network backend is wrapped so that every connect,
read and write waits at most until that deadline: once it has passed, the next socket operation
raises the same ``httpcore2`` timeout a slow server would, and httpx2 and the SDK report it as
usual (``openai.APITimeoutError``, or :class:`ImageDownloadError` for a download).

The wrapper is inert outside a deadline (timeouts pass through unchanged), so wrapping a pool
once, when a client is built, costs one function call per socket operation. Deadlines nest: an
inner one never extends an outer one. Context variables follow the code that reads the socket:
the sync client reads in the calling thread, the async client in the calling task.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpcore2
import httpx2

from ._compat import connection_pools

__all__ = ["deadline", "install", "remaining", "total_seconds"]

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("stepfun_deadline", default=None)


def total_seconds(timeout: object) -> float | None:
    """The whole-attempt bound a ``timeout`` setting stands for: a number is itself; for an
    ``httpx2.Timeout``, its longest part (connect, read, write or pool); ``None``: no bound."""
    if isinstance(timeout, bool):
        return None
    if isinstance(timeout, (int, float)):
        return float(timeout)
    if isinstance(timeout, httpx2.Timeout):
        parts = [p for p in (timeout.connect, timeout.read, timeout.write, timeout.pool) if p is not None]
        return float(max(parts)) if parts else None
    return None


def remaining() -> float | None:
    """Seconds left before the innermost deadline (may be negative), or ``None`` outside any."""
    end = _DEADLINE.get()
    return None if end is None else end - time.monotonic()


@contextlib.contextmanager
def deadline(seconds: float | None = None, *, until: float | None = None) -> Iterator[None]:
    """Bound the network I/O inside the block to ``seconds`` from now (or to the monotonic instant
    ``until``), never later than any deadline already set. ``None`` adds no bound."""
    ends = [end for end in (_DEADLINE.get(), until) if end is not None]
    if seconds is not None:
        ends.append(time.monotonic() + seconds)
    token = _DEADLINE.set(min(ends) if ends else None)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the time left; ``error`` when none is left."""
    left = remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the call's total deadline has passed (max_total_time or the attempt's timeout)")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore2.NetworkStream):
    def __init__(self, stream: httpcore2.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore2.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _Stream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _Backend(httpcore2.NetworkBackend):
    def __init__(self, backend: httpcore2.NetworkBackend) -> None:
        self.inner = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _Stream(self.inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _Stream(self.inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


class _AsyncStream(httpcore2.AsyncNetworkStream):
    def __init__(self, stream: httpcore2.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, _bounded(timeout, httpcore2.WriteTimeout))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _AsyncStream(await self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _AsyncBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, backend: httpcore2.AsyncNetworkBackend) -> None:
        self.inner = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _AsyncStream(await self.inner.connect_tcp(host, port, bounded, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout)
        return _AsyncStream(await self.inner.connect_unix_socket(path, bounded, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def install(http_client: httpx2.Client | httpx2.AsyncClient) -> bool:
    """Make ``http_client``'s connection pools honour deadlines (idempotent). False when it has
    no pool we know how to reach (a mock or custom transport: nothing to bound there)."""
    installed = False
    for pool in connection_pools(http_client):
        backend = pool._network_backend
        if isinstance(backend, (_Backend, _AsyncBackend)):
            installed = True
        elif isinstance(backend, httpcore2.NetworkBackend):
            pool._network_backend = _Backend(backend)
            installed = True
        elif isinstance(backend, httpcore2.AsyncNetworkBackend):
            pool._network_backend = _AsyncBackend(backend)
            installed = True
    return installed
