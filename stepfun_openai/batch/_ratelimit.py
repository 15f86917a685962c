"""Client-side pacing for batches: a concurrency cap and an RPM pacer (GCRA) that adapt to 429s.

StepFun limits an account two ways at once: requests in flight and requests per minute (see
``catalog.RATE_LIMIT_TIERS``). The batch runner takes a slot here before each request:

- concurrency: at most ``concurrency`` requests in flight;
- RPM: requests are spaced ``60 / rpm`` seconds apart (GCRA without burst, plus a small safety
  margin), which never trips a 60-second window, sliding or fixed, whatever the network jitter;
- on a 429 the limit it names (``current: 11, limit: 10``) becomes the new ceiling, or the rate
  drops by a step when we were already under it (someone else shares the account), and the
  whole batch pauses briefly; after enough successes the limits grow back, one step at a time.
- one slow-down per cause: a 429 for a request sent before the last adjustment says nothing
  new, nor does an RPM 429 within a window (60 s) of adopting or cutting the rate (StepFun's
  sliding window is still full of the requests sent before), nor a concurrency 429 while the
  requests sent under the old cap drain. After adopting a named RPM limit, the batch waits until
  its own requests of the last minute fit under it.

The clock and the sleep are injectable, so the tests drive time by hand.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["AdaptiveLimiter", "Limiter", "Limits", "resolve_limits"]

RPM_MARGIN = 0.01
"""Spacing is ``60 / rpm * (1 + RPM_MARGIN)``: 0.6 s of slack per minute against clock jitter."""

DECREASE_FACTOR = 0.8
"""An RPM 429 while already at or under the stated limit: the rate drops to 80 %."""

INCREASE_FACTOR = 1.05
"""Recovery: the rate grows by 5 % (at least 1 RPM) per round of successes ..."""

RECOVER_GAP = 0.5
"""... or by half of the way back to the ceiling, whichever is more."""

RPM_WINDOW = 60.0
"""StepFun's RPM window (seconds): after an RPM adjustment, 429s within it do not cut again."""

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
    from ..catalog import RATE_LIMIT_TIERS

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


