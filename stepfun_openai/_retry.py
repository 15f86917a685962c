"""Retries, owned by tenacity alone: the OpenAI base client is built with ``max_retries=0``.

The client wraps its single ``request()`` once, so every endpoint (StepFun's and the ones inherited
from the OpenAI SDK) gets exactly one retry loop, configured by one :class:`RetryPolicy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.utils
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
import openai

from . import _deadline
from ._exceptions import ContentBlockedError, InsufficientBalanceError, MalformedResponseError, get_trace_id
from ._urls import redact_url

if TYPE_CHECKING:
    # tenacity is imported where a retry loop is built (~40 ms), not with the package.
    import tenacity

    from ._compat import FinalRequestOptions

__all__ = [
    "DEFAULT_RETRY_POLICY",
    "NEVER_RETRIED_STATUS",
    "RETRYABLE_STATUS",
    "RetryPolicy",
    "acall_with_retries",
    "async_retrying",
    "call_with_retries",
    "explain_connection_error",
    "is_refused",
    "is_retryable",
    "retry_after_seconds",
    "split_options",
]

log = logging.getLogger("stepfun_openai")

_T = TypeVar("_T")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Retried by default: the server did not (or could not) produce the image; asking again may work."""

NEVER_RETRIED_STATUS = frozenset({400, 401, 402, 403, 404, 422, 451})
"""Asking again cannot help (bad request, key, balance, permission, path, moderation)."""


def _default_sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _default_async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries a failed call (``StepFun(retry_policy=RetryPolicy(...))``).

    Attributes:
      max_retries: retries after the first attempt, so at most ``max_retries + 1`` HTTP requests
        per call. ``StepFun(max_retries=N)`` and ``with_options(max_retries=N)`` set just this.
      initial_backoff: the first backoff ceiling in seconds; it doubles on each retry.
      max_backoff: the largest backoff ceiling. The wait is drawn uniformly from
        ``[0, min(max_backoff, initial_backoff * 2**(retry - 1))]`` ("full jitter").
      max_total_time: seconds a whole call may take, from its first byte sent to its last byte
        read, waits included: an attempt still running at that moment fails with
        ``openai.APITimeoutError`` (however slowly the server trickles bytes), and no retry starts
        whose wait would cross it. ``None``: no limit besides ``max_retries`` and the timeout.
      max_retry_after: the longest server-requested wait (``Retry-After``/``retry-after-ms``)
        that is honoured; longer requests are cut to this.
      retry_on_status: the HTTP statuses retried. A 429 about balance or quota is never retried,
        nor any of ``NEVER_RETRIED_STATUS`` (400, 401, 402, 403, 404, 422, 451).
      retry_connection_errors: retry connection errors and timeouts.
      max_refused_time: seconds into a call after which a refused connection (nothing listens at
        the base URL) is no longer retried: a server restarting comes back within seconds, a wrong
        URL never does.
      retry_malformed: retry answers that are not a usable image response
        (:class:`~stepfun_openai.MalformedResponseError`).
      sleep / async_sleep: how to wait (default ``time.sleep`` / ``asyncio.sleep``); tests pass a
        fake to record the waits instead of spending them.
    """

    max_retries: int = 8
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_total_time: float | None = 300.0
    max_retry_after: float = 60.0
    max_refused_time: float = 3.0
    retry_on_status: frozenset[int] = field(default=RETRYABLE_STATUS)
    retry_connection_errors: bool = True
    retry_malformed: bool = True
    sleep: Callable[[float], None] | None = field(default=None, repr=False, compare=False)
    async_sleep: Callable[[float], Awaitable[None]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"RetryPolicy: max_retries must be a non-negative integer, got {self.max_retries!r}")
        for name in ("initial_backoff", "max_backoff", "max_retry_after", "max_refused_time"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 <= value < math.inf):
                raise ValueError(f"RetryPolicy: {name} must be a finite number of seconds >= 0, got {value!r}")
        if self.initial_backoff > self.max_backoff:
            raise ValueError(
                f"RetryPolicy: initial_backoff={self.initial_backoff!r} is larger than max_backoff={self.max_backoff!r}"
            )
        if self.max_total_time is not None and not (0 < self.max_total_time):
            raise ValueError(f"RetryPolicy: max_total_time must be > 0 seconds or None, got {self.max_total_time!r}")
        statuses = frozenset(_as_statuses(self.retry_on_status))
        never = sorted(statuses & NEVER_RETRIED_STATUS)
        if never:
            raise ValueError(
                f"RetryPolicy: retry_on_status={sorted(statuses)} includes {never}, which are never retried "
                f"(the same request cannot succeed, or would be billed or blocked again)"
            )
        object.__setattr__(self, "retry_on_status", statuses)

    @property
    def max_attempts(self) -> int:
        """HTTP requests a call may make at most: ``max_retries + 1``."""
        return self.max_retries + 1

    def with_max_retries(self, max_retries: int) -> RetryPolicy:
        if max_retries == self.max_retries and not isinstance(max_retries, bool):
            return self
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"RetryPolicy: max_retries must be a non-negative integer, got {max_retries!r}")
        # Per call (a request's max_retries, each batch attempt): a copy without re-validating the rest.
        changed = copy.copy(self)
        object.__setattr__(changed, "max_retries", max_retries)
        return changed


def _as_statuses(values: Iterable[object]) -> Iterable[int]:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"RetryPolicy: retry_on_status must hold HTTP status integers, got {value!r}")
        yield value


DEFAULT_RETRY_POLICY = RetryPolicy()


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether ``policy`` retries a call that failed with ``exc``."""
    if isinstance(exc, (InsufficientBalanceError, ContentBlockedError)):  # includes QuotaExceededError
        return False
    if isinstance(exc, MalformedResponseError):
        return policy.retry_malformed
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in policy.retry_on_status and exc.status_code not in NEVER_RETRIED_STATUS
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return policy.retry_connection_errors
    return False


