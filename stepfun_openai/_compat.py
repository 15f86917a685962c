"""Every import of openai's private modules lives here, so an openai release that moves one
breaks exactly one file. CI runs the tests against the lowest and the newest openai 3.x allowed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openai import _legacy_response as legacy_response
from openai._base_client import AsyncHttpxClientWrapper, SyncHttpxClientWrapper, make_request_options
from openai._client import (
    AsyncOpenAIWithRawResponse,
    AsyncOpenAIWithStreamedResponse,
    OpenAIWithRawResponse,
    OpenAIWithStreamedResponse,
)
from openai._compat import cached_property
from openai._constants import RAW_RESPONSE_HEADER
from openai._models import FinalRequestOptions
from openai._resource import AsyncAPIResource, SyncAPIResource
from openai._response import async_to_streamed_response_wrapper, to_streamed_response_wrapper
from openai._streaming import AsyncStream, Stream
from openai._types import Body, FileTypes, Headers, Query, ResponseT

try:  # serialises JSON bodies exactly as the SDK does (datetime, pydantic models)
    from openai._utils._json import openapi_dumps
except ImportError:  # pragma: no cover - older openai releases
    import json as _json

    def openapi_dumps(obj: Any) -> bytes:
        return _json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


__all__ = [
    "RAW_RESPONSE_HEADER",
    "AsyncAPIResource",
    "AsyncHttpxClientWrapper",
    "AsyncOpenAIWithRawResponse",
    "AsyncOpenAIWithStreamedResponse",
    "AsyncStream",
    "Body",
    "FileTypes",
    "FinalRequestOptions",
    "Headers",
    "OpenAIWithRawResponse",
    "OpenAIWithStreamedResponse",
    "Query",
    "ResponseT",
    "Stream",
    "SyncAPIResource",
    "SyncHttpxClientWrapper",
    "async_to_streamed_response_wrapper",
    "cached_property",
    "connection_limit",
    "connection_pools",
    "legacy_response",
    "make_request_options",
    "openapi_dumps",
    "to_streamed_response_wrapper",
]


_OPENAI_ENV_ATTRIBUTES = ("organization", "project", "webhook_secret", "admin_api_key")


def scrub_openai_environment(client: object, explicit: set[str], default_headers: object) -> None:
    """Undo what the OpenAI base client read from ``OPENAI_*`` environment variables.

    A StepFun client must never send a user's OpenAI organization, project, admin key or
    ``OPENAI_CUSTOM_HEADERS`` (which may hold an Authorization header) to StepFun. Values the
    caller passed explicitly are kept.
    """
    for name in _OPENAI_ENV_ATTRIBUTES:
        if name not in explicit and hasattr(client, name):
            setattr(client, name, None)
    headers = dict(default_headers) if isinstance(default_headers, Mapping) else {}
    client._custom_headers = headers  # type: ignore[attr-defined]
    if hasattr(client, "_ambient_authorizations"):
        client._ambient_authorizations = frozenset()


def connection_limit(http_client: object) -> int | None:
    """The most connections an httpx2 client's pool opens (``None`` if it cannot be read): the
    SDK's default pool holds 1,000, which caps the requests in flight at once."""
    pool = getattr(getattr(http_client, "_transport", None), "_pool", None)
    limit = getattr(pool, "_max_connections", None)
    return limit if isinstance(limit, int) else None


def connection_pools(http_client: object) -> list[Any]:
    """The httpcore2 connection pools behind an httpx2 client (its transport and its mounts) that
    have a network backend to wrap; empty for a mock or custom transport."""
    transports = [getattr(http_client, "_transport", None)]
    mounts = getattr(http_client, "_mounts", None)
    if isinstance(mounts, Mapping):
        transports.extend(mounts.values())
    pools = [getattr(transport, "_pool", None) for transport in transports]
    return [pool for pool in pools if hasattr(pool, "_network_backend")]
