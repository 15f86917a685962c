"""The HTTP side: routing, auth, limits, faults, responses, presigned image URLs, introspection."""

from __future__ import annotations

import base64
import datetime as dt
import email.errors
import hashlib
import hmac
import io
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .. import catalog
from ._account import Wallet
from ._faults import FAULT_KINDS, STATUS_FAULTS, FaultInjector
from ._params import ApiError, ImageRequest, fetch_loopback, invalid, parse_edit_request, parse_json_request, sanitize
from ._ratelimit import RateLimiter, rate_limit_message
from ._render import RenderCache, RenderJob
from ._wire import DeadlineReader

__all__ = ["MAX_BODY_BYTES", "MAX_CONNECTIONS", "READ_TIMEOUT", "EmulatorConfig", "EmulatorState", "make_server"]

MAX_BODY_BYTES = 20 * 1024 * 1024
"""DECIDED: a 10 MB image as base64 inside JSON (about 14 MB) fits."""

MAX_CONNECTIONS = 1024
"""Far above what a test suite opens (an SDK pool keeps up to 100); a flood beyond it gets 503s."""

READ_TIMEOUT = 30.0
"""Seconds a client has to send a request's head, and again its body; also the longest a write may take."""

_DRAIN_LIMIT = 64 * 1024 * 1024
"""After a 413 the rest of the body is read and thrown away (so that a client still sending sees the
413, not a reset), up to this many bytes and within the read timeout; then the connection closes."""
_LINE_MAX = 4096
"""The longest chunk-size or trailer line of a chunked body."""
_BLANK_LINES = 8
"""Blank lines tolerated before a request line (RFC 9112 2.2 asks servers to skip at least one)."""

PREFIXES = ("/v1", "/step_plan/v1")
_ENDPOINT_ROUTES: dict[str, tuple[str, catalog.Endpoint]] = {
    f"{prefix}/images/{endpoint}": (prefix, endpoint)
    for prefix in PREFIXES
    for endpoint in catalog.ENDPOINTS
    if not (prefix == "/step_plan/v1" and endpoint == "image2image")  # step_plan has no image2image
}
_ACCOUNT_PATHS = frozenset({"/v1/accounts"})
_IMAGE_PATH = re.compile(r"^/image_gen/(\d{8})/([0-9a-f]{32})\.png$")
_INTROSPECTION: dict[str, str] = {
    "/_emulator/stats": "GET",
    "/_emulator/requests": "GET",
    "/_emulator/reset": "POST",
}
_JSON_TYPES = ("application/json", "")
"""Content-Types a JSON endpoint accepts; "" is a request that names none (its body is read as JSON).
Anything else (``text/plain``, curl's default ``application/x-www-form-urlencoded``) is a 400 naming the header."""
_EDIT_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded", "application/json", "")
_TOS_ALGORITHM = "TOS4-HMAC-SHA256"
_TOS_DATE = "%Y%m%dT%H%M%SZ"
_HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n"
    b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class EmulatorConfig:
    """Every knob of the emulator; the CLI flags and ``Emulator(**options)`` map onto it."""

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    """Only this bearer key is accepted; ``None`` accepts any non-empty key."""
    latency: float = 0.0
    tier: str | None = None
    rpm: int | None = None
    concurrency: int | None = None
    retry_after: float | None = None
    """Seconds sent as ``Retry-After`` on 429 and 503; ``None`` sends no such header."""
    faults: Mapping[str, float] = field(default_factory=dict)
    fault_seed: int | None = None
    slow_seconds: float = 30.0
    url_ttl: int = 3600
    block_words: tuple[str, ...] = ()
    """A prompt containing one of these gets 451 ``censorship_blocked``."""
    filter_words: tuple[str, ...] = ()
    """A prompt containing one of these gets a 200 with ``finish_reason: content_filtered``."""
    max_body_bytes: int = MAX_BODY_BYTES
    """Larger bodies get 413, under any framing (``Content-Length``, chunked), before they are buffered."""
    max_connections: int = MAX_CONNECTIONS
    """Connections served at once (a thread each); one more is answered 503 ``server_busy`` and closed."""
    read_timeout: float = READ_TIMEOUT
    """Seconds a client has to send a request's head (from the moment the server waits for it, so an
    idle keep-alive connection closes after this long) and then its body; a write of a response
    that the client does not read fails after as long. A slow client never holds the server: each
    connection has its own thread, and this bounds how long that thread waits."""
    balance: Decimal | None = None
    """The account's starting balance; ``None``: unlimited (a postpaid account)."""
    region: catalog.Region = "mainland"
    """Whose prices the balance is charged at."""
    clock: Callable[[], float] = time.time
    """Wall clock for ``created``, URL expiry and the RPM window; tests inject a fake one."""
    verbose: bool = False

    def __post_init__(self) -> None:
        if not self.read_timeout > 0:
            raise ValueError(f"read_timeout must be a positive number of seconds, not {self.read_timeout!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {self.max_connections!r}")

    def limits(self) -> tuple[int | None, int | None]:
        """``(concurrency, rpm)``: explicit values win over the tier's."""
        concurrency, rpm = self.concurrency, self.rpm
        if self.tier is not None:
            if self.tier not in catalog.RATE_LIMIT_TIERS:
                raise ValueError(f"unknown tier {self.tier!r}; known: {', '.join(catalog.RATE_LIMIT_TIERS)}")
            tier_concurrency, tier_rpm = catalog.RATE_LIMIT_TIERS[self.tier]
            concurrency = tier_concurrency if concurrency is None else concurrency
            rpm = tier_rpm if rpm is None else rpm
        return concurrency, rpm


