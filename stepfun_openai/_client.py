"""``StepFun`` and ``AsyncStepFun``: the OpenAI clients, pointed at StepFun and taught its ways."""

from __future__ import annotations

import asyncio
import os
import warnings
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
import openai
from openai import AsyncOpenAI, NotGiven, OpenAI, not_given
from typing_extensions import Self

from . import _deadline
from ._compat import (
    RAW_RESPONSE_HEADER,
    AsyncHttpxClientWrapper,
    AsyncOpenAIWithRawResponse,
    AsyncOpenAIWithStreamedResponse,
    FinalRequestOptions,
    OpenAIWithRawResponse,
    OpenAIWithStreamedResponse,
    SyncHttpxClientWrapper,
    cached_property,
    scrub_openai_environment,
)
from ._exceptions import (
    ContentBlockedError,
    InsufficientBalanceError,
    QuotaExceededError,
    StepFunRateLimitError,
    caller_stacklevel,
    redact_response,
    redact_secrets,
    request_secrets,
)
from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy, acall_with_retries, call_with_retries, split_options

# _requests, types and catalog are imported where first needed (a client's construction, its
# first response): `import stepfun_openai` stays close to `import openai`.
if TYPE_CHECKING:
    from ._account import AccountResource, AsyncAccountResource
    from ._images import (
        AsyncImages,
        AsyncImagesWithRawResponse,
        AsyncImagesWithStreamingResponse,
        Images,
        ImagesWithRawResponse,
        ImagesWithStreamingResponse,
    )
    from ._requests import ClientSettings
    from .catalog import Region

__all__ = [
    "API_KEY_ENV_VARS",
    "DEFAULT_TIMEOUT",
    "AsyncStepFun",
    "StepFun",
]

API_KEY_ENV_VARS = ("STEPFUN_API_KEY", "STEP_API_KEY")
BASE_URL_ENV_VAR = "STEPFUN_BASE_URL"

DEFAULT_TIMEOUT = httpx2.Timeout(180.0, connect=10.0)
"""Connect fails fast; reading waits long, because an image takes seconds to tens of seconds."""

_QUOTA_WORDS = ("balance", "quota", "insufficient", "arrears", "余额", "欠费")


class MissingAPIKeyError(openai.OpenAIError):
    """No StepFun key was given or found in the environment."""


def _resolve_api_key(api_key: str | None, enforce: bool) -> str:
    if api_key:
        return api_key
    if api_key is not None and enforce:  # given, but empty: never silently the environment's key
        raise MissingAPIKeyError("api_key is empty: pass your StepFun key, or omit api_key to use STEPFUN_API_KEY")
    for name in API_KEY_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return value
    if not enforce:
        return ""
    raise MissingAPIKeyError(
        "No StepFun API key: pass api_key=... or set STEPFUN_API_KEY (or STEP_API_KEY). "
        "OPENAI_API_KEY is deliberately never used."
    )


def _resolve_base_url(base_url: str | httpx2.URL | None) -> str | httpx2.URL:
    if base_url:
        return base_url
    from .catalog import DEFAULT_BASE_URL

    return os.environ.get(BASE_URL_ENV_VAR) or DEFAULT_BASE_URL


def _is_quota_message(body: object) -> bool:
    message = body.get("message") if isinstance(body, Mapping) else body
    error_type = body.get("type") if isinstance(body, Mapping) else None
    if isinstance(error_type, str) and error_type != "rate_limited" and any(w in error_type for w in _QUOTA_WORDS):
        return True
    return (
        isinstance(message, str)
        and "request limited" not in message
        and any(word in message.lower() for word in _QUOTA_WORDS)
    )


def _missing_v1_hint(base_url: object) -> str:
    """For a 404: StepFun's paths all start with ``/v1``, so a base URL without it (a common slip
    with a local emulator: ``http://127.0.0.1:8000``) is the likely cause, and worth saying."""
    if base_url is None:
        return ""
    url = httpx2.URL(str(base_url))
    if "v1" in url.path.strip("/").split("/"):
        return ""
    shown = str(url).rstrip("/")
    return f"; base_url {shown} has no /v1 path: did you mean {shown}/v1?"


