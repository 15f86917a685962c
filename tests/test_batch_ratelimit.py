"""The batch's client-side limiter, driven by a fake clock: no test here waits for real time."""

from __future__ import annotations

import asyncio

import pytest

from stepfun_openai.batch._ratelimit import AdaptiveLimiter, Limits, resolve_limits


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def limiter(concurrency: int = 5, rpm: int | None = 10) -> tuple[AdaptiveLimiter, FakeClock]:
    clock = FakeClock()
    return AdaptiveLimiter(Limits(concurrency, rpm), clock=clock, sleep=clock.sleep), clock


def max_in_any_minute(times: list[float]) -> int:
    """The most requests any 60-second window saw (StepFun-style sliding window)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 60:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_tiers_give_the_catalog_limits_and_explicit_values_win() -> None:
    assert resolve_limits(tier="V0") == Limits(5, 10, "tier V0")
    assert resolve_limits(tier="v1").rpm == 1000
    overridden = resolve_limits(tier="V1", rpm=300)
    assert (overridden.concurrency, overridden.rpm) == (100, 300)
    default = resolve_limits()
    assert (default.concurrency, default.rpm) == (5, 10)  # the free tier, when nothing is said
    assert (resolve_limits(concurrency=8).concurrency, resolve_limits(concurrency=8).rpm) == (8, None)


@pytest.mark.parametrize("kwargs", [{"tier": "V9"}, {"concurrency": 0}, {"rpm": -1}, {"rpm": True}])
def test_bad_limits_are_refused_with_the_allowed_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"tier|positive integer"):
        resolve_limits(**kwargs)  # type: ignore[arg-type]


async def test_requests_are_spaced_so_no_minute_exceeds_the_rpm() -> None:
    lim, _ = limiter(concurrency=1000, rpm=120)
    sent = []
    for _ in range(400):
        sent.append(await lim.acquire())
        lim.release()
    assert max_in_any_minute(sent) <= 120
    # ... and the pace is the limit, give or take the 1 % safety margin
    per_minute = (len(sent) - 1) / (sent[-1] - sent[0]) * 60
    assert 0.98 * 120 <= per_minute <= 120


async def test_no_more_requests_in_flight_than_the_concurrency() -> None:
    lim, _ = limiter(concurrency=2, rpm=None)
    await lim.acquire()
    await lim.acquire()
    third = asyncio.ensure_future(lim.acquire())
    await asyncio.sleep(0.01)
    assert not third.done() and lim.in_flight == 2
    lim.release()
    await asyncio.wait_for(third, 1)
    assert lim.in_flight == 2


async def test_a_cancelled_waiter_does_not_leak_its_slot() -> None:
    lim, _ = limiter(concurrency=1, rpm=None)
    await lim.acquire()
    waiting = asyncio.ensure_future(lim.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    lim.release()
    assert lim.in_flight == 0
    await asyncio.wait_for(lim.acquire(), 1)


async def test_an_rpm_429_adopts_the_limit_stepfun_names() -> None:
    lim, clock = limiter(concurrency=100, rpm=1000)  # we believed tier V1, the account is V0
    sent_at = await lim.acquire()
    lim.release()
    lim.on_rate_limited(kind="rpm", limit=10, sent_at=sent_at)
    assert lim.rpm == 10
    sent = [await lim.acquire() for _ in range(3)]
    assert sent[0] >= clock.now - 2 * lim.interval
    assert sent[2] - sent[1] == pytest.approx(6.06)  # 60 / 10 plus the margin


async def test_a_429_under_the_stated_limit_backs_off_and_stale_429s_do_not_compound() -> None:
    lim, clock = limiter(concurrency=5, rpm=10)
    sent = [await lim.acquire() for _ in range(3)]
    for _ in range(3):
        lim.release()
    clock.now += 0.5  # the answers arrive after the last request went out
    # Someone else uses the account: refused although we respect the limit of 10.
    lim.on_rate_limited(kind="rpm", limit=10, sent_at=sent[0])
    assert lim.rpm == pytest.approx(8)
    clock.now += 0.5
    # The other two were sent before that slow-down: they say nothing new.
    lim.on_rate_limited(kind="rpm", limit=10, sent_at=sent[1])
    lim.on_rate_limited(kind="rpm", limit=10, sent_at=sent[2])
    assert lim.rpm == pytest.approx(8)
    assert lim.rate_limited == 3


async def test_a_concurrency_429_lowers_the_cap_to_the_stated_limit_and_pauses() -> None:
    lim, clock = limiter(concurrency=20, rpm=None)
    sent_at = await lim.acquire()
    lim.release()
    lim.on_rate_limited(kind="concurrency", limit=5, retry_after=3.0, sent_at=sent_at)
    assert lim.concurrency == 5
    before = clock.now
    assert await lim.acquire() >= before + 3.0  # Retry-After is honoured
    lim.release()


async def test_limits_recover_gradually_but_never_above_what_stepfun_stated() -> None:
    lim, clock = limiter(concurrency=5, rpm=100)
    sent_at = await lim.acquire()
    lim.release()
    lim.on_rate_limited(kind="rpm", limit=50, sent_at=sent_at)
    assert lim.rpm == 50
    clock.now += 61  # a window later ...
    lim.on_rate_limited(kind="rpm", limit=50, sent_at=None)  # ... refused again at 50: shared account
    assert lim.rpm == pytest.approx(40)
    history = []
    for _ in range(200):
        lim.on_success()
        history.append(lim.rpm)
    assert history[0] == pytest.approx(40)  # not at once
    assert history == sorted(history)  # step by step
    assert history[-1] == 50  # back to the stated limit, not to the 100 we were told


async def test_the_concurrency_cap_grows_back_after_a_drop() -> None:
    lim, _ = limiter(concurrency=4, rpm=None)
    lim.on_rate_limited(kind="concurrency", limit=None, sent_at=None)
    assert lim.concurrency == 3
    for _ in range(50):
        lim.on_success()
    assert lim.concurrency == 4


async def test_after_adopting_the_named_limit_the_429s_of_a_full_window_do_not_cut_again() -> None:
    lim, clock = limiter(concurrency=10, rpm=300)  # we claim 300/min; the account allows 60
    sent = []
    for _ in range(60):
        sent.append(await lim.acquire())
        lim.release()
    refused = await lim.acquire()  # the 61st inside the minute: StepFun's window is full
    lim.release()
    lim.on_rate_limited(kind="rpm", limit=60, sent_at=refused)
    assert lim.rpm == 60
    # The window holds our first 60 until a minute after the first: nothing is sent before that.
    resumed = await lim.acquire()
    lim.release()
    assert resumed >= sent[0] + 60
    # 429s that still come (in-flight requests, a clock skew) within that window say nothing new.
    for _ in range(5):
        clock.now += 1
        lim.on_rate_limited(kind="rpm", limit=60, sent_at=clock.now - 0.5)
    assert lim.rpm == 60
    assert max_in_any_minute([*sent, resumed]) <= 60


async def test_concurrency_429s_of_requests_sent_under_the_old_cap_do_not_cut_again() -> None:
    lim, _ = limiter(concurrency=20, rpm=None)
    sent = [await lim.acquire() for _ in range(20)]
    lim.release()
    lim.on_rate_limited(kind="concurrency", limit=5, sent_at=sent[0])
    assert lim.concurrency == 5
    for at in sent[1:10]:  # the old requests, refused one after the other as they arrive
        lim.release()
        lim.on_rate_limited(kind="concurrency", limit=5, sent_at=at)
    assert lim.concurrency == 5
    for _ in range(10):
        lim.release()
    newer = await lim.acquire()
    lim.release()
    lim.on_rate_limited(kind="concurrency", limit=5, sent_at=newer)
    assert lim.concurrency == 4  # refused under the new cap: a new cause, one more step


async def test_recovery_after_a_cut_reaches_the_named_limit_within_a_few_rounds() -> None:
    lim, clock = limiter(concurrency=5, rpm=None)
    lim.on_rate_limited(kind="rpm", limit=60, sent_at=None)
    clock.now += 61
    lim.on_rate_limited(kind="rpm", limit=60, sent_at=None)  # a window later, still refused
    assert lim.rpm == pytest.approx(48)
    for _ in range(3 * 5):  # three rounds of five successes
        lim.on_success()
    assert lim.rpm >= 58


class _CancelledAsItIsSet(asyncio.Future[None]):
    """A future that Ctrl-C cancels just before it is given its outcome (the handler runs between
    any two steps of a callback, so a check that it is not done yet proves nothing)."""

    def set_result(self, result: None) -> None:
        self.cancel()
        super().set_result(result)

    def set_exception(self, exception: type | BaseException) -> None:
        self.cancel()
        super().set_exception(exception)


async def test_a_waiter_cancelled_as_it_is_woken_does_not_break_release() -> None:
    limiter = AdaptiveLimiter(Limits(1, None))
    await limiter.take_slot()
    racing = _CancelledAsItIsSet()
    waiting = asyncio.create_task(limiter.take_slot())
    await asyncio.sleep(0)
    limiter._waiters.insert(0, racing)

    limiter.release()  # must not raise: the next waiter is woken instead

    await asyncio.wait_for(waiting, timeout=5)
    assert racing.cancelled()