class EmulatorState:
    """What the request threads share."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        concurrency, rpm = config.limits()
        self.limiter = RateLimiter(rpm=rpm, concurrency=concurrency, clock=config.clock)
        self.faults = FaultInjector(config.faults, config.fault_seed)
        self.cache = RenderCache()
        self.wallet = Wallet(config.balance, config.region)
        self.secret = secrets.token_bytes(32)
        self.access_key = "AKLT" + secrets.token_hex(16)
        self.stopping = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._image_bytes = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=1000)
        self._by_path: Counter[str] = Counter()
        self._by_status: Counter[str] = Counter()
        self._by_fault: Counter[str] = Counter()

    # --- introspection -------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        path = entry["path"]
        key = "/image_gen/*" if path.startswith("/image_gen/") else path
        with self._lock:
            self._log.append(entry)
            self._by_path[key] += 1
            self._by_status[str(entry["status"])] += 1
            if entry.get("fault"):
                self._by_fault[entry["fault"]] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self._by_path.values()),
                "by_path": dict(self._by_path),
                "by_status": dict(self._by_status),
                "by_fault": dict(self._by_fault),
                "in_flight": self.limiter.in_flight,
            }

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._log]

    def reset(self) -> None:
        """Forget counters, the request log, the RPM window; restart the fault sequence."""
        with self._lock:
            self._log.clear()
            self._by_path.clear()
            self._by_status.clear()
            self._by_fault.clear()
        self.limiter.reset()
        self.faults.reset()
        self.wallet.reset()
        self.gate.set()

    # --- presigned image URLs ------------------------------------------------------------------

    _IMAGE_STORE_BYTES = 512 * 1024 * 1024

    def store_image(self, png: bytes, host: str) -> str:
        image_id = uuid.uuid4().hex
        now = dt.datetime.fromtimestamp(self.config.clock(), dt.timezone.utc)
        day, stamp = now.strftime("%Y%m%d"), now.strftime(_TOS_DATE)
        path = f"/image_gen/{day}/{image_id}.png"
        expires = str(self.config.url_ttl)
        query = urllib.parse.urlencode(
            {
                "X-Tos-Algorithm": _TOS_ALGORITHM,
                "X-Tos-Credential": f"{self.access_key}/{day}/cn-shanghai/tos/request",
                "X-Tos-Date": stamp,
                "X-Tos-Expires": expires,
                "X-Tos-Signature": self._sign(path, stamp, expires),
                "X-Tos-SignedHeaders": "host",
            }
        )
        with self._lock:
            self._images[image_id] = png
            self._image_bytes += len(png)
            # Bounded like a bucket with a lifecycle rule: old images go first.
            while self._image_bytes > self._IMAGE_STORE_BYTES and len(self._images) > 1:
                _, old = self._images.popitem(last=False)
                self._image_bytes -= len(old)
        return f"http://{host}{path}?{query}"

    def _sign(self, path: str, stamp: str, expires: str) -> str:
        return hmac.new(self.secret, f"{path}\n{stamp}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def fetch_image(self, path: str, query: Mapping[str, str]) -> tuple[int, str, bytes | None]:
        """``(status, reason, png)`` for a GET of a presigned URL."""
        match = _IMAGE_PATH.match(path)
        stamp, expires, signature = (query.get(k, "") for k in ("X-Tos-Date", "X-Tos-Expires", "X-Tos-Signature"))
        if match is None:
            return 404, "NoSuchKey", None
        if not hmac.compare_digest(self._sign(path, stamp, expires), signature):
            return 403, "SignatureDoesNotMatch", None
        try:
            signed_at = dt.datetime.strptime(stamp, _TOS_DATE).replace(tzinfo=dt.timezone.utc).timestamp()
            ttl = int(expires)
        except ValueError:
            return 403, "AccessDenied", None
        if self.config.clock() > signed_at + ttl:
            return 403, "AccessDenied: Request has expired", None
        with self._lock:
            png = self._images.get(match.group(2))
        return (200, "OK", png) if png is not None else (404, "NoSuchKey", None)

    # --- rendering -----------------------------------------------------------------------------

    def render(self, request: ImageRequest, seed: int, *, blank: bool) -> bytes:
        resolved = {
            "endpoint": request.endpoint,
            "model": request.model,
            "prompt": request.prompt,
            "width": request.width,
            "height": request.height,
            "seed": seed,
            "steps": request.steps,
            "cfg_scale": request.cfg_scale,
            "negative_prompt": request.negative_prompt,
            "text_mode": request.text_mode,
            "source": request.source.digest if request.source else None,
            "source_weight": request.source_weight,
            "style": request.style.digest if request.style else None,
            "style_weight": request.style_weight,
        }
        metadata = {"received": request.received, "resolved": resolved, "content_filtered": blank}
        canonical = json.dumps(metadata, sort_keys=True, ensure_ascii=False).encode()
        job = RenderJob(
            width=request.width,
            height=request.height,
            seed=seed,
            # The picture depends on what was resolved, not on how it was asked for (url vs b64).
            content_key=json.dumps(resolved, sort_keys=True, ensure_ascii=False).encode(),
            metadata=metadata,
            source=request.source.data if request.source else None,
            source_weight=request.source_weight,
            style=request.style.data if request.style else None,
            style_weight=request.style_weight,
            blank=blank,
        )
        return self.cache.render(hashlib.sha256(canonical).digest(), job)


_CLIENT_GONE = (BrokenPipeError, ConnectionResetError)
_BUSY_BODY = json.dumps(
    {"error": {"message": "Too many connections to the emulator; retry later", "type": "server_busy"}}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self._slots = threading.BoundedSemaphore(state.config.max_connections)
        if ":" in state.config.host:
            self.address_family = socket.AF_INET6
        super().__init__((state.config.host, state.config.port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # One thread a connection, at most max_connections of them: a flood of connections (each
        # held up to read_timeout) cannot spawn threads without end. One over gets a 503 at once,
        # written from the accept loop without waiting (a fresh socket's send buffer is empty).
        if not self._slots.acquire(blocking=False):
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client gone mid-response (timed out on a ``slow`` fault, killed, or reset) or too slow
        # to read it (the read timeout) is routine for a test server: no traceback. Any other
        # error is a bug and keeps its traceback.
        if isinstance(sys.exc_info()[1], (*_CLIENT_GONE, TimeoutError)):
            return
        super().handle_error(request, client_address)


def make_server(config: EmulatorConfig) -> ThreadingHTTPServer:
    """A bound (not yet serving) server; ``serve_forever()`` it in a thread."""
    return _Server(EmulatorState(config))


class _BodyTooLarge(Exception):
    """The body is over the limit; the connection is closed after the 413."""


class _BadFraming(Exception):
    """The body's framing cannot be read (a bad ``Content-Length``, broken chunks, an unknown coding)."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.error = ApiError(status, type_, message)