class _StepFunMixin:
    """What the sync and async clients share."""

    retry_policy: RetryPolicy
    _stepfun_settings: ClientSettings

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | httpx2.URL | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float | httpx2.Timeout | NotGiven | None = not_given,
        validate: bool = True,
        stable_seed: bool = True,
        fit: bool = False,
        region: Region | None = None,
        fan_out: bool = True,
        default_headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        from ._requests import ClientSettings

        policy = retry_policy or DEFAULT_RETRY_POLICY
        if max_retries is not None:
            policy = policy.with_max_retries(max_retries)
        self.retry_policy = policy
        if region not in (None, "mainland", "international"):
            raise ValueError(f"region must be 'mainland', 'international' or None, got {region!r}")
        self._stepfun_settings = ClientSettings(
            validate=validate, stable_seed=stable_seed, fit=fit, region=region, fan_out=fan_out
        )
        # The next class in the MRO is OpenAI or AsyncOpenAI.
        super().__init__(  # type: ignore[call-arg]
            api_key=_resolve_api_key(api_key, kwargs.get("_enforce_credentials", True)),
            base_url=_resolve_base_url(base_url),
            max_retries=0,  # tenacity owns the retries; the SDK's must not multiply with them
            timeout=DEFAULT_TIMEOUT if isinstance(timeout, NotGiven) else timeout,
            default_headers=default_headers,
            **kwargs,
        )
        # copy() passes organization=None etc. explicitly: only a real value counts as the caller's.
        explicit = {name for name, value in kwargs.items() if value is not None}
        scrub_openai_environment(self, explicit, default_headers)
        # Total deadlines (max_total_time, the attempt's timeout) hold however slowly bytes come.
        _deadline.install(self._client)  # type: ignore[attr-defined]

    def _attempt_seconds(self, options: FinalRequestOptions) -> float | None:
        """The longest one attempt of a call may take, from its ``timeout`` (see :mod:`._deadline`)."""
        timeout = options.timeout if not isinstance(options.timeout, NotGiven) else self.timeout  # type: ignore[attr-defined]
        return _deadline.total_seconds(timeout)

    @property
    def validate(self) -> bool:
        """Whether parameters are checked against the catalog before sending."""
        return self._stepfun_settings.validate

    @property
    def stable_seed(self) -> bool:
        """Whether the client picks the seed (when none is given) before the first attempt."""
        return self._stepfun_settings.stable_seed

    @property
    def fit(self) -> bool:
        """Whether input images the model would reject are converted/scaled (Pillow) instead."""
        return self._stepfun_settings.fit

    @property
    def region(self) -> Region | None:
        """Whose prices apply (``mainland``: yuan, ``international``: dollars) when the host does not
        say: set it for the emulator or a proxy; StepFun's own hosts say it themselves."""
        return self._stepfun_settings.region

    @property
    def fan_out(self) -> bool:
        """Whether ``n > 1`` sends n requests at once (else it is refused before sending)."""
        return self._stepfun_settings.fan_out

    def copy(
        self,
        *,
        max_retries: int | NotGiven = not_given,
        retry_policy: RetryPolicy | None = None,
        validate: bool | None = None,
        stable_seed: bool | None = None,
        fit: bool | None = None,
        region: Region | NotGiven | None = not_given,
        fan_out: bool | None = None,
        _extra_kwargs: Mapping[str, Any] = {},
        **kwargs: Any,
    ) -> Self:
        """A new client of the same class with the same settings, some overridden
        (``with_options`` is an alias)."""
        policy = retry_policy or self.retry_policy
        if not isinstance(max_retries, NotGiven):
            policy = policy.with_max_retries(max_retries)
        ours = {
            "retry_policy": policy,
            "validate": self.validate if validate is None else validate,
            "stable_seed": self.stable_seed if stable_seed is None else stable_seed,
            "fit": self.fit if fit is None else fit,
            "region": self.region if isinstance(region, NotGiven) else region,
            "fan_out": self.fan_out if fan_out is None else fan_out,
        }
        # The base copy() forwards max_retries itself; it must be ours, not the SDK's 0.
        copied: Self = super().copy(  # type: ignore[misc]
            max_retries=policy.max_retries, _extra_kwargs={**ours, **_extra_kwargs}, **kwargs
        )
        return copied

    with_options = copy

    @property
    def _http_client_is_users(self) -> bool:
        """Whether the caller gave the HTTP client: a twin cannot take it over (a sync and an async
        one are not interchangeable), while the SDK's own default is simply made anew."""
        return not isinstance(getattr(self, "_client", None), (SyncHttpxClientWrapper, AsyncHttpxClientWrapper))

    @property
    def user_agent(self) -> str:
        """``stepfun-openai/<version> OpenAI/Python <openai version>``: StepFun's logs name this
        package and keep the SDK's own word (the SDK would say ``StepFun/Python``, the class name)."""
        from . import __version__

        return f"stepfun-openai/{__version__} OpenAI/Python {openai.__version__}"

    def _make_status_error(self, err_msg: str, *, body: object, response: httpx2.Response) -> openai.APIStatusError:
        # The server's words may echo the key back: redacted before any exception holds them.
        secrets = request_secrets(response.request)
        err_msg, body = redact_secrets(err_msg, secrets), redact_secrets(body, secrets)
        response = redact_response(response)
        data = body.get("error", body) if isinstance(body, Mapping) else body
        status = response.status_code
        if status == 404:
            err_msg += _missing_v1_hint(getattr(self, "base_url", None))
        error: openai.APIStatusError
        if status == 402:
            error = InsufficientBalanceError(err_msg, response=response, body=data)
        elif status == 451:
            error = ContentBlockedError(err_msg, response=response, body=data)
        elif status == 429 and _is_quota_message(data):
            error = QuotaExceededError(err_msg, response=response, body=data)
        elif status == 429:
            error = StepFunRateLimitError(err_msg, response=response, body=data)
        else:
            error = super()._make_status_error(err_msg, body=body, response=response)  # type: ignore[misc]
        error.trace_id = response.headers.get("x-trace-id")  # type: ignore[attr-defined]
        return error

    def __repr__(self) -> str:
        # Never the key: reprs end up in logs and tracebacks.
        base_url = getattr(self, "base_url", "?")
        return (
            f"{type(self).__name__}(base_url={str(base_url)!r}, api_key=<hidden>, retry_policy={self.retry_policy!r})"
        )


