"""Exceptions of the package. Every one subclasses a standard or an openai exception."""

from __future__ import annotations

import os
import re
import reprlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx2
import openai

__all__ = [
    "ContentBlockedError",
    "ContentFilteredError",
    "InsufficientBalanceError",
    "MalformedResponseError",
    "PartialImagesError",
    "QuotaExceededError",
    "StepFunRateLimitError",
    "StepFunValidationError",
    "caller_stacklevel",
    "get_trace_id",
    "redact_response",
    "redact_secrets",
    "request_secrets",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


REDACTED = "[REDACTED]"
_MIN_SECRET = 6
"""Shorter "keys" (test placeholders) are not searched for: they would blank ordinary words."""
_MAX_DEPTH = 64

_V = TypeVar("_V")


def request_secrets(request: httpx2.Request | None) -> tuple[str, ...]:
    """The credential a request carried (its bearer token): no text from the server may repeat it."""
    if request is None:
        return ()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = (token or scheme).strip()
    return (token,) if len(token) >= _MIN_SECRET else ()


def redact_secrets(value: _V, secrets: Sequence[str], _depth: int = 0) -> _V:
    """``value`` (text, or JSON-like data) with every occurrence of ``secrets`` replaced by
    ``[REDACTED]``: a server that echoes the API key back must not put it into an exception, a
    log record, the CLI, a manifest or a summary."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)  # type: ignore[assignment]
        return value
    if _depth >= _MAX_DEPTH and isinstance(value, (Mapping, list, tuple)):
        return "[nested too deep]"  # type: ignore[return-value]
    if isinstance(value, Mapping):
        return {  # type: ignore[return-value]
            redact_secrets(k, secrets, _depth + 1): redact_secrets(v, secrets, _depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact_secrets(item, secrets, _depth + 1) for item in value)
    return value


def redact_response(response: httpx2.Response) -> httpx2.Response:
    """``response``, or a copy without its request's secret in the body or headers (read bodies only)."""
    secrets = request_secrets(response.request) if _has_request(response) else ()
    if not secrets:
        return response
    try:
        content = response.content
    except httpx2.ResponseNotRead:
        return response
    encoded = [secret.encode() for secret in secrets]
    headers = [(k, redact_secrets(v, secrets)) for k, v in response.headers.items()]
    if not any(e in content for e in encoded) and headers == list(response.headers.items()):
        return response
    for e in encoded:
        content = content.replace(e, REDACTED.encode())
    return httpx2.Response(response.status_code, headers=headers, content=content, request=response.request)


def _has_request(response: httpx2.Response) -> bool:
    try:
        response.request  # noqa: B018 - raises when the response was built without one
    except RuntimeError:
        return False
    return True


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package (the
    user's line), however deep in the package it is raised."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


VALIDATE_FALSE_HINT = " (local validation; pass validate=False to the client to skip it)"
"""The end of a :class:`StepFunValidationError` that ``validate=False`` would have avoided."""


class StepFunValidationError(ValueError):
    """A parameter was rejected locally, before any request was sent.

    ``param`` names the parameter, ``value`` is what was given, ``model`` the model it was
    checked against (if any) and ``allowed`` a human-readable description of what is allowed.

    ``skippable`` marks a check of the catalog that ``validate=False`` would skip: only then does
    the message end with :data:`VALIDATE_FALSE_HINT` (an unreadable file or a malformed argument
    fails with or without validation, so the hint would mislead). ``reason`` is the message
    without that hint, for callers that have no client to pass ``validate=False`` to (the CLI,
    the agent tools).
    The bounds on reading inputs and what the request body cannot carry at all are never
    skippable: ``validate=False`` does not turn them off.
    """

    def __init__(
        self,
        param: str,
        value: object,
        allowed: str,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        hint: str | None = None,
        skippable: bool = False,
    ) -> None:
        self.param = param
        self.value = value
        self.allowed = allowed
        self.model = model
        self.endpoint = endpoint
        self.skippable = skippable
        where = ""
        if model:
            where = f" for model {model!r}"
        if endpoint:
            where += f" on /images/{endpoint}"
        shown = _short_repr(value)
        message = f"invalid {param}={shown}{where}: {allowed}"
        if hint:
            message += f". {hint}"
        self.reason = message
        super().__init__(message + (VALIDATE_FALSE_HINT if skippable else ""))


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _short_repr(value: object, limit: int = 80) -> str:
    """A short repr, cheap for any value: a long string or bytes is cut before ``repr`` (a 3 GB
    base64 string is not copied), a huge integer is described (``repr`` refuses past 4300
    digits), and a value whose ``repr`` fails is named by its type."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        return repr(value[: limit - 20]) + f"... ({len(value)} {'chars' if isinstance(value, str) else 'bytes'})"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"<integer of {value.bit_length()} bits>"
    try:
        text = _REPR.repr(value) if isinstance(value, (list, tuple, dict, set, frozenset)) else repr(value)
    except Exception:  # a user's object: its repr is not ours to trust
        return f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[: limit - 20] + f"... ({len(text)} chars)"
    return text


def get_trace_id(obj: object) -> str | None:
    """The ``X-Trace-Id`` StepFun sent with a response or an error, if any.

    Accepts an exception raised by the client, an ``httpx2.Response`` or a raw response
    (``with_raw_response``). StepFun support asks for this id when you report a failed call.
    """
    existing = getattr(obj, "trace_id", None)
    if isinstance(existing, str):
        return existing
    response = getattr(obj, "response", None) if not isinstance(obj, httpx2.Response) else obj
    headers = getattr(response, "headers", None) if response is not None else getattr(obj, "headers", None)
    if headers is None:
        return None
    value = headers.get("x-trace-id")
    return value if isinstance(value, str) else None


class ContentBlockedError(openai.APIStatusError):
    """HTTP 451 ``censorship_blocked``: the prompt or the output was blocked. Do not retry."""


class InsufficientBalanceError(openai.APIStatusError):
    """HTTP 402 (or a 429 about balance/quota): the account needs a top-up. Not retried."""


_RATE_LIMIT_RE = re.compile(
    r"request limited (?P<kind>concurrency|RPM|rpm)\b.*?current:\s*(?P<current>\d+).*?limit:\s*(?P<limit>\d+)",
    re.IGNORECASE | re.DOTALL,
)


def parse_rate_limit_message(text: str) -> tuple[str | None, int | None, int | None]:
    """``("concurrency" | "rpm" | None, current, limit)`` from StepFun's 429 message."""
    match = _RATE_LIMIT_RE.search(text or "")
    if not match:
        return None, None, None
    return match.group("kind").lower(), int(match.group("current")), int(match.group("limit"))


class QuotaExceededError(InsufficientBalanceError, openai.RateLimitError):
    """HTTP 429 about balance or quota rather than request rate: waiting will not help. Not retried."""


class StepFunRateLimitError(openai.RateLimitError):
    """HTTP 429 ``rate_limited``. ``current`` and ``limit`` come from StepFun's message when present,
    ``kind`` is ``"concurrency"``, ``"rpm"`` or ``None``."""

    current: int | None
    limit: int | None
    kind: str | None

    def __init__(self, message: str, *, response: httpx2.Response, body: object | None) -> None:
        super().__init__(message, response=response, body=body)
        text = body.get("message") if isinstance(body, dict) else body
        self.kind, self.current, self.limit = parse_rate_limit_message(text if isinstance(text, str) else "")


class MalformedResponseError(openai.APIError):
    """The server answered, but not with a usable image response (truncated JSON or JSON nested
    too deeply, an HTML or plain-text page, no ``data``, a ``b64_json`` that is empty, not strict
    base64, not a PNG/JPEG/WebP/GIF image or larger than 50 MiB decoded, a 200 carrying an error
    envelope). Retried like a 5xx (``RetryPolicy.retry_malformed``); a batch records the job as
    ``failed`` with this type, and runs it again on resume.

    Raised once the retry policy gives up. ``status_code``, ``trace_id`` and ``excerpt`` (the first
    few hundred characters of the body) say what arrived.
    """

    def __init__(
        self,
        reason: str,
        *,
        request: httpx2.Request,
        status_code: int | None,
        trace_id: str | None,
        excerpt: str,
        body: object | None = None,
    ) -> None:
        message = f"malformed response from StepFun ({reason})"
        if status_code is not None:
            message += f"; HTTP {status_code}"
        if trace_id:
            message += f"; trace id {trace_id}"
        if excerpt:
            message += f"; body starts: {excerpt!r}"
        super().__init__(message, request, body=body)
        self.reason = reason
        self.status_code = status_code
        self.trace_id = trace_id
        self.excerpt = excerpt


class ContentFilteredError(openai.OpenAIError):
    """Raised by ``raise_for_content_filter()``: StepFun generated the image(s) but moderation
    marked them ``content_filtered``; the images are unusable."""

    def __init__(self, indices: Sequence[int], response: Any = None) -> None:
        self.indices = list(indices)
        self.response = response
        super().__init__(f"image(s) {self.indices} were content_filtered by StepFun moderation")


class PartialImagesError(openai.OpenAIError):
    """Some of the ``n`` requests of a call with ``n > 1`` failed: ``response`` holds the images that
    succeeded (in order, with their cost), ``errors`` the ``(index, exception)`` of the others."""

    def __init__(self, response: Any, errors: Sequence[tuple[int, BaseException]], n: int) -> None:
        first = errors[0][1]
        super().__init__(
            f"{len(errors)} of {n} images failed (first: {type(first).__name__}: {first}); "
            f"the {n - len(errors)} that succeeded are in .response"
        )
        self.response = response
        self.errors = list(errors)