def _bad_framing(message: str) -> _BadFraming:
    return _BadFraming(400, "invalid_request", message)


def _multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, bytes]]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise invalid("body", "multipart/form-data with a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    parts = body.split(delimiter)
    if len(parts) < 3:
        raise invalid("body", "multipart/form-data with an image file and a prompt")
    for part in parts[1:-1]:
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise invalid("body", "multipart/form-data with an image file and a prompt")
        content = content[:-2] if content.endswith(b"\r\n") else content
        disposition = next(
            (
                h
                for h in head.decode("utf-8", "replace").split("\r\n")
                if ":" in h and h.split(":", 1)[0].strip().lower() == "content-disposition"
            ),
            "",
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        if not name:
            continue
        if re.search(r"\bfilename\*?=", disposition):
            files.setdefault(name.group(1), content)
        else:
            fields[name.group(1)] = content.decode("utf-8", "replace")
    return fields, files


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "stepfun-emulator"
    default_request_version = "HTTP/1.1"  # so that an error about a bad request line still has a status line
    sys_version = ""

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle plus the client's
        # delayed ACK adds ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Every read has a deadline (a request head, then its body, each within read_timeout),
        # so a client trickling bytes cannot hold this thread; writes time out after as long.
        timeout = self.state.config.read_timeout
        self.connection.settimeout(timeout)
        self.rfile.close()
        self._reader = DeadlineReader(self.connection, timeout)
        self.rfile = io.BufferedReader(self._reader, 65536)
        self._expect_continue = False

    def handle_one_request(self) -> None:
        """The stdlib's step (read a head, dispatch) with a deadline on the head and an answer to every head.

        Blank lines before a request line are skipped (a few). A head that stops half-way gets a
        408 once the read timeout passes; a connection that sent nothing is closed without a word.
        """
        self._reader.start()
        self._expect_continue = False
        try:
            line = self.rfile.readline(65537)
            for _ in range(_BLANK_LINES):
                if not line or line.strip():
                    break
                line = self.rfile.readline(65537)
            self.raw_requestline = line
            if not line:
                self.close_connection = True
                return
            if len(line) > 65536 or len(line.split()) != 3:
                # Answered as HTTP/1.1: the stdlib would take a line without a version for HTTP/0.9
                # and answer with a bare body, no status line.
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
                self.close_connection = True
                self.send_error(414 if len(line) > 65536 else 400)
                return
            if not self.parse_request():
                return  # the stdlib has answered (400, 414, 431, 505) and closes
            if any(isinstance(d, email.errors.MissingHeaderBodySeparatorDefect) for d in self.headers.defects):
                # A header line without a colon: the stdlib would read the rest of the head as a
                # payload and drop the headers after it (Content-Length among them).
                self.close_connection = True
                self.send_error(400, "Bad Request", "A header line has no colon")
                return
        except TimeoutError:
            self.close_connection = True
            if self._reader.received:
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
                timeout = self.state.config.read_timeout
                self.send_error(408, f"The request head did not arrive within {timeout:g} s")
            return
        try:
            handler = getattr(self, "do_" + self.command, None)
            if handler is None:
                self.send_error(501, f"Unsupported method ({self.command!r})")
                return
            handler()
            self.wfile.flush()
        except TimeoutError:  # a client that does not read its response
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        # Deferred: "100 Continue" goes out only once the body's framing and size are accepted
        # (see _continue), so a client about to send too much gets its 413 before sending it.
        self._expect_continue = True
        return True

    def _continue(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            super().handle_expect_100()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.state.config.verbose:
            super().log_message(format, *args)

    # --- plumbing ------------------------------------------------------------------------------

    @property
    def state(self) -> EmulatorState:
        return self.server.state

    def _read_body(self) -> bytes | None:
        """The body, never more than ``max_body_bytes`` of it in memory; ``None`` when none is declared.

        ``Content-Length`` is checked before a byte is read; a chunked body is counted chunk by
        chunk, each size checked before the chunk is read. A body that stops short of what it
        declared times out (``TimeoutError``) or ends (``_BadFraming``); bytes past a declared
        length are the next request's, parsed (and refused) as such.
        """
        self._reader.start()  # the body has its own deadline, apart from the head's
        limit = self.state.config.max_body_bytes
        codings = [
            coding.strip().lower()
            for value in self.headers.get_all("Transfer-Encoding") or []
            for coding in value.split(",")
            if coding.strip()
        ]
        lengths = [value.strip() for value in self.headers.get_all("Content-Length") or []]
        if codings:
            if lengths:
                raise _bad_framing("Content-Length and Transfer-Encoding together are ambiguous; send one of them")
            if codings != ["chunked"]:
                raise _BadFraming(
                    501,
                    "not_implemented",
                    f"Transfer-Encoding {', '.join(codings)!r} is not supported; send Content-Length or chunked",
                )
            self._continue()
            return self._read_chunked(limit)
        if not lengths:
            return None
        value = lengths[0] if len(set(lengths)) == 1 else ""
        if not re.fullmatch(r"[0-9]+", value):
            shown = ", ".join(lengths)[:80]
            raise _bad_framing(f"Content-Length must be one non-negative decimal integer, not {shown!r}")
        length = int(value) if len(value) <= 18 else limit + 1
        if length > limit:
            raise _BodyTooLarge
        self._continue()
        body = self.rfile.read(length)
        if len(body) < length:
            raise _bad_framing(f"the body ended after {len(body)} of the {length} bytes of its Content-Length")
        return body

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_text = self._line("chunk size").split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise _bad_framing(f"a chunk size must be hexadecimal, not {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _BodyTooLarge  # before this chunk is read
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.read(2) != b"\r\n":
                raise _bad_framing("a chunk is shorter than its size or does not end with CRLF")
            chunks.append(chunk)
        for _ in range(100):  # trailer fields, up to the blank line that ends the body
            if not self._line("trailer").strip():
                return b"".join(chunks)
        raise _bad_framing("more than 100 trailer lines")

    def _line(self, what: str) -> bytes:
        line = self.rfile.readline(_LINE_MAX + 1)
        if len(line) > _LINE_MAX or not line.endswith(b"\n"):
            raise _bad_framing(f"a {what} line is cut off or longer than {_LINE_MAX} bytes")
        return line

    def _refuse(self, error: ApiError, *, drain: bool = True) -> None:
        """Answer ``error`` and close; first read and drop what the client still sends (bounded)."""
        self._entry["error"] = error.type
        self._send_json(error.status, error.body(), error.headers, close=True)
        if not drain:
            return
        # Like nginx's lingering close: a client still sending its body reads the answer instead
        # of a reset. At most _DRAIN_LIMIT bytes, within the read timeout; nothing is kept.
        self._reader.start()
        remaining = _DRAIN_LIMIT
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while remaining > 0:
                got = self.rfile.read1(min(remaining, 1 << 16))
                if not got:
                    break
                remaining -= len(got)
        except OSError:  # TimeoutError included: the client neither sends nor hangs up
            pass

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        *,
        close: bool = False,
        cut_after: int | None = None,
    ) -> None:
        # Logged before a byte is sent: a test that reads /_emulator/requests right after its
        # response must find its request there.
        self._entry["status"] = status
        self._record()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Trace-Id", self._trace_id)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command == "HEAD":
            return
        if cut_after is None:
            self.wfile.write(body)
            return
        # The "reset" fault: part of the promised body, then the connection is dropped.
        self.wfile.write(body[:cut_after])
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_json(self, status: int, payload: object, headers: Mapping[str, str] | None = None, **kw: Any) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode(), headers=headers, **kw)

    def _send_error(self, error: ApiError) -> None:
        self._entry["error"] = error.type
        self._send_json(error.status, error.body(), error.headers)

    def _dispatch(self, method: str) -> None:
        self._trace_id = uuid.uuid4().hex
        self._recorded = False
        split = urllib.parse.urlsplit(self.path)
        path = split.path
        tag = self.headers.get("X-Request-Tag") or self.headers.get("X-Emulator-Tag")
        self._entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": None,
            "trace_id": self._trace_id,
            "tag": tag,
            "time": self.state.config.clock(),
        }
        try:
            body = self._read_body()
        except _BodyTooLarge:
            limit_mb = self.state.config.max_body_bytes // (1024 * 1024)
            self._refuse(ApiError(413, "request_too_large", f"Request body too large: the limit is {limit_mb} MB"))
            return
        except _BadFraming as exc:
            self._refuse(exc.error)
            return
        except TimeoutError:
            timeout = self.state.config.read_timeout
            self._refuse(
                ApiError(408, "request_timeout", f"The request body did not arrive within {timeout:g} s"), drain=False
            )
            return
        except _CLIENT_GONE:
            self.close_connection = True
            self._record()
            return

        if path in _INTROSPECTION:
            self._recorded = True  # introspection is not itself recorded
            if method != _INTROSPECTION[path]:
                self._method_not_allowed(_INTROSPECTION[path])
            else:
                self._introspect(path)
            return
        try:
            self._route(method, path, split.query, body)
        except Exception as exc:
            # A bug (its traceback still reaches stderr via handle_error), but the client gets an
            # answer rather than a dropped connection.
            if self._entry["status"] is None and not isinstance(exc, (*_CLIENT_GONE, TimeoutError)):
                error = ApiError(500, "server_error", "The emulator failed on this request; its log has the traceback")
                self._refuse(error, drain=False)
            raise
        finally:
            self._record()  # if nothing was sent (the handler failed), log it with status 0

    def _record(self) -> None:
        if not self._recorded:
            self._recorded = True
            self._entry["status"] = self._entry["status"] or 0
            self.state.record(self._entry)

    def _method_not_allowed(self, allowed: str) -> None:
        error = ApiError(405, "method_not_allowed", f"Method {self.command} is not allowed here; use {allowed}")
        self._send_json(405, error.body(), {"Allow": allowed})

    def _introspect(self, path: str) -> None:
        if path == "/_emulator/stats":
            self._send_json(200, self.state.stats())
        elif path == "/_emulator/requests":
            self._send_json(200, self.state.requests())
        else:
            self.state.reset()
            self._send_json(200, {"reset": True})

    def _route(self, method: str, path: str, query: str, body: bytes | None) -> None:
        if path.startswith("/image_gen/"):
            if method not in ("GET", "HEAD"):
                self._method_not_allowed("GET, HEAD")
                return
            params = dict(urllib.parse.parse_qsl(query))
            status, reason, png = self.state.fetch_image(path, params)
            if png is None:
                code = reason.split(":")[0]
                self._send_json(status, {"Code": code, "Message": reason, "RequestId": self._trace_id})
            else:
                self._send(200, png, "image/png")
            return
        if path in _ACCOUNT_PATHS:
            if method != "GET":
                self._method_not_allowed("GET")
                return
            try:
                self._authenticate()
            except ApiError as error:
                self._send_error(error)
                return
            self._send_json(200, self.state.wallet.account())
            return
        route = _ENDPOINT_ROUTES.get(path)
        if route is None:
            self._send(404, b"404 page not found", "text/plain; charset=utf-8")
            return
        if method != "POST":
            self._method_not_allowed("POST")
            return
        if body is None:
            # Without a length the end of the body is unknowable (HTTP/1.1 reads it as empty and the
            # bytes that follow as the next request); say so and close.
            message = "This endpoint needs a body with Content-Length (or Transfer-Encoding: chunked)"
            self._refuse(ApiError(411, "length_required", message))
            return
        self._entry["endpoint"] = route[1]
        try:
            self._authenticate()
            self._image_request(route[1], body)
        except ApiError as error:
            self._send_error(error)

    def _authenticate(self) -> None:
        scheme, _, key = self.headers.get("Authorization", "").partition(" ")
        expected = self.state.config.api_key
        key = key.strip()
        # Compared as bytes: header text is latin-1 (any byte), and compare_digest refuses non-ASCII str.
        if (
            scheme.lower() != "bearer"
            or not key
            or (expected is not None and not hmac.compare_digest(key.encode("latin-1"), expected.encode()))
        ):
            raise ApiError(401, "invalid_api_key", "Incorrect API key provided")

    def _retry_after(self) -> dict[str, str]:
        seconds = self.state.config.retry_after
        return {} if seconds is None else {"Retry-After": f"{seconds:g}"}

    def _image_request(self, endpoint: catalog.Endpoint, body: bytes) -> None:
        state = self.state
        refused = state.limiter.acquire()
        if refused is not None:
            raise ApiError(429, "rate_limited", refused, self._retry_after())
        try:
            self._admitted(endpoint, body)
        finally:
            state.limiter.release()

    def _admitted(self, endpoint: catalog.Endpoint, body: bytes) -> None:
        state = self.state
        forced = self.headers.get("X-Emulator-Fault")
        if forced is not None and forced.strip() not in FAULT_KINDS:
            raise invalid("X-Emulator-Fault", "one of " + ",".join(FAULT_KINDS))
        fault = forced.strip() if forced is not None else state.faults.draw()
        self._entry["fault"] = fault
        if fault in STATUS_FAULTS:
            status, type_, message = STATUS_FAULTS[fault]
            if fault == "429":
                _, rpm = state.config.limits()
                limit = rpm or catalog.RATE_LIMIT_TIERS["V0"][1]
                message = rate_limit_message("RPM", limit + 1, limit)
            headers = self._retry_after() if status in (429, 503) else {}
            raise ApiError(status, type_, message, headers)
        if fault == "html":
            self._send(502, _HTML_502, "text/html")
            return
        if fault == "slow":
            state.stopping.wait(state.config.slow_seconds)

        content_type = self.headers.get("Content-Type", "")
        fetch = fetch_loopback
        form_type = content_type.lower().split(";")[0].strip()
        accepted = _EDIT_TYPES if endpoint == "edits" else _JSON_TYPES
        if form_type not in accepted:
            raise invalid("Content-Type", f"{' or '.join(t for t in accepted if t)} (not {content_type[:80]!r})")
        if form_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            if form_type == "multipart/form-data":
                fields, files = _multipart(body, content_type)
            else:  # no file part at all: a base64 "image" field, or a request missing its image
                fields, files = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"))), {}
            self._entry["fields"] = sanitize({**fields, **{name: data for name, data in files.items()}})
            self._entry["form_fields"] = sorted([*fields, *files])
            request = parse_edit_request(fields, files, fetch)
        else:
            try:
                self._entry["fields"] = sanitize(json.loads(body))
            except (ValueError, RecursionError):
                self._entry["fields"] = None
            request = parse_json_request(endpoint, body, fetch)
        self._entry["model"] = request.model

        prompt = request.prompt.lower()
        if any(word.lower() in prompt for word in state.config.block_words):
            raise ApiError(451, "censorship_blocked", STATUS_FAULTS["451"][2])
        filtered = any(word.lower() in prompt for word in state.config.filter_words)

        if not self.path.startswith("/step_plan/"):  # a plan's images come from its monthly credit
            state.wallet.charge(request.model)  # billed once generated: a 402 before anything is made
        state.gate.wait()
        if state.config.latency > 0:
            state.stopping.wait(state.config.latency)

        seed = request.seed or secrets.randbelow(catalog.SEED_MAX) + 1
        self._entry["seed"] = seed
        png = state.render(request, seed, blank=filtered)
        item: dict[str, Any] = {"finish_reason": "content_filtered" if filtered else "success", "seed": seed}
        self._entry["finish_reason"] = item["finish_reason"]
        if fault == "bad-b64":
            item["b64_json"] = "%%not*base64%%" + base64.b64encode(png[:32]).decode()
        elif request.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(png).decode()
        else:
            host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
            item["url"] = state.store_image(png, host)
        payload = {
            "id": f"{uuid.uuid4().hex}.{uuid.uuid4().hex}",
            "created": int(state.config.clock()),
            "data": [] if fault == "empty-data" else [item],
        }
        encoded = json.dumps(payload).encode()
        if fault == "malformed":
            self._send(200, encoded[: len(encoded) // 2])
        elif fault == "reset":
            self._send(200, encoded, cut_after=len(encoded) // 2)
        else:
            self._send(200, encoded)
