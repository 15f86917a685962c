"""Exceptions of the package. Every one subclasses a standard or an openai exception."""

from __future__ import annotations

import os
import re
import reprlib
import sys
from collections.abc import Sequence
from typing import Any

import httpx2
import openai

__all__ = [
    "ContentBlockedError",
    "ContentFilteredError",
    "InsufficientBalanceError",
    "MalformedResponseError",
    "QuotaExceededError",
    "StepFunRateLimitError",
    "StepFunValidationError",
    "caller_stacklevel",
    "get_trace_id",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package (the
    user's line), however deep in the package it is raised."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class StepFunValidationError(ValueError):
    """A parameter was rejected locally, before any request was sent.

    ``param`` names the parameter, ``value`` is what was given, ``model`` the model it was
    checked against (if any) and ``allowed`` a human-readable description of what is allowed.
    ``skippable`` is false for the checks ``validate=False`` does not turn off: the bounds on
    reading inputs and what the request body cannot carry at all.
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
        skippable: bool = True,
    ) -> None:
        self.param = param
        self.value = value
        self.allowed = allowed
        self.model = model
        self.endpoint = endpoint
        where = ""
        if model:
            where = f" for model {model!r}"
        if endpoint:
            where += f" on /images/{endpoint}"
        shown = _short_repr(value)
        message = f"invalid {param}={shown}{where}: {allowed}"
        if hint:
            message += f". {hint}"
        if skippable:
            message += " (local validation; pass validate=False to the client to skip it)"
        else:
            message += " (checked before sending, also with validate=False)"
        self.skippable = skippable
        super().__init__(message)


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
    """The server answered, but not with a usable image response (truncated JSON, an HTML or
    plain-text page, no ``data``, undecodable base64, a 200 carrying an error envelope).

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
