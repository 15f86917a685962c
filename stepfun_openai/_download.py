"""Downloading result URLs safely: https only, a size cap, timeouts, clear expiry errors.

StepFun returns presigned object-storage URLs that expire (``X-Tos-Date`` + ``X-Tos-Expires``,
about an hour). Downloads go through httpx2 directly (not the OpenAI client: no API key must
travel to the storage host), with redirects followed by hand so that each hop is checked.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx2
import openai

from . import _deadline
from ._sniff import HEADER_BYTES, sniff
from ._urls import is_http_url, is_loopback_host, redact_url

__all__ = [
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_BYTES",
    "ImageDownloadError",
    "ImageURLExpiredError",
    "adownload",
    "check_url",
    "download",
    "redact_url",
    "url_expires_at",
]

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
"""The largest result image (50 MiB): a download is cut as soon as it passes this (``read(max_bytes=...)``
changes it), and a ``b64_json`` result that decodes to more is a ``MalformedResponseError``, refused
before it is decoded. StepFun's results are a few megabytes: a larger one is broken or hostile."""

DEFAULT_DOWNLOAD_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)
"""Connect within 10 s, and the whole download (every redirect hop, the last byte read) within 60 s:
``timeout`` bounds the total (a number, or an ``httpx2.Timeout``'s longest part), not just the gap
between two bytes."""
MAX_REDIRECTS = 5
_TOS_DATE = "%Y%m%dT%H%M%SZ"


