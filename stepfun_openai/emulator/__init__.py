"""A local StepFun image API for tests, demos and offline development.

``with Emulator() as emu:`` starts a threaded HTTP server on a free loopback port that speaks the
contract in ``shared/stepfun-image-api.md``: the three image endpoints under ``/v1`` and
``/step_plan/v1``, StepFun's error envelope and messages, presigned image URLs, rate limits,
moderation and injectable faults. Standard library only (Pillow optional); it may use the
catalog and the header sniffing, never the client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .. import catalog
from ._faults import FAULT_KINDS, parse_faults
from ._render import METADATA_KEY, read_png_metadata
from ._server import MAX_BODY_BYTES, MAX_CONNECTIONS, READ_TIMEOUT, EmulatorConfig, EmulatorState, make_server
from ._wire import FetchError, get

__all__ = [
    "FAULT_KINDS",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "METADATA_KEY",
    "READ_TIMEOUT",
    "Emulator",
    "EmulatorConfig",
    "parse_faults",
    "read_png_metadata",
]


_DOWNLOAD_SECONDS = 30.0
_DOWNLOAD_MAX_BYTES = 256 * 1024 * 1024
"""Far above any image the emulator makes (4096x4096 RGBA stored uncompressed is 64 MB)."""


def _money(value: float | str | Decimal) -> Decimal:
    """A balance as an exact, finite, non-negative amount (``ValueError`` otherwise)."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"balance must be an amount of money, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"balance must be a finite amount >= 0, got {value!r}")
    return amount


class Emulator:
    """A running (once started) StepFun emulator; the options mirror the CLI flags.

    ``faults`` takes the CLI's ``"503=0.1,reset=0.02"`` or a mapping; ``block_words`` and
    ``filter_words`` are the moderation lists; ``balance`` (default unlimited) is the account's
    money, charged per image at the catalog's ``region`` price (402 once it would go below zero);
    ``clock`` replaces ``time.time`` for ``created``, URL expiry and the RPM window.
    ``read_timeout`` (30 s) is how long a client may take to send a request's head, and then its
    body; an idle connection closes after as long. ``max_body_bytes`` (20 MB) caps a body under
    any framing; ``max_connections`` (1024) caps the connections served at once (one more gets a 503).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        latency: float = 0.0,
        tier: str | None = None,
        rpm: int | None = None,
        concurrency: int | None = None,
        retry_after: float | None = None,
        faults: str | Mapping[str, float] | None = None,
        fault_seed: int | None = None,
        slow_seconds: float = 30.0,
        url_ttl: int = 3600,
        block_words: Iterable[str] = (),
        filter_words: Iterable[str] = (),
        max_body_bytes: int = MAX_BODY_BYTES,
        balance: float | str | Decimal | None = None,
        region: catalog.Region = "mainland",
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        clock: Callable[[], float] | None = None,
        verbose: bool = False,
    ) -> None:
        self.config = EmulatorConfig(
            host=host,
            port=port,
            api_key=api_key,
            latency=latency,
            tier=tier,
            rpm=rpm,
            concurrency=concurrency,
            retry_after=retry_after,
            faults=parse_faults(faults),
            fault_seed=fault_seed,
            slow_seconds=slow_seconds,
            url_ttl=url_ttl,
            block_words=tuple(block_words),
            filter_words=tuple(filter_words),
            max_body_bytes=max_body_bytes,
            balance=None if balance is None else _money(balance),
            region=region,
            read_timeout=read_timeout,
            max_connections=max_connections,
            clock=clock or time.time,
            verbose=verbose,
        )
        self.config.limits()  # an unknown tier fails here, not in a request thread
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is None:
            self._server = make_server(self.config)
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="stepfun-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        state = self._state
        state.stopping.set()  # wakes requests held by latency, "slow" faults or hold()
        state.gate.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def _state(self) -> EmulatorState:
        if self._server is None:
            raise RuntimeError("the emulator is not running; use `with Emulator() as emu:` or call start()")
        state: EmulatorState = self._server.state  # type: ignore[attr-defined]
        return state

    # --- addresses -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` without a path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ending in ``/v1``."""
        return f"{self.url}/v1"

    @property
    def step_plan_base_url(self) -> str:
        return f"{self.url}/step_plan/v1"

    @property
    def api_key(self) -> str:
        """A key the emulator accepts: the configured one, or any placeholder."""
        return self.config.api_key or "sk-emulator"

    # --- introspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts of requests by path, status and fault (the same as ``GET /_emulator/stats``)."""
        return self._state.stats()

    def requests(self) -> list[dict[str, Any]]:
        """The requests received, oldest first (``GET /_emulator/requests``)."""
        return self._state.requests()

    @property
    def account(self) -> dict[str, Any]:
        """What ``GET /v1/accounts`` answers now (balance, type)."""
        return self._state.wallet.account()

    def reset(self) -> None:
        """Clear stats, the request log and the RPM window; replay the fault sequence from the start."""
        self._state.reset()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep admitted image requests waiting (holding their concurrency slots) until the block ends.

        Lets a test fill the concurrency limit without depending on timing.
        """
        state = self._state
        state.gate.clear()
        try:
            yield
        finally:
            state.gate.set()

    def wait_in_flight(self, count: int, timeout: float = 10.0) -> None:
        """Block until ``count`` image requests are being processed (e.g. held by :meth:`hold`)."""
        deadline = time.monotonic() + timeout
        while self._state.limiter.in_flight < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._state.limiter.in_flight} requests in flight, expected {count}")
            time.sleep(0.005)

    def download(self, url: str) -> bytes:
        """GET ``url`` (e.g. a ``data[].url`` the emulator returned), as a test's helper.

        Bounded: 30 s in all, at most 256 MB, no redirects (the emulator never sends one); a
        failure is a ``RuntimeError`` saying why, with the URL's signature redacted.
        """
        try:
            return get(url, max_bytes=_DOWNLOAD_MAX_BYTES, seconds=_DOWNLOAD_SECONDS)
        except FetchError as exc:
            raise RuntimeError(f"download failed: {exc}") from None

    def __repr__(self) -> str:
        where = self.base_url if self._server is not None else "not running"
        return f"<Emulator {where}>"
