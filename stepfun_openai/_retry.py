"""Retries, owned by tenacity alone: the OpenAI base client is built with ``max_retries=0``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

import openai
import tenacity

from ._exceptions import InsufficientBalanceError, MalformedResponseError, get_trace_id

__all__ = ["RetryPolicy", "DEFAULT_RETRY_POLICY", "is_retryable"]

log = logging.getLogger("stepfun_openai")

_T = TypeVar("_T")

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries a failed call.

    ``max_retries`` retries after the first attempt (``StepFun(max_retries=N)`` sets it);
    backoff is exponential from ``initial_backoff`` to ``max_backoff`` seconds with full jitter;
    ``max_total_time`` bounds the whole call including waits; ``retry_on_status`` lists the HTTP
    statuses that are retried (429 only when it is a rate limit, never a balance/quota one).
    """

    max_retries: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    max_total_time: float | None = 300.0
    retry_on_status: frozenset[int] = field(default=RETRYABLE_STATUS)
    retry_connection_errors: bool = True
    retry_malformed: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {self.max_retries!r}")

    @property
    def max_attempts(self) -> int:
        return self.max_retries + 1

    def with_max_retries(self, max_retries: int) -> RetryPolicy:
        return replace(self, max_retries=max_retries)


DEFAULT_RETRY_POLICY = RetryPolicy()


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    if isinstance(exc, InsufficientBalanceError):
        return False
    if isinstance(exc, MalformedResponseError):
        return policy.retry_malformed
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in policy.retry_on_status
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return policy.retry_connection_errors
    return False


def _retrying_kwargs(policy: RetryPolicy) -> dict[str, object]:
    stop = tenacity.stop_after_attempt(policy.max_attempts)
    if policy.max_total_time is not None:
        stop = stop | tenacity.stop_after_delay(policy.max_total_time)
    return {
        "stop": stop,
        "wait": tenacity.wait_random_exponential(multiplier=policy.initial_backoff, max=policy.max_backoff),
        "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, policy)),
        "reraise": True,
        "before_sleep": _log_retry,
    }


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    status = getattr(exc, "status_code", None)
    log.warning(
        "StepFun call failed (attempt %d, %s%s%s); retrying in %.2fs",
        state.attempt_number,
        type(exc).__name__,
        f", HTTP {status}" if status is not None else "",
        f", trace id {get_trace_id(exc)}" if exc is not None and get_trace_id(exc) else "",
        wait,
    )


def call_with_retries(policy: RetryPolicy, fn: Callable[[], _T]) -> _T:
    retrying = tenacity.Retrying(**_retrying_kwargs(policy))  # type: ignore[arg-type]
    return retrying(fn)


async def acall_with_retries(policy: RetryPolicy, fn: Callable[[], Awaitable[_T]]) -> _T:
    retrying = tenacity.AsyncRetrying(**_retrying_kwargs(policy))  # type: ignore[arg-type]
    return await retrying(fn)