def retry_after_seconds(exc: BaseException | None, *, now: float | None = None) -> float | None:
    """The wait the server asked for with ``retry-after-ms`` or ``Retry-After`` (seconds or an
    HTTP date), or ``None`` when it asked for none (or sent something unreadable)."""
    response = getattr(exc, "response", None)
    headers = response.headers if isinstance(response, httpx2.Response) else None
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            value = float(milliseconds) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(value, 0.0)
    text = headers.get("retry-after")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            date = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if date.tzinfo is None:
            return None
        return max(date.timestamp() - (time.time() if now is None else now), 0.0)
    return max(value, 0.0) if math.isfinite(value) else None


def _wait(
    policy: RetryPolicy, retry_number: Callable[[tenacity.RetryCallState], int] | None = None
) -> Callable[[tenacity.RetryCallState], float]:
    """The server's ``Retry-After`` (capped) or else full jitter; ``retry_number`` (default: the
    attempt number) is what the backoff ceiling doubles with."""
    import tenacity

    backoff = tenacity.wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        requested = retry_after_seconds(exc)
        if requested is not None:
            return min(requested, policy.max_retry_after)
        if retry_number is not None:
            shadow = copy.copy(state)
            shadow.attempt_number = retry_number(state)
            return float(backoff(shadow))
        return float(backoff(state))

    return wait


def _describe(exc: BaseException | None) -> tuple[str, int | None, str | None]:
    if exc is None:
        return "no error", None, None
    status = getattr(exc, "status_code", None)
    return type(exc).__name__, status if isinstance(status, int) else None, get_trace_id(exc)