class ImageDownloadError(openai.OpenAIError):
    """A result URL could not be downloaded (refused scheme or host, HTTP error, too large, timeout)."""

    def __init__(self, message: str, *, url: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class ImageURLExpiredError(ImageDownloadError):
    """The storage refused a presigned result URL (HTTP 403) that is past its expiry time
    (``expires_at``). A refused URL that is not yet expired raises a plain ``ImageDownloadError``
    (signature invalid or access denied)."""

    def __init__(self, message: str, *, url: str | None, status_code: int | None, expires_at: dt.datetime | None):
        super().__init__(message, url=url, status_code=status_code)
        self.expires_at = expires_at


def url_expires_at(url: str) -> dt.datetime | None:
    """When a presigned URL stops working (UTC), from ``X-Tos-Date`` + ``X-Tos-Expires`` (the
    S3-style ``X-Amz-Date`` + ``X-Amz-Expires`` too); ``None`` if the URL does not say."""
    query = {key.lower(): values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    for vendor in ("x-tos", "x-amz"):
        stamp, seconds = query.get(f"{vendor}-date"), query.get(f"{vendor}-expires")
        if stamp is None or seconds is None:
            continue
        try:
            signed = dt.datetime.strptime(stamp, _TOS_DATE).replace(tzinfo=dt.timezone.utc)
            return signed + dt.timedelta(seconds=int(seconds))
        except (ValueError, OverflowError):
            return None
    return None


def check_url(url: str, *, redirect: bool = False) -> httpx2.URL:
    """The parsed URL if a download may go there: https, or http on loopback (the emulator) for
    the first hop; redirects only to https. Anything else raises ``ImageDownloadError``."""
    shown = _redact(url)
    try:
        parsed = httpx2.URL(url)
    except Exception:  # httpx2.InvalidURL and friends
        raise ImageDownloadError(f"not a valid URL: {shown}", url=shown) from None
    if is_http_url(url) and parsed.host:
        if parsed.scheme.lower() == "https" or (not redirect and is_loopback_host(parsed.host)):
            return parsed
    if redirect:
        allowed = "redirects are followed only to https URLs"
    else:
        allowed = "only https URLs are downloaded (plain http only on loopback, e.g. the emulator)"
    raise ImageDownloadError(f"refusing to download {shown}: {allowed}", url=shown)


def _redact(url: str) -> str:
    """The URL without its signature: presigned query strings are credentials of a sort."""
    return redact_url(url, keep_query=False)


def _expired_error(url: str, status: int) -> ImageURLExpiredError:
    expires_at = url_expires_at(url)
    when = f"it expired at {expires_at:%Y-%m-%d %H:%M:%S} UTC" if expires_at else "it has probably expired"
    return ImageURLExpiredError(
        f"the image URL was refused (HTTP {status}): {when}. StepFun's URLs are valid about an hour: "
        "download promptly, or ask for response_format='b64_json'",
        url=_redact(url),
        status_code=status,
        expires_at=expires_at,
    )


def _refused_error(url: str, status: int) -> ImageDownloadError:
    """401/403 on a URL that is not past its time: the signature or the access is wrong."""
    shown = _redact(url)
    return ImageDownloadError(
        f"the storage refused {shown} (HTTP {status}: signature invalid or access denied). The URL is "
        "still within its validity window, so it was altered (e.g. its query string was edited or cut) "
        "or this computer's clock is behind; request the image again",
        url=shown,
        status_code=status,
    )


def _next_url(response: httpx2.Response, url: str, hops: int) -> str | None:
    if not response.is_redirect:
        return None
    if hops >= MAX_REDIRECTS:
        raise ImageDownloadError(f"too many redirects downloading {_redact(url)}", url=_redact(url))
    location = response.headers.get("location", "")
    target = str(httpx2.URL(url).join(location))
    check_url(target, redirect=True)
    return target


def _check_status(response: httpx2.Response, url: str, max_bytes: int) -> None:
    status = response.status_code
    expires_at = url_expires_at(url) if status in (401, 403) else None
    if expires_at is not None:
        if expires_at > dt.datetime.now(dt.timezone.utc):
            raise _refused_error(url, status)
        raise _expired_error(url, status)
    if status != 200:
        raise ImageDownloadError(
            f"downloading {_redact(url)} failed: HTTP {status}", url=_redact(url), status_code=status
        )
    length = response.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise _too_large(url, max_bytes)


def _too_large(url: str, max_bytes: int) -> ImageDownloadError:
    return ImageDownloadError(
        f"refusing to download {_redact(url)}: larger than max_bytes={max_bytes}", url=_redact(url)
    )


def _timeout_error(url: str, exc: Exception) -> ImageDownloadError:
    kind = type(exc).__name__
    return ImageDownloadError(f"downloading {_redact(url)} failed: {kind}", url=_redact(url))


class _Plan:
    """One download, everything but the I/O: the URL checks, the redirect decision, the status
    check, the size cap and the error mapping. ``download`` and ``adownload`` only send and read."""

    def __init__(self, url: str, max_bytes: int) -> None:
        check_url(url)
        self.url = url
        self.max_bytes = max_bytes
        self._hops = 0
        self._chunks: list[bytes] = []
        self._total = 0

    def accept(self, response: httpx2.Response) -> bool:
        """True when ``response`` carries the image (its status checked); False when it redirects
        (the next hop checked, and now ``self.url``)."""
        target = _next_url(response, self.url, self._hops)
        if target is None:
            _check_status(response, self.url, self.max_bytes)
            return True
        self.url, self._hops = target, self._hops + 1
        return False

    def add(self, chunk: bytes) -> None:
        self._total += len(chunk)
        if self._total > self.max_bytes:
            raise _too_large(self.url, self.max_bytes)  # cut as soon as it passes the cap
        self._chunks.append(chunk)

    def body(self) -> bytes:
        """The image; an empty body or one that is not an image (an HTML error page served with
        200, say) raises ``ImageDownloadError`` instead of being saved as an image."""
        data = b"".join(self._chunks)
        if sniff(data[:HEADER_BYTES]).format is None:
            shown = _redact(self.url)
            what = "an empty body" if not data else f"{len(data):,} bytes starting {data[:12]!r}"
            raise ImageDownloadError(
                f"downloading {shown} gave {what}, not a PNG, JPEG, WebP or GIF image", url=shown, status_code=200
            )
        return data

    @contextlib.contextmanager
    def transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx2.TransportError as exc:
            raise _timeout_error(self.url, exc) from exc


def download(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float | httpx2.Timeout = DEFAULT_DOWNLOAD_TIMEOUT,
    client: httpx2.Client | None = None,
) -> bytes:
    """The bytes behind a result URL (see the module docstring for what is refused)."""
    plan = _Plan(url, max_bytes)
    http = client if client is not None else httpx2.Client(timeout=timeout, follow_redirects=False)
    _deadline.install(http)  # ``timeout`` bounds the whole download, however slowly bytes come
    with (
        http if client is None else contextlib.nullcontext(),  # closes only its own
        plan.transport_errors(),
        _deadline.deadline(_deadline.total_seconds(timeout)),
    ):
        while True:
            with http.stream("GET", plan.url, timeout=timeout, follow_redirects=False) as response:
                if plan.accept(response):
                    for chunk in response.iter_bytes():
                        plan.add(chunk)
                    return plan.body()


async def adownload(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float | httpx2.Timeout = DEFAULT_DOWNLOAD_TIMEOUT,
    client: httpx2.AsyncClient | None = None,
) -> bytes:
    """Async :func:`download`."""
    plan = _Plan(url, max_bytes)
    http = client if client is not None else httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
    _deadline.install(http)
    async with http if client is None else contextlib.nullcontext():  # closes only its own
        with plan.transport_errors(), _deadline.deadline(_deadline.total_seconds(timeout)):
            while True:
                async with http.stream("GET", plan.url, timeout=timeout, follow_redirects=False) as response:
                    if plan.accept(response):
                        async for chunk in response.aiter_bytes():
                            plan.add(chunk)
                        return plan.body()