_ClientT = TypeVar("_ClientT", "StepFun", "AsyncStepFun")


def _twin(source: StepFun | AsyncStepFun, twin: type[_ClientT], overrides: dict[str, Any]) -> _ClientT:
    """``source``'s settings in a client of the other class, ``overrides`` replacing any of them.

    Read from the client as it is now, like ``copy()`` does: organization, project and the other
    OpenAI settings are ``None`` unless the caller gave them (construction scrubbed ``OPENAI_*``),
    and the headers and query are the caller's own, not the SDK's platform headers.
    """
    settings: dict[str, Any] = {
        "api_key": source.api_key,
        "base_url": source.base_url,
        "websocket_base_url": source.websocket_base_url,
        "organization": source.organization,
        "project": source.project,
        "webhook_secret": source.webhook_secret,
        "admin_api_key": source.admin_api_key,
        "timeout": source.timeout,
        "retry_policy": source.retry_policy,  # max_retries included
        "validate": source.validate,
        "stable_seed": source.stable_seed,
        "fit": source.fit,
        "region": source.region,
        "fan_out": source.fan_out,
        "default_headers": dict(source._custom_headers) or None,
        "default_query": dict(source._custom_query) or None,
        "_strict_response_validation": source._strict_response_validation,
        "_enforce_credentials": bool(source.api_key),  # built allowed no key: so is its twin
    }
    to_async = issubclass(twin, AsyncStepFun)
    method, theirs, needed = ("to_async", "Client", "AsyncClient") if to_async else ("to_sync", "AsyncClient", "Client")
    if source._api_key_provider is not None and "api_key" not in overrides:
        if not isinstance(source, StepFun):
            raise TypeError(
                "AsyncStepFun.to_sync(): this client's API key comes from an async callable, which a StepFun "
                "cannot await: pass to_sync(api_key=...)"
            )
        settings["api_key"] = _in_a_thread(source._api_key_provider)
    if source._http_client_is_users and overrides.get("http_client") is None:
        target = f"{'an' if to_async else 'a'} {twin.__name__}"
        warnings.warn(
            f"{type(source).__name__}.{method}(): this client was built with your own http_client, and an "
            f"httpx2.{theirs} cannot serve {target}, so the {twin.__name__} gets a fresh default HTTP client. Your "
            "client's settings (connection-pool limits, proxies, transport, event hooks) are not carried: they "
            f"cannot be read back reliably. To keep them, pass {method}(http_client=httpx2.{needed}(...)).",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    return twin(**{**settings, **overrides})


def _in_a_thread(api_key: Callable[[], str]) -> Callable[[], Awaitable[str]]:
    """A sync key callable, for an async client: called in a worker thread, so a slow token fetch
    never blocks the event loop."""

    async def provider() -> str:
        return await asyncio.to_thread(api_key)

    return provider


def _is_image_call(cast_to: Any, response: httpx2.Response) -> bool:
    """An answer of one of the image endpoints, parsed now or (raw) later; not a streamed one."""
    from .types import StepFunImagesResponse

    return cast_to is StepFunImagesResponse and response.request.headers.get(RAW_RESPONSE_HEADER) in (None, "true")


def _is_raw(response: httpx2.Response) -> bool:
    return response.request.headers.get(RAW_RESPONSE_HEADER) == "true"


def _finish_on_parse(
    raw: Any, options: FinalRequestOptions, response: httpx2.Response, region: Region | None = None
) -> Any:
    """``with_raw_response``: the SDK parses when the caller asks; give that parse our checks."""
    sdk_parse = raw.parse

    def parse(**kwargs: Any) -> Any:
        if kwargs.get("to") is not None:
            return sdk_parse(**kwargs)
        try:
            result = sdk_parse(**kwargs)
        except (ValueError, RecursionError) as exc:
            raise _invalid_json(exc, response) from None
        return _finish(result, options, response, region)

    raw.parse = parse
    return raw


def _finish(
    result: object, options: FinalRequestOptions, response: httpx2.Response, region: Region | None = None
) -> Any:
    from ._requests import finish_images_response

    sent = options.json_data if isinstance(options.json_data, Mapping) else getattr(options.content, "sent", None)
    return finish_images_response(result, response, sent, region)


def _invalid_json(exc: Exception, response: httpx2.Response) -> Exception:
    """JSONDecodeError and friends (a truncated or non-JSON body), or a RecursionError (a body
    nested deeper than the parser goes): a ``MalformedResponseError``, retried like any other."""
    from ._requests import malformed

    if isinstance(exc, RecursionError):
        return malformed("JSON nested too deeply", response)
    return malformed(f"invalid JSON ({type(exc).__name__})", response)


class StepFun(_StepFunMixin, OpenAI):
    """The OpenAI client for StepFun.

    ``api_key`` defaults to ``STEPFUN_API_KEY``, then ``STEP_API_KEY`` (never ``OPENAI_API_KEY``);
    ``base_url`` to ``STEPFUN_BASE_URL``, then ``https://api.stepfun.com/v1``. ``max_retries`` and
    ``retry_policy`` configure the retries (the SDK's own are off: tenacity owns them);
    ``validate=False`` turns off the local checks against the catalog; ``stable_seed=False`` stops
    the client from picking a seed when none is given; ``fit=True`` converts or scales input images
    the model would reject (needs Pillow). Every other keyword goes to ``OpenAI``.
    """

    @cached_property
    def images(self) -> Images:
        """StepFun's image endpoints: ``generate``, ``image2image``, ``edit``."""
        from ._images import Images  # lazily, like the SDK's resources: keeps the import cheap

        return Images(self)

    @cached_property
    def account(self) -> AccountResource:
        """The account behind the key: ``client.account.retrieve()`` gives its balance."""
        from ._account import AccountResource

        return AccountResource(self)

    @cached_property
    def with_raw_response(self) -> StepFunWithRawResponse:
        return StepFunWithRawResponse(self)

    @cached_property
    def with_streaming_response(self) -> StepFunWithStreamedResponse:
        return StepFunWithStreamedResponse(self)

    def to_async(self, *, http_client: httpx2.AsyncClient | None = None, **overrides: Any) -> AsyncStepFun:
        """An ``AsyncStepFun`` with this client's settings; keywords (the constructor's) replace them.

        A sync HTTP client cannot serve it: it gets ``http_client``, or a default one (with a
        ``UserWarning`` if this client was built with an ``http_client`` of yours).
        """
        return _twin(self, AsyncStepFun, {"http_client": http_client, **overrides})

    def request(
        self, cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        # The single place every endpoint passes through, inherited ones included.
        policy, attempt_options = split_options(self.retry_policy, options, self._idempotency_key)
        return call_with_retries(
            policy,
            lambda: super(StepFun, self).request(cast_to, attempt_options, stream=stream, stream_cls=stream_cls),
            attempt_timeout=None if stream else self._attempt_seconds(options),
        )

    def _process_response(
        self, *, cast_to: Any, options: FinalRequestOptions, response: httpx2.Response, **kwargs: Any
    ) -> Any:
        if not _is_image_call(cast_to, response):
            return super()._process_response(cast_to=cast_to, options=options, response=response, **kwargs)
        if _is_raw(response):
            raw = super()._process_response(cast_to=cast_to, options=options, response=response, **kwargs)
            return _finish_on_parse(raw, options, response, self.region)
        try:
            result = super()._process_response(cast_to=cast_to, options=options, response=response, **kwargs)
        except (ValueError, RecursionError) as exc:
            raise _invalid_json(exc, response) from None
        return _finish(result, options, response, self.region)


class AsyncStepFun(_StepFunMixin, AsyncOpenAI):
    """The async twin of :class:`StepFun`, with the same arguments and behaviour."""

    @cached_property
    def images(self) -> AsyncImages:
        """StepFun's image endpoints: ``generate``, ``image2image``, ``edit``."""
        from ._images import AsyncImages

        return AsyncImages(self)

    @cached_property
    def account(self) -> AsyncAccountResource:
        """The account behind the key: ``await client.account.retrieve()`` gives its balance."""
        from ._account import AsyncAccountResource

        return AsyncAccountResource(self)

    @cached_property
    def with_raw_response(self) -> AsyncStepFunWithRawResponse:
        return AsyncStepFunWithRawResponse(self)

    @cached_property
    def with_streaming_response(self) -> AsyncStepFunWithStreamedResponse:
        return AsyncStepFunWithStreamedResponse(self)

    def to_sync(self, *, http_client: httpx2.Client | None = None, **overrides: Any) -> StepFun:
        """A ``StepFun`` with this client's settings; keywords (the constructor's) replace them.

        An async HTTP client cannot serve it: it gets ``http_client``, or a default one (with a
        ``UserWarning`` if this client was built with an ``http_client`` of yours).
        """
        return _twin(self, StepFun, {"http_client": http_client, **overrides})

    async def request(
        self, cast_to: Any, options: FinalRequestOptions, *, stream: bool = False, stream_cls: Any = None
    ) -> Any:
        policy, attempt_options = split_options(self.retry_policy, options, self._idempotency_key)
        return await acall_with_retries(
            policy,
            lambda: super(AsyncStepFun, self).request(cast_to, attempt_options, stream=stream, stream_cls=stream_cls),
            attempt_timeout=None if stream else self._attempt_seconds(options),
        )

    async def _process_response(
        self, *, cast_to: Any, options: FinalRequestOptions, response: httpx2.Response, **kwargs: Any
    ) -> Any:
        if not _is_image_call(cast_to, response):
            return await super()._process_response(cast_to=cast_to, options=options, response=response, **kwargs)
        if _is_raw(response):
            raw = await super()._process_response(cast_to=cast_to, options=options, response=response, **kwargs)
            return _finish_on_parse(raw, options, response, self.region)
        try:
            result = await super()._process_response(cast_to=cast_to, options=options, response=response, **kwargs)
        except (ValueError, RecursionError) as exc:
            raise _invalid_json(exc, response) from None
        return _finish(result, options, response, self.region)


class StepFunWithRawResponse(OpenAIWithRawResponse):
    """``client.with_raw_response``: the SDK's, with StepFun's image methods (``image2image`` too)."""

    _client: StepFun

    @cached_property
    def images(self) -> ImagesWithRawResponse:
        return self._client.images.with_raw_response


class AsyncStepFunWithRawResponse(AsyncOpenAIWithRawResponse):
    _client: AsyncStepFun

    @cached_property
    def images(self) -> AsyncImagesWithRawResponse:
        return self._client.images.with_raw_response


class StepFunWithStreamedResponse(OpenAIWithStreamedResponse):
    _client: StepFun

    @cached_property
    def images(self) -> ImagesWithStreamingResponse:
        return self._client.images.with_streaming_response


class AsyncStepFunWithStreamedResponse(AsyncOpenAIWithStreamedResponse):
    _client: AsyncStepFun

    @cached_property
    def images(self) -> AsyncImagesWithStreamingResponse:
        return self._client.images.with_streaming_response
