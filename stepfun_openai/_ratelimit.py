"""Client-side pacing for batches: a concurrency cap and an RPM pacer (GCRA) that adapt to 429s.

StepFun limits an account two ways at once: requests in flight and requests per minute (see
``catalog.RATE_LIMIT_TIERS``). The batch runner takes a slot here before each request:

- concurrency: at most ``concurrency`` requests in flight;
- RPM: requests are spaced ``60 / rpm`` seconds apart (GCRA without burst, plus a small safety
  margin), which never trips a 60-second window, sliding or fixed, whatever the network jitter;
- on a 429 the limit it names (``current: 11, limit: 10``) becomes the new ceiling, or the rate
  drops by a step when we were already under it (someone else shares the account), and the
  whole batch pauses briefly; after enough successes the limits grow back, one step at a time.

The clock and the sleep are injectable, so the tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["AdaptiveLimiter", "Limits", "resolve_limits"]

RPM_MARGIN = 0.01
"""Spacing is ``60 / rpm * (1 + RPM_MARGIN)``: 0.6 s of slack per minute against clock jitter."""

DECREASE_FACTOR = 0.8
"""An RPM 429 while already at or under the stated limit: the rate drops to 80 %."""

INCREASE_FACTOR = 1.05
"""Recovery: the rate grows by 5 % (at least 1 RPM) per round of successes."""

CONCURRENCY_PAUSE = 1.0
"""Seconds every request waits after a concurrency 429 that carried no ``Retry-After``."""


@dataclass(frozen=True)
class Limits:
    """What the batch may use: requests in flight and requests per minute (``None``: no RPM cap)."""

    concurrency: int
    rpm: int | None
    source: str = "explicit"

    def describe(self) -> str:
        rpm = "no RPM limit" if self.rpm is None else f"{self.rpm} requests/minute"
        return f"{self.concurrency} concurrent, {rpm} ({self.source})"


def resolve_limits(*, concurrency: int | None = None, rpm: int | None = None, tier: str | None = None) -> Limits:
    """Explicit ``concurrency``/``rpm`` win over the ``tier``'s; with neither, tier V0 (the free tier)."""
    from .catalog import RATE_LIMIT_TIERS

    for name, value in (("concurrency", concurrency), ("rpm", rpm)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if tier is not None:
        key = tier.upper()
        if key not in RATE_LIMIT_TIERS:
            raise ValueError(f"unknown tier {tier!r}; known tiers: {', '.join(RATE_LIMIT_TIERS)}")
        tier_concurrency, tier_rpm = RATE_LIMIT_TIERS[key]
        source = f"tier {key}" if concurrency is None and rpm is None else f"tier {key} with overrides"
        return Limits(concurrency or tier_concurrency, rpm or tier_rpm, source)
    if concurrency is None and rpm is None:
        free_concurrency, free_rpm = RATE_LIMIT_TIERS["V0"]
        return Limits(free_concurrency, free_rpm, "tier V0, the default; pass a tier or limits for more")
    if concurrency is None:
        # An RPM alone: enough requests in flight that the RPM is what binds.
        return Limits(RATE_LIMIT_TIERS["V0"][0], rpm)
    return Limits(concurrency, rpm)


class AdaptiveLimiter:
    """``await acquire()`` before a request, ``release(...)`` after it; report 429s and successes.

    Runs on one event loop; every method but :meth:`acquire` is synchronous and cheap.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.max_concurrency = limits.concurrency
        self.max_rpm = limits.rpm
        self.concurrency = limits.concurrency
        self.rpm: float | None = float(limits.rpm) if limits.rpm is not None else None
        self._clock = clock
        self._sleep = sleep
        self._in_flight = 0
        self._waiters: list[asyncio.Future[None]] = []
        self._tat = -math.inf  # GCRA: the earliest time the next request may go
        self._paused_until = -math.inf
        self._epoch = 0  # bumped by each slow-down; reservations made before it are redone
        self._last_decrease = -math.inf
        self._known_rpm_limit: int | None = None
        self._known_concurrency_limit: int | None = None
        self._successes = 0
        self.rate_limited = 0
        """429s reported so far."""

    # --- the pacing ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def interval(self) -> float:
        """Seconds between two requests under the current RPM (0 without one)."""
        return 0.0 if self.rpm is None else 60.0 / self.rpm * (1 + RPM_MARGIN)

    def reserve(self, now: float) -> float:
        """Book the next RPM slot: returns the time at which the request may be sent."""
        at = max(now, self._tat, self._paused_until)
        self._tat = at + self.interval
        return at

    async def acquire(self) -> float:
        """Wait for a concurrency slot, then for the request's RPM slot; returns the send time."""
        while self._in_flight >= self.concurrency:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake_one()  # we were woken but will not use the slot: pass it on
                raise
        self._in_flight += 1
        try:
            while True:
                epoch = self._epoch
                now = self._clock()
                at = self.reserve(now)
                if at > now:
                    await self._sleep(at - now)
                if epoch == self._epoch:
                    return self._clock()
                # a 429 slowed everything down while we slept: book again under the new limits
        except BaseException:
            self._in_flight -= 1
            self._wake_one()
            raise

    def release(self) -> None:
        """The request finished (whatever its outcome); its concurrency slot is free."""
        self._in_flight -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        # The woken waiter re-checks the cap itself; if someone took the slot first, it waits again.
        while self._waiters and self._in_flight < self.concurrency:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    # --- adaptation ----------------------------------------------------------------------------

    def on_success(self) -> None:
        """A request went through: after a round of successes, grow back towards the ceiling."""
        self._successes += 1
        if self._successes < max(self.concurrency, 5):
            return
        self._successes = 0
        ceiling = self._concurrency_ceiling()
        if self.concurrency < ceiling:
            self.concurrency += 1
            self._wake_one()
        rpm_ceiling = self._rpm_ceiling()
        if self.rpm is not None and rpm_ceiling is not None and self.rpm < rpm_ceiling:
            self.rpm = min(float(rpm_ceiling), max(self.rpm * INCREASE_FACTOR, self.rpm + 1))

    def on_rate_limited(
        self,
        *,
        kind: str | None,
        limit: int | None,
        retry_after: float | None = None,
        sent_at: float | None = None,
    ) -> None:
        """A 429. ``kind``/``limit`` come from StepFun's message; ``sent_at`` (from :meth:`acquire`)
        tells a 429 caused by the old limits (already handled) from a new one."""
        self.rate_limited += 1
        self._successes = 0
        now = self._clock()
        stale = sent_at is not None and sent_at < self._last_decrease
        if kind == "concurrency" or (kind is None and self.rpm is None):
            if limit is not None:
                self._known_concurrency_limit = min(limit, self._known_concurrency_limit or limit)
            if not stale:
                target = self.concurrency - 1
                if limit is not None and limit < self.concurrency:
                    target = limit
                self.concurrency = max(1, target)
                self._last_decrease = now
            pause = retry_after if retry_after is not None else CONCURRENCY_PAUSE
        else:
            if limit is not None:
                self._known_rpm_limit = min(limit, self._known_rpm_limit or limit)
            if not stale:
                if self.rpm is None:  # unpaced until now: the stated limit is the best guess
                    new_rpm = float(limit or 60)
                elif limit is not None and limit < self.rpm:
                    new_rpm = float(limit)
                else:  # at or under the stated limit and still refused: the account is shared
                    new_rpm = self.rpm * DECREASE_FACTOR
                self.rpm = max(1.0, new_rpm)
                self._last_decrease = now
            pause = retry_after if retry_after is not None else self.interval
        if not stale or retry_after is not None:
            self._paused_until = max(self._paused_until, now + pause)
            self._tat = max(self._tat, self._paused_until)
            self._epoch += 1

    def _concurrency_ceiling(self) -> int:
        known = self._known_concurrency_limit
        return self.max_concurrency if known is None else min(self.max_concurrency, known)

    def _rpm_ceiling(self) -> int | None:
        known = self._known_rpm_limit
        if self.max_rpm is None:
            return known
        return self.max_rpm if known is None else min(self.max_rpm, known)
