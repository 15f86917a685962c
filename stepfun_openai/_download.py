"""Downloading result URLs safely: https only, a size cap, timeouts, clear expiry errors.

StepFun returns presigned object-storage URLs that expire (``X-Tos-Date`` + ``X-Tos-Expires``,
about an hour). Downloads go through httpx2 directly (not the OpenAI client: no API key must
travel to the storage host), with redirects followed by hand so that each hop is checked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from urllib.parse import parse_qs, unquote_plus, urlsplit

import httpx2
import openai

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
"""The largest image a download accepts; the stream is cut as soon as it passes this."""

DEFAULT_DOWNLOAD_TIMEOUT = httpx2.Timeout(60.0, connect=10.0)
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


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, redirect: bool = False) -> httpx2.URL:
    """The parsed URL if a download may go there: https, or http on loopback (the emulator) for
    the first hop; redirects only to https. Anything else raises ``ImageDownloadError``."""
    shown = _redact(url)
    try:
        parsed = httpx2.URL(url)
    except Exception:  # httpx2.InvalidURL and friends
        raise ImageDownloadError(f"not a valid URL: {shown}", url=shown) from None
    scheme = parsed.scheme.lower()
    if scheme == "https" and parsed.host:
        return parsed
    if scheme == "http" and parsed.host and not redirect and _is_loopback(parsed.host):
        return parsed
    if redirect:
        allowed = "redirects are followed only to https URLs"
    else:
        allowed = "only https URLs are downloaded (plain http only on loopback, e.g. the emulator)"
    raise ImageDownloadError(f"refusing to download {shown}: {allowed}", url=shown)


def _redact(url: str) -> str:
    """The URL without its signature: presigned query strings are credentials of a sort."""
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")


_SECRET_PARAM = re.compile(
    r"signature|credential|token|secret|passw|auth|session|(?:^|[-_.])(?:sig|key|apikey|api[-_]key|access[-_]?key)$",
    re.IGNORECASE,
)
REDACTED = "REDACTED"


def redact_url(url: str, *, keep_query: bool = True) -> str:
    """``url`` safe to store or show: the values of signed query parameters (``X-Tos-Signature``,
    ``X-Tos-Credential``, ``X-Amz-Security-Token``, any ``*Signature*``/``*Credential*``/token-like
    name) become ``REDACTED``; the rest (``X-Tos-Date``, ``X-Tos-Expires``, ...) is kept.
    ``keep_query=False`` drops the whole query string (``...?...``)."""
    if not keep_query:
        return _redact(url)
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        if eq and _SECRET_PARAM.search(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}{hash_sep}{fragment}"


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


def download(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float | httpx2.Timeout = DEFAULT_DOWNLOAD_TIMEOUT,
    client: httpx2.Client | None = None,
) -> bytes:
    """The bytes behind a result URL (see the module docstring for what is refused)."""
    check_url(url)
    owned = client is None
    http = client or httpx2.Client(timeout=timeout, follow_redirects=False)
    try:
        current, hops = url, 0
        while True:
            request = http.build_request("GET", current, timeout=timeout)
            try:
                response = http.send(request, stream=True, follow_redirects=False)
            except httpx2.TransportError as exc:
                raise _timeout_error(current, exc) from exc
            try:
                target = _next_url(response, current, hops)
                if target is not None:
                    current, hops = target, hops + 1
                    continue
                _check_status(response, current, max_bytes)
                chunks: list[bytes] = []
                total = 0
                try:
                    for chunk in response.iter_bytes():
                        total += len(chunk)
                        if total > max_bytes:
                            raise _too_large(current, max_bytes)
                        chunks.append(chunk)
                except httpx2.TransportError as exc:
                    raise _timeout_error(current, exc) from exc
                return b"".join(chunks)
            finally:
                response.close()
    finally:
        if owned:
            http.close()


async def adownload(
    url: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float | httpx2.Timeout = DEFAULT_DOWNLOAD_TIMEOUT,
    client: httpx2.AsyncClient | None = None,
) -> bytes:
    """Async :func:`download`."""
    check_url(url)
    owned = client is None
    http = client or httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
    try:
        current, hops = url, 0
        while True:
            request = http.build_request("GET", current, timeout=timeout)
            try:
                response = await http.send(request, stream=True, follow_redirects=False)
            except httpx2.TransportError as exc:
                raise _timeout_error(current, exc) from exc
            try:
                target = _next_url(response, current, hops)
                if target is not None:
                    current, hops = target, hops + 1
                    continue
                _check_status(response, current, max_bytes)
                chunks: list[bytes] = []
                total = 0
                try:
                    async for chunk in response.aiter_bytes():
                        total += len(chunk)
                        if total > max_bytes:
                            raise _too_large(current, max_bytes)
                        chunks.append(chunk)
                except httpx2.TransportError as exc:
                    raise _timeout_error(current, exc) from exc
                return b"".join(chunks)
            finally:
                await response.aclose()
    finally:
        if owned:
            await http.aclose()