def _log_retry(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        # Names, numbers and the trace id only: never the message or body (a body excerpt may hold
        # image data; a server could echo a header).
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        name, status, trace_id = _describe(exc)
        log.warning(
            "StepFun request failed (attempt %d of %d: %s, HTTP %s, trace id %s); retrying in %.2fs",
            state.attempt_number,
            policy.max_attempts,
            name,
            status if status is not None else "-",
            trace_id or "-",
            wait,
            extra={
                "stepfun_attempt": state.attempt_number,
                "stepfun_wait": wait,
                "stepfun_status": status,
                "stepfun_trace_id": trace_id,
                "stepfun_error": name,
            },
        )

    return before_sleep


def is_refused(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a connection that could not be opened (nothing listens, no route), as
    opposed to one that broke or timed out once open."""
    if not isinstance(exc, openai.APIConnectionError) or isinstance(exc, openai.APITimeoutError):
        return False
    cause = exc.__cause__
    return isinstance(cause, httpx2.ConnectError) and not isinstance(cause, httpx2.ConnectTimeout)


def refused_for_too_long(exc: BaseException | None, elapsed: float, policy: RetryPolicy) -> bool:
    """A refused connection is retried only within ``policy.max_refused_time`` of the call's start."""
    return is_refused(exc) and elapsed >= policy.max_refused_time


def _retrying_kwargs(policy: RetryPolicy, started: float) -> dict[str, Any]:
    import tenacity

    max_total_time = policy.max_total_time

    def stop_early(state: tenacity.RetryCallState) -> bool:
        elapsed = time.monotonic() - started
        exc = state.outcome.exception() if state.outcome is not None else None
        if refused_for_too_long(exc, elapsed + (state.upcoming_sleep or 0.0), policy):
            return True
        # tenacity's stop_before_delay, counted from the call's first attempt (made before the loop)
        return max_total_time is not None and elapsed + (state.upcoming_sleep or 0.0) >= max_total_time

    stop = tenacity.stop_after_attempt(policy.max_attempts) | _stop_if(stop_early)
    return {
        "stop": stop,
        "wait": _wait(policy),
        "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, policy)),
        "reraise": True,
        "before_sleep": _log_retry(policy),
    }


def _stop_if(predicate: Callable[[tenacity.RetryCallState], bool]) -> tenacity.stop.stop_base:
    import tenacity

    class _Stop(tenacity.stop.stop_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
            return predicate(retry_state)

    return _Stop()


class _Call:
    """One call's attempts. The first is made outside any loop (most calls succeed at once, and
    a tenacity loop costs more than the rest of the call's own work); a failure the policy would
    retry is replayed as the loop's first attempt, so tenacity decides about it as about any
    other, with the same waits, stops and logs."""

    def __init__(self, policy: RetryPolicy, attempt_timeout: float | None = None) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.ends = None if policy.max_total_time is None else self.started + policy.max_total_time
        self.attempt_timeout = attempt_timeout
        self.attempts = 1
        self.failed: Exception | None = None

    def deadline(self) -> contextlib.AbstractContextManager[None]:
        """Around each attempt: it ends by its own timeout and by the call's ``max_total_time``."""
        return _deadline.deadline(self.attempt_timeout, until=self.ends)

    def enters_loop(self, exc: Exception) -> bool:
        """After the first attempt failed with ``exc``: whether the retry loop takes over."""
        if self.policy.max_retries == 0 or not is_retryable(exc, self.policy):
            _gave_up(exc, 1, self.policy, self.started)
            return False
        self.failed = exc
        return True

    def next_attempt(self) -> None:
        """At the start of each of the loop's attempts: the first replays the failure."""
        if self.failed is not None:
            failed, self.failed = self.failed, None
            raise failed
        self.attempts += 1

    def retrying_kwargs(self) -> dict[str, Any]:
        return _retrying_kwargs(self.policy, self.started)


def _gave_up(exc: BaseException, attempts: int, policy: RetryPolicy, started: float | None = None) -> None:
    if isinstance(exc, openai.APIConnectionError):
        explain_connection_error(exc, attempts, None if started is None else time.monotonic() - started)
    if attempts > 1:
        name, status, trace_id = _describe(exc)
        log.warning(
            "StepFun request gave up after %d attempts (%s, HTTP %s, trace id %s)",
            attempts,
            name,
            status if status is not None else "-",
            trace_id or "-",
            extra={"stepfun_attempt": attempts, "stepfun_status": status, "stepfun_trace_id": trace_id},
        )
    if isinstance(exc, openai.OpenAIError):
        exc.attempts = attempts  # type: ignore[attr-defined]


def split_options(
    policy: RetryPolicy, options: FinalRequestOptions, new_idempotency_key: Callable[[], str]
) -> tuple[RetryPolicy, FinalRequestOptions]:
    """The policy for one call and the options each attempt sends.

    A per-request ``max_retries`` (the SDK's ``FinalRequestOptions.max_retries``) becomes this
    call's policy; the attempt itself always runs with the SDK's retries off. The idempotency key is
    fixed once, so every attempt of a call sends the same one (as the SDK's own retries would).
    """
    if isinstance(options.max_retries, int):
        policy = policy.with_max_retries(options.max_retries)
    update: dict[str, Any] = {"max_retries": 0}
    if options.idempotency_key is None and options.method.lower() != "get":
        update["idempotency_key"] = new_idempotency_key()
    return policy, options.model_copy(update=update)


def explain_connection_error(exc: openai.APIConnectionError, attempts: int, elapsed: float | None) -> None:
    """Make the final connection error say where it tried, how often and for how long, and why
    (the SDK's own text is a bare "Connection error." or "Request timed out.")."""
    request = getattr(exc, "request", None)
    where = redact_url(str(request.url), keep_query=False) if isinstance(request, httpx2.Request) else "the server"
    cause = exc.__cause__
    why = f"{type(cause).__name__}: {cause}" if cause is not None and str(cause) else type(cause or exc).__name__
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}{took}"
    if isinstance(exc, openai.APITimeoutError):
        message = f"Request timed out: no complete answer from {where} ({tries}; {why})"
    else:
        message = f"Connection error: could not reach {where} ({tries}; {why})"
    exc.message = message
    exc.args = (message,)


def call_with_retries(policy: RetryPolicy, fn: Callable[[], _T], *, attempt_timeout: float | None = None) -> _T:
    """Run ``fn`` (one HTTP attempt) under ``policy``; the last error is raised unchanged, with
    ``attempts`` (how many HTTP requests were made) set on it. Each attempt's network I/O ends by
    ``attempt_timeout`` seconds and by the call's ``max_total_time`` (see :mod:`._deadline`)."""
    call = _Call(policy, attempt_timeout)
    try:
        with call.deadline():
            return fn()
    except Exception as exc:
        if not call.enters_loop(exc):
            raise

    def attempt() -> _T:
        call.next_attempt()
        with call.deadline():
            return fn()

    import tenacity

    retrying = tenacity.Retrying(sleep=policy.sleep or _default_sleep, **call.retrying_kwargs())
    try:
        return retrying(attempt)
    except Exception as exc:
        _gave_up(exc, call.attempts, policy, call.started)
        raise


async def acall_with_retries(
    policy: RetryPolicy, fn: Callable[[], Awaitable[_T]], *, attempt_timeout: float | None = None
) -> _T:
    """The async twin of :func:`call_with_retries` (``tenacity.AsyncRetrying``, same policy)."""
    call = _Call(policy, attempt_timeout)
    try:
        with call.deadline():
            return await fn()
    except Exception as exc:
        if not call.enters_loop(exc):
            raise

    async def attempt() -> _T:
        call.next_attempt()
        with call.deadline():
            return await fn()

    import tenacity

    retrying = tenacity.AsyncRetrying(sleep=policy.async_sleep or _default_async_sleep, **call.retrying_kwargs())
    try:
        return await retrying(attempt)
    except Exception as exc:
        _gave_up(exc, call.attempts, policy, call.started)
        raise


class _Tally:
    """The failures of one retry loop, split into paced ones and the others; each failed attempt
    is counted once, however many hooks look at it."""

    def __init__(self, paced: Callable[[BaseException], bool]) -> None:
        self._paced = paced
        self.reset()

    def reset(self) -> None:
        self.attempt = 0
        self.paced = 0
        self.others = 0

    def count(self, state: tenacity.RetryCallState) -> bool:
        """Count the failure that ended ``state``'s attempt; whether it is a paced one."""
        exc = state.outcome.exception() if state.outcome is not None else None
        paced = exc is not None and self._paced(exc)
        if state.attempt_number != self.attempt:
            self.attempt = state.attempt_number
            if paced:
                self.paced += 1
            else:
                self.others += 1
        return paced


def async_retrying(
    policy: RetryPolicy,
    *,
    retry: Callable[[BaseException], bool] | None = None,
    paced: Callable[[BaseException], bool] | None = None,
    max_paced: int = 0,
    before: Callable[[tenacity.RetryCallState], None] | None = None,
    log_retries: bool = True,
    limit_total_time: bool = True,
) -> tenacity.AsyncRetrying:
    """A ``tenacity.AsyncRetrying`` under ``policy``, for a loop that makes each attempt itself::

        async for attempt in async_retrying(policy):
            with attempt:
                response = await send()

    The error that ends the loop (not retried, or retries used up) is re-raised unchanged. Build
    one per call. Waits use ``policy.async_sleep`` (default ``asyncio.sleep``).

    Args:
      retry: which errors are retried; default :func:`is_retryable` under ``policy``.
      paced: errors whose pace the caller owns (the batch's 429s, paced by its rate limiter):
        retried without a wait and counted against ``max_paced`` instead of
        ``policy.max_retries``. The backoff of the other errors doubles with their count alone.
      max_paced: give up on the ``max_paced``-th paced error.
      before: called before each attempt (tenacity's ``before`` hook); an error it raises ends
        the loop before the attempt is made.
      log_retries: log a warning for each backoff (as the client does).
      limit_total_time: give up rather than wait past ``policy.max_total_time``.
    """
    import tenacity

    tally = _Tally(paced or (lambda exc: False))
    retryable = retry or (lambda exc: is_retryable(exc, policy))
    backoff = _wait(policy, retry_number=lambda state: tally.others)
    out_of_time = (
        tenacity.stop_before_delay(policy.max_total_time)
        if limit_total_time and policy.max_total_time is not None
        else tenacity.stop_never
    )
    log = _log_retry(policy)

    def start(state: tenacity.RetryCallState) -> None:
        if state.attempt_number == 1:
            tally.reset()
        if before is not None:
            before(state)

    def wait(state: tenacity.RetryCallState) -> float:
        return 0.0 if tally.count(state) else backoff(state)

    def stop(state: tenacity.RetryCallState) -> bool:
        if tally.count(state):
            return tally.paced >= max_paced
        exc = state.outcome.exception() if state.outcome is not None else None
        if refused_for_too_long(exc, state.seconds_since_start or 0.0, policy):
            return True
        return tally.others > policy.max_retries or bool(out_of_time(state))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if log_retries and not tally.count(state):
            log(state)

    return tenacity.AsyncRetrying(
        sleep=policy.async_sleep or _default_async_sleep,
        retry=tenacity.retry_if_exception(lambda exc: retryable(exc) or (paced is not None and paced(exc))),
        wait=wait,
        stop=stop,
        before=start,
        before_sleep=before_sleep,
        reraise=True,
    )
