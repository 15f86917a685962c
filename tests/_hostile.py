"""Hostile conditions for tests of the package's bounds: a scripted server, hard time and memory caps.

* :class:`HostileServer` listens on loopback and answers each connection with a *script*, a
  function that gets the raw socket and the request it read: it may trickle bytes, lie about
  lengths, send garbage, stall or hang up. Scripts for the usual cases are below
  (:func:`trickle_headers`, :func:`trickle_body`, :func:`answer`, :func:`stall`, ...).
* :func:`within` runs a callable in a thread and fails the test when it is not done in time, so a
  regression fails instead of hanging the suite (the thread is left behind, daemonic).
* :func:`run_bounded` runs Python source in a child process with a wall-clock timeout and an
  address-space cap (``RLIMIT_AS``), for cases that could eat the machine's memory.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

_T = TypeVar("_T")

Script = Callable[[socket.socket, bytes], None]
"""``script(connection, request)``: ``request`` is what arrived up to the end of the headers."""


class HostileServer:
    """A loopback TCP server answering every connection with ``script`` (changeable any time).

    ``requests`` counts connections that sent a request; ``received`` keeps each request's head.
    """

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests = 0
        self.received: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 1 << 20:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            self.requests += 1
            self.received.append(head)
            self.script(conn, head)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._sock.close()


@contextmanager
def hostile_server(script: Script) -> Iterator[HostileServer]:
    server = HostileServer(script)
    try:
        yield server
    finally:
        server.close()


# --- scripts ---------------------------------------------------------------------------------------


def _response_head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(status: int = 200, body: bytes | dict[str, Any] = b"", headers: Mapping[str, str] | None = None) -> Script:
    """A well-formed answer (JSON when ``body`` is a dict), then the connection closes."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    all_headers = {"Content-Type": "application/json", "Content-Length": str(len(data)), "Connection": "close"}
    all_headers.update(headers or {})

    def script(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(_response_head(status, all_headers) + data)

    return script


def trickle_headers(interval: float = 1.0, total: float = 600.0) -> Script:
    """Send a status line, then one header byte every ``interval`` seconds, for ``total`` seconds."""

    def script(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        end = time.monotonic() + total
        while time.monotonic() < end:
            conn.sendall(b"X")
            time.sleep(interval)

    return script


def trickle_body(interval: float = 1.0, total: float = 600.0, *, length: int = 10_000_000) -> Script:
    """Send complete headers promising ``length`` bytes, then one body byte every ``interval`` s."""

    def script(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(_response_head(200, {"Content-Type": "application/json", "Content-Length": str(length)}))
        end = time.monotonic() + total
        while time.monotonic() < end:
            conn.sendall(b" ")
            time.sleep(interval)

    return script


def stall(total: float = 600.0) -> Script:
    """Read the request and say nothing at all."""

    def script(_conn: socket.socket, _request: bytes) -> None:
        time.sleep(total)

    return script


def hang_up() -> Script:
    """Close the connection without a byte."""

    def script(_conn: socket.socket, _request: bytes) -> None:
        return None

    return script


def garbage(data: bytes = b"\x00\xffnot http at all\r\n\r\n") -> Script:
    def script(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(data)

    return script


def endless_body(chunk: bytes = b"A" * 65536, *, content_length: int | None = None) -> Script:
    """Stream ``chunk`` forever (or until the client hangs up), with an optional lying length."""
    headers = {"Content-Type": "application/json"}
    if content_length is not None:
        headers["Content-Length"] = str(content_length)

    def script(conn: socket.socket, _request: bytes) -> None:
        conn.sendall(_response_head(200, headers))
        while True:
            conn.sendall(chunk)

    return script


# --- hard caps ---------------------------------------------------------------------------------------


def within(seconds: float, fn: Callable[[], _T]) -> _T:
    """``fn()``, failing the test (not hanging it) when it has not returned after ``seconds``."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed back to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s (a bound does not hold)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


def run_bounded(
    source: str, *, seconds: float = 30, memory_mb: int = 1024, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run Python ``source`` in a child capped at ``seconds`` of wall time and ``memory_mb`` of address space.

    A child that runs out of time is killed and the test fails; one that runs out of memory gets a
    ``MemoryError`` (or dies), which shows in its return code and stderr for the test to check.
    """

    def cap() -> None:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        return subprocess.run(
            [sys.executable, "-c", source],
            capture_output=True,
            text=True,
            timeout=seconds,
            preexec_fn=cap,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child still running after {seconds} s (a bound does not hold)\n{exc.stderr!r}")