class Limiter(Protocol):
    """What the batch runner needs of a limiter: :class:`AdaptiveLimiter` in one process, the
    leasing client of an account-wide one (``_distributed.LeasedLimiter``) in a worker of many."""

    max_concurrency: int
    rate_limited: int

    async def acquire(self) -> float: ...

    def release(self) -> None: ...

    def on_success(self) -> None: ...

    def on_rate_limited(
        self, *, kind: str | None, limit: int | None, retry_after: float | None = None, sent_at: float | None = None
    ) -> None: ...


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
        self._rpm_grace_until = -math.inf  # RPM 429s for requests sent before this do not cut again
        self._draining = False  # requests sent under a higher concurrency cap are still in flight
        self._recent: collections.deque[float] = collections.deque()  # send times, last RPM_WINDOW
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
        await self.take_slot()
        return await self.send_time()

    async def take_slot(self) -> None:
        """Wait for a concurrency slot and take it (the first half of :meth:`acquire`; a
        coordinator bounds this wait, never the next, which would waste a booked RPM slot)."""
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

    async def send_time(self) -> float:
        """With a slot taken: wait for the request's RPM slot; returns the send time. On a
        cancellation the slot is given back."""
        try:
            while True:
                epoch = self._epoch
                now = self._clock()
                at = self.reserve(now)
                if at > now:
                    await self._sleep(at - now)
                if epoch == self._epoch:
                    sent = self._clock()
                    self._remember(sent)
                    return sent
                # a 429 slowed everything down while we slept: book again under the new limits
        except BaseException:
            self._in_flight -= 1
            self._wake_one()
            raise

    def try_acquire(self, *, within: float) -> float | None:
        """Without waiting: a concurrency slot and the next RPM slot, if a slot is free, nobody
        waits for one, and the RPM slot comes within ``within`` seconds; returns the send time
        (the caller waits until then), else ``None``. The coordinator of a distributed batch
        hands out slots in blocks this way, one :meth:`acquire` and then as many of these as fit."""
        if self._waiters or self._in_flight >= self.concurrency:
            return None
        now = self._clock()
        if max(now, self._tat, self._paused_until) > now + within:
            return None
        at = self.reserve(now)
        self._in_flight += 1
        self._remember(at)
        return at

    def steady(self) -> bool:
        """No RPM to pace, no pause after a 429 and no drain under a lowered cap: a slot freed may
        go straight to the next request (a distributed batch's workers then keep their share)."""
        return self.rpm is None and not self._draining and self._paused_until <= self._clock()

    def release(self) -> None:
        """The request finished (whatever its outcome); its concurrency slot is free."""
        self._in_flight -= 1
        if self._in_flight <= self.concurrency:
            self._draining = False
        self._wake_one()

    def _remember(self, sent: float) -> None:
        recent = self._recent
        recent.append(sent)
        while recent and recent[0] <= sent - RPM_WINDOW:
            recent.popleft()

    def _forget(self, sent_at: float | None) -> None:
        """A refused request does not count in StepFun's window."""
        if sent_at is None:
            return
        try:
            self._recent.remove(sent_at)
        except ValueError:
            pass

    def _window_frees_for(self, limit: int) -> float:
        """When fewer than ``limit`` of our requests remain in the last minute."""
        now = self._clock()
        recent = [t for t in self._recent if t > now - RPM_WINDOW]
        if len(recent) < limit:
            return now
        return recent[-limit] + RPM_WINDOW * (1 + RPM_MARGIN)

    def _wake_one(self) -> None:
        # The woken waiter re-checks the cap itself; if someone took the slot first, it waits again.
        while self._waiters and self._in_flight < self.concurrency:
            waiter = self._waiters.pop(0)
            # Set, not checked first: Ctrl-C may cancel a waiter between a check and a set.
            with contextlib.suppress(asyncio.InvalidStateError):
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
            step = max(self.rpm * (INCREASE_FACTOR - 1), (rpm_ceiling - self.rpm) * RECOVER_GAP, 1.0)
            self.rpm = min(float(rpm_ceiling), self.rpm + step)

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
        self._forget(sent_at)
        now = self._clock()
        stale = sent_at is not None and sent_at < self._last_decrease
        if kind == "concurrency" or (kind is None and self.rpm is None):
            if limit is not None:
                self._known_concurrency_limit = min(limit, self._known_concurrency_limit or limit)
            named_lower = limit is not None and limit < self.concurrency
            # While the requests sent under the old cap drain, a 429 is theirs, not a new cause.
            if not stale and (named_lower or not self._draining):
                target = self.concurrency - 1
                if named_lower and limit is not None:
                    target = limit
                self.concurrency = max(1, target)
                self._last_decrease = now
                self._draining = self._in_flight > self.concurrency
            pause = retry_after if retry_after is not None else CONCURRENCY_PAUSE
        else:
            if limit is not None:
                self._known_rpm_limit = min(limit, self._known_rpm_limit or limit)
            named_lower = limit is not None and (self.rpm is None or limit < self.rpm)
            in_grace = (now if sent_at is None else sent_at) < self._rpm_grace_until
            if not stale and (named_lower or not in_grace):
                if self.rpm is None:  # unpaced until now: the stated limit is the best guess
                    new_rpm = float(limit or 60)
                elif named_lower and limit is not None:
                    new_rpm = float(limit)
                else:  # at or under the stated limit and refused a window later: the account is shared
                    new_rpm = self.rpm * DECREASE_FACTOR
                self.rpm = max(1.0, new_rpm)
                self._last_decrease = now
                self._rpm_grace_until = now + RPM_WINDOW
                if named_lower and limit is not None:
                    # StepFun's window still holds what we sent at the old pace: wait until it fits.
                    self._paused_until = max(self._paused_until, self._window_frees_for(limit))
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
