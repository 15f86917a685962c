"""What kind of string an image argument is, and URLs made safe to store or show.

The package's one answer to "is this a URL?": inputs, provenance, the tools, the batch and the
downloader ask here, so a string is never a URL to one module and a file path to another. Standard
library only (the emulator may use it too).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote_plus

__all__ = ["REDACTED", "is_data_url", "is_http_url", "is_loopback_host", "redact_url"]


def is_http_url(value: object) -> bool:
    """An ``http://`` or ``https://`` URL (any case); sent as is, never read as a file path."""
    return isinstance(value, str) and value[:8].lower().startswith(("http://", "https://"))


def is_data_url(value: object) -> bool:
    """A ``data:`` URL (any case): the image is inline."""
    return isinstance(value, str) and value[:5].lower() == "data:"


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (``127.0.0.1``, ``[::1]``): this machine, e.g. the emulator."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    if not keep_query:
        return f"{base}?..."
    query, hash_sep, fragment = rest.partition("#")
    parts = []
    for part in query.split("&"):
        name, eq, _value = part.partition("=")
        if eq and _SECRET_PARAM.search(unquote_plus(name)):
            part = f"{name}={REDACTED}"
        parts.append(part)
    return f"{base}?{'&'.join(parts)}{hash_sep}{fragment}"
