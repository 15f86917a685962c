"""A batch on many workers (Ray actors, or plain processes) under ONE account-wide limit.

StepFun limits the account, not the process: two workers each pacing itself to the tier's
limits would together send twice too much. So one coordinator owns the account's
:class:`~._ratelimit.AdaptiveLimiter` (the same pacing and 429 adaptation as a one-process
batch) and every worker leases from it:

- a worker asks for as many slots as it has requests waiting (a few ``lease`` calls on their way,
  each for requests no other one asked for);
  the coordinator waits (at most :data:`LEASE_WAIT` s) for a concurrency slot, books its RPM
  send time, and adds more slots while one is free and its send time is within
  :data:`LEASE_HORIZON` s. The worker sends each request at its booked time (on its own clock:
  the delays travel, not the times). Under load a lease carries many slots, so the coordinator
  sees a call per block, not per request;
- the worker reports back, a few calls on their way (what comes meanwhile goes in one): the slots it
  released, its successes, its 429s (with the booked time, so a stale 429 is told from a new
  one) and the jobs it committed (the driver's progress bar); freed slots and 429s at once,
  counts alone every :data:`REPORT_EVERY` seconds at most;
- while nothing is paced (no RPM, no pause after a 429), each report's answer tells the worker
  its share of the account's concurrency (the cap over the workers holding or waiting for
  slots): a slot freed within its share goes straight to the worker's next request, with no call
  and no round trip; past its share, or after a 429 until the coordinator answers, it goes back;
- a worker that dies is forgotten: the coordinator takes back the slots it held.

Each worker runs the one-process job loop (``_runner._execute``: prepare, attempts, retries,
group commits) on its shard of the jobs, writing to the shared output (``_store``: a local folder
or any fsspec location, one manifest shard per worker). The driver plans as ``arun`` does: it
reads what every shard records as finished, and hands out only the rest. So a killed worker or
driver costs at most the requests that were in flight; running the batch again finishes it.

Backends: Ray (``pip install 'stepfun-openai[ray]'``; a local Ray, or a cluster's address) or,
without Ray, processes on this machine (``multiprocessing``, the coordinator served by a manager).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import queue
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from ._jobs import Job, _check_defaults, _prepare, _Work
from ._progress import Progress
from ._ratelimit import AdaptiveLimiter, Limits, resolve_limits
from ._result import BatchInterrupted, BatchResult
from ._store import open_output

if TYPE_CHECKING:
    from .._client import AsyncStepFun, StepFun
    from .._retry import RetryPolicy
    from ..catalog import Region
    from ._writer import Commit

__all__ = ["RAY_INSTALL_HINT", "Coordinator", "LeasedLimiter", "run_distributed"]

log = logging.getLogger("stepfun_openai")

RAY_INSTALL_HINT = "pip install 'stepfun-openai[ray]'"
LEASE_WAIT = 2.0
"""Seconds a lease waits at the coordinator for a concurrency slot before it answers "none yet"
(the worker asks again): no call waits unboundedly, and a stopping worker is not held."""
LEASE_HORIZON = 0.05
"""A lease adds slots whose send time is at most this many seconds away: slots booked ahead
are sent as booked even if a 429 slows the account down meanwhile, so the horizon is short."""
LEASES_IN_FLIGHT = 4
"""Leases a worker may have on their way at once (each for requests no other asked for)."""
REPORTS_IN_FLIGHT = 4
"""Reports a worker may have on their way at once: a freed slot is told at once, not after the
report before it (one at a time, reports batch themselves but a freed slot waits a round trip)."""
REPORT_EVERY = 0.05
"""Seconds at least between two reports that carry only counts (successes, progress; the share
comes back with each): what frees a slot or tells a 429 goes at once."""
KEEP_IDLE = 0.1
"""Seconds a worker keeps a slot of its share that no request of its own takes: then it goes back
(at the end of a worker's jobs, its slots serve the others at once, not when it ends)."""
CALL_TIMEOUT = 60.0
"""Seconds a call to the coordinator may take before the worker gives up on it (stops)."""
WORKER_START_TIMEOUT = 300.0
"""Seconds the driver waits, with no worker at work, for a worker to start (a Ray actor waits for
a free CPU); then the jobs of those not started are left pending and the batch ends."""
POLL_INTERVAL = 0.25
"""Seconds between two looks of the driver at its workers and the progress."""


# --- the coordinator ----------------------------------------------------------------------------


class Coordinator:
    """The account-wide limiter, served to the workers. Its methods are synchronous and
    thread-safe (a ``multiprocessing`` manager calls them from a thread per connection); the
    limiter lives on an event loop of its own, on a thread. The Ray actor (:class:`_RayCoordinator`)
    awaits the coroutines behind them (``_lease``, ...) on its own loop instead (``own_loop=False``)."""

    def __init__(self, limits: Limits, horizon: float = LEASE_HORIZON, *, own_loop: bool = True) -> None:
        self._horizon = horizon
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        if own_loop:  # else the caller awaits the coroutines (``_lease``, ...) on its own loop
            self._thread = threading.Thread(target=self._loop.run_forever, name="stepfun-coordinator", daemon=True)
            self._thread.start()
        self._limiter = AdaptiveLimiter(limits)
        self._held: collections.Counter[str] = collections.Counter()
        self._waiting: collections.Counter[str] = collections.Counter()
        """Leases waiting for a slot, per worker (a worker that waits wants its share)."""
        self._gone: set[str] = set()
        self._started: set[str] = set()
        self._done: collections.Counter[str] = collections.Counter()
        self.leases = 0
        self.reports = 0

    def _run(self, coroutine: Awaitable[Any], timeout: float = CALL_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)  # type: ignore[arg-type]

    def lease(self, worker: str, want: int, wait: float = LEASE_WAIT) -> tuple[float, list[float]]:
        """Up to ``want`` slots for ``worker``: ``(the coordinator's clock now, [send times])``;
        an empty list after ``wait`` seconds without a free concurrency slot."""
        result: tuple[float, list[float]] = self._run(self._lease(worker, max(1, want), wait), wait + CALL_TIMEOUT)
        return result

    async def _lease(self, worker: str, want: int, wait: float) -> tuple[float, list[float]]:
        limiter = self._limiter
        self.leases += 1
        self._started.add(worker)
        if worker in self._gone:
            return time.monotonic(), []
        self._waiting[worker] += 1
        try:
            await asyncio.wait_for(limiter.take_slot(), wait)
        except asyncio.TimeoutError:
            return time.monotonic(), []
        finally:
            self._waiting[worker] -= 1
        slots = [await limiter.send_time()]  # bounded by the RPM interval and the pauses
        while len(slots) < want:
            at = limiter.try_acquire(within=self._horizon)
            if at is None:
                break
            slots.append(at)
        if worker in self._gone:  # forgotten while it waited: nobody will release these
            for _ in slots:
                limiter.release()
            return time.monotonic(), []
        self._held[worker] += len(slots)
        return time.monotonic(), slots

    def report(
        self,
        worker: str,
        released: int,
        successes: int,
        limited: list[dict[str, Any]],
        done: dict[str, int],
    ) -> int:
        """What ``worker`` did since its last report (see :class:`LeasedLimiter`); returns how many
        of its slots it may keep (:meth:`share`)."""
        keep: int = self._run(self._report(worker, released, successes, limited, done))
        return keep

    async def _report(
        self, worker: str, released: int, successes: int, limited: list[dict[str, Any]], done: dict[str, int]
    ) -> int:
        self.reports += 1
        self._started.add(worker)
        if worker not in self._gone:
            released = min(released, self._held[worker])
            self._held[worker] -= released
            for _ in range(released):
                self._limiter.release()
            for report in limited:
                self._limiter.on_rate_limited(**report)
            for _ in range(successes):
                self._limiter.on_success()
        self._done.update(done)
        return self.share(worker)

    def share(self, worker: str) -> int:
        """How many of the slots it holds ``worker`` may keep, handing a slot its request freed
        straight to its next request instead of through the coordinator: its fair share of the
        account's concurrency among the workers that hold or wait for slots, while the limiter is
        steady (no RPM to pace, no pause, no drain: then every slot goes through the coordinator)."""
        if worker in self._gone or not self._limiter.steady():
            return 0
        active = {name for name, held in self._held.items() if held > 0}
        active.update(name for name, waiting in self._waiting.items() if waiting > 0)
        active.add(worker)
        return self._limiter.concurrency // len(active)

    def forget(self, worker: str) -> None:
        """``worker`` is gone (finished or dead): the slots it held are free again."""
        self._run(self._forget(worker))

    async def _forget(self, worker: str) -> None:
        self._gone.add(worker)
        for _ in range(self._held.pop(worker, 0)):
            self._limiter.release()

    def progress(self) -> dict[str, int]:
        """Jobs committed by all workers (``committed``, ``succeeded``), 429s, calls served."""
        return self._run(self._progress())  # type: ignore[no-any-return]

    async def _progress(self) -> dict[str, int]:
        return {
            **self._done,
            "rate_limited": self._limiter.rate_limited,
            "in_flight": self._limiter.in_flight,
            "leases": self.leases,
            "reports": self.reports,
        }

    def started(self) -> list[str]:
        """The workers that have called at least once (a worker that never does never got a CPU)."""
        return self._run(self._started_workers())  # type: ignore[no-any-return]

    async def _started_workers(self) -> list[str]:
        return sorted(self._started)

    def close(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()


# --- the worker's side ----------------------------------------------------------------------------

Call = Callable[..., Awaitable[Any]]
"""``await call("lease", *args)``: a method of the coordinator, whatever carries the call."""


class LeasedLimiter:
    """A worker's limiter: the interface of :class:`AdaptiveLimiter`, answered by the coordinator.

    Every method but :meth:`acquire` only counts; the counts travel with the next report.
    """

    def __init__(self, call: Call, worker: str, limits: Limits) -> None:
        self.max_concurrency = limits.concurrency
        self.rate_limited = 0
        self._call = call
        self._worker = worker
        self._waiters: collections.deque[asyncio.Future[tuple[float, float]]] = collections.deque()
        self._leases: set[asyncio.Task[None]] = set()
        self._asked = 0
        """Slots asked for by the leases on their way."""
        self._reports: set[asyncio.Task[None]] = set()
        self._released = 0
        self._successes = 0
        self._limited: list[dict[str, Any]] = []
        self._done: collections.Counter[str] = collections.Counter()
        self._held = 0
        """Slots the coordinator granted and was not told are free."""
        self._keep = 0
        """How many of them this worker may keep: a freed slot goes straight to a request waiting
        here, or waits here for the next (the coordinator's :meth:`Coordinator.share`, with each
        report's answer; none after a 429 until it answers)."""
        self._free: collections.deque[float] = collections.deque()
        """Slots kept (within ``_keep``) that no request uses yet: when each was freed. One unused
        for :data:`KEEP_IDLE` seconds goes back (the worker's jobs are running out)."""
        self._idle_timer: asyncio.TimerHandle | None = None
        self._epoch = 0
        """Bumped by each 429: an answer to a report sent before it does not restore ``_keep``."""
        self._offset = 0.0
        """The coordinator's clock minus ours (a kept slot's send time is told on its clock)."""
        self._last_report = -float("inf")
        self._report_timer: asyncio.TimerHandle | None = None
        self._lease_due = False
        self._report_due = False
        """A lease or a report is due at the end of this turn of the event loop."""
        self.error: BaseException | None = None
        """Why the coordinator could not be reached (the worker stops)."""

    async def acquire(self) -> float:
        if self.error is not None:
            raise self.error
        if self._free:
            self._free.pop()
            return time.monotonic() + self._offset
        waiter: asyncio.Future[tuple[float, float]] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._kick_lease()
        try:
            due, slot = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # granted, but we will not use it
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        try:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        except BaseException:
            self.release()
            raise
        return slot

    def release(self) -> None:
        if self._held <= self._keep and self.error is None:  # a 429 set the share to 0
            # Within this worker's share: the slot goes straight to the next request waiting here,
            # or waits here for the next (two calls to the coordinator saved, and a round trip of
            # the slot's time).
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    now = time.monotonic()
                    waiter.set_result((now, now + self._offset))
                    return
            self._free.append(time.monotonic())
            if self._idle_timer is None:
                self._idle_timer = asyncio.get_running_loop().call_later(KEEP_IDLE, self._give_back_idle)
            return
        self._give_back(1)

    def _give_back(self, slots: int) -> None:
        self._held -= slots
        self._released += slots
        self._kick_report()

    def _set_keep(self, keep: int) -> None:
        """A new share: kept slots past it that no request uses go back at once."""
        self._keep = keep
        over = min(len(self._free), self._held - keep)
        if over > 0:
            for _ in range(over):
                self._free.popleft()
            self._give_back(over)

    def _give_back_idle(self) -> None:
        self._idle_timer = None
        now, idle = time.monotonic(), 0
        while self._free and self._free[0] <= now - KEEP_IDLE:
            self._free.popleft()
            idle += 1
        if idle:
            self._give_back(idle)
        if self._free:
            self._idle_timer = asyncio.get_running_loop().call_later(
                self._free[0] + KEEP_IDLE - now, self._give_back_idle
            )

    def on_success(self) -> None:
        self._successes += 1

    def on_rate_limited(
        self, *, kind: str | None, limit: int | None, retry_after: float | None = None, sent_at: float | None = None
    ) -> None:
        self.rate_limited += 1
        self._epoch += 1
        self._limited.append({"kind": kind, "limit": limit, "retry_after": retry_after, "sent_at": sent_at})
        self._set_keep(0)  # every slot through the coordinator until it answers with the new limits
        self._kick_report()

    def committed(self, group: list[Commit]) -> None:
        """Jobs committed by this worker (the driver's progress bar)."""
        self._done["committed"] += len(group)
        self._done["succeeded"] += sum(1 for commit in group if commit.event["status"] == "succeeded")
        self._kick_report()

    async def close(self) -> None:
        """Send what is not yet reported (the slots released above all)."""
        await asyncio.gather(*self._leases, return_exceptions=True)
        if self._report_timer is not None:
            self._report_timer.cancel()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self._free:  # the slots kept for requests that will not come
            free = len(self._free)
            self._free.clear()
            self._give_back(free)
        while self._reports or (self.error is None and self._pending()):
            self._send_report(now=True)
            await asyncio.gather(*self._reports, return_exceptions=True)

    # -- the calls: a few leases and a few reports on their way --

    def _kick_lease(self) -> None:
        """:meth:`_send_lease` at the end of this turn of the event loop: the requests that wait
        for a slot by then go in one lease (a call each would cost the coordinator a call each)."""
        if not self._lease_due:
            self._lease_due = True
            asyncio.get_running_loop().call_soon(self._send_lease)

    def _send_lease(self) -> None:
        """A lease for the waiting requests no lease has asked for yet, if fewer than
        :data:`LEASES_IN_FLIGHT` are on their way (one at a time, a worker would get slots at most
        once a round trip, whatever the account frees meanwhile)."""
        self._lease_due = False
        if self.error is not None or len(self._leases) >= LEASES_IN_FLIGHT:
            return
        want = sum(1 for waiter in self._waiters if not waiter.done()) - self._asked
        if want > 0:
            self._asked += want
            task = asyncio.create_task(self._lease(want))
            self._leases.add(task)
            task.add_done_callback(self._leased)

    def _leased(self, task: asyncio.Task[None]) -> None:
        self._leases.discard(task)
        self._kick_lease()  # the requests still waiting (after "none yet", ask again)

    async def _lease(self, want: int) -> None:
        try:
            now, slots = await asyncio.wait_for(
                self._call("lease", self._worker, want, LEASE_WAIT), LEASE_WAIT + CALL_TIMEOUT
            )
            received = time.monotonic()
            self._offset = now - received
            self._held += len(slots)
            for at in slots:
                while self._waiters and self._waiters[0].done():
                    self._waiters.popleft()
                if not self._waiters:
                    self.release()  # a waiter left while the lease travelled
                    continue
                self._waiters.popleft().set_result((received + (at - now), at))
        except Exception as exc:
            self._broken(exc)
        finally:
            self._asked -= want

    def _pending(self) -> bool:
        return bool(self._released or self._successes or self._limited or self._done)

    def _kick_report(self) -> None:
        """:meth:`_send_report` at the end of this turn of the event loop: what the jobs of this
        turn freed and counted goes in one report, with no delay (a freed slot is someone's next
        request)."""
        if not self._report_due:
            self._report_due = True
            asyncio.get_running_loop().call_soon(self._send_report)

    def _send_report(self, now: bool = False) -> None:
        """A report now if a slot or a 429 waits to be told and fewer than
        :data:`REPORTS_IN_FLIGHT` are on their way (a freed slot is someone's next request);
        counts alone (successes, progress) wait for the report on its way and
        :data:`REPORT_EVERY` seconds after the last (unless ``now``: the worker is ending)."""
        self._report_due = False
        if self.error is not None or not self._pending():
            return
        if self._released or self._limited:
            if len(self._reports) >= REPORTS_IN_FLIGHT:
                return
        elif self._reports:
            return
        elif not now:
            wait = self._last_report + REPORT_EVERY - time.monotonic()
            if wait > 0:
                if self._report_timer is None:
                    self._report_timer = asyncio.get_running_loop().call_later(wait, self._report_time)
                return
        self._last_report = time.monotonic()
        # What is to tell is taken now: a report started meanwhile must not tell it again.
        counts = (self._released, self._successes, self._limited, dict(self._done), self._epoch)
        self._released, self._successes, self._limited, self._done = 0, 0, [], collections.Counter()
        task = asyncio.create_task(self._report(*counts))
        self._reports.add(task)
        task.add_done_callback(self._reported)

    def _report_time(self) -> None:
        self._report_timer = None
        self._send_report()

    def _reported(self, task: asyncio.Task[None]) -> None:
        self._reports.discard(task)
        self._kick_report()  # what came meanwhile

    async def _report(
        self, released: int, successes: int, limited: list[dict[str, Any]], done: dict[str, int], epoch: int
    ) -> None:
        try:
            keep = await asyncio.wait_for(
                self._call("report", self._worker, released, successes, limited, done), CALL_TIMEOUT
            )
        except Exception as exc:
            self._broken(exc)
        else:
            if isinstance(keep, int) and epoch == self._epoch:
                self._set_keep(keep)

    def _broken(self, exc: BaseException) -> None:
        self.error = RuntimeError(f"the batch's coordinator cannot be reached ({type(exc).__name__}: {exc})")
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self.error)


# --- one worker ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ClientRecipe:
    """What a worker needs to build its own client (connections do not travel between processes)."""

    api_key: str = dataclasses.field(repr=False)
    base_url: str
    timeout: Any
    retry_policy: RetryPolicy
    validate: bool
    stable_seed: bool
    fit: bool
    region: Region | None
    fan_out: bool
    default_headers: dict[str, str] | None

    @classmethod
    def of(cls, client: StepFun | AsyncStepFun | None) -> _ClientRecipe:
        from .._client import StepFun

        made = StepFun() if client is None else None  # the environment's key and base URL, checked here
        source = client if client is not None else made
        assert source is not None
        try:
            return cls(
                api_key=source.api_key,
                base_url=str(source.base_url),
                timeout=source.timeout,
                retry_policy=source.retry_policy,
                validate=source.validate,
                stable_seed=source.stable_seed,
                fit=source.fit,
                region=source.region,
                fan_out=source.fan_out,
                default_headers=dict(source._custom_headers) or None,
            )
        finally:
            if made is not None:
                made.close()

    def build(self) -> AsyncStepFun:
        from .._client import AsyncStepFun

        return AsyncStepFun(
            api_key=self.api_key,
            base_url=self.base_url,
            timeout=self.timeout,
            retry_policy=self.retry_policy,
            validate=self.validate,
            stable_seed=self.stable_seed,
            fit=self.fit,
            region=self.region,
            fan_out=self.fan_out,
            default_headers=self.default_headers,
        )


@dataclasses.dataclass(frozen=True)
class _Shard:
    """One worker's part of the batch, as it travels to the worker."""

    name: str
    works: list[_Work]
    limits: Limits
    client: _ClientRecipe
    out: str
    storage_options: dict[str, Any] = dataclasses.field(repr=False)


async def _run_shard(shard: _Shard, call: Call) -> BatchResult:
    """One worker: the batch's job loop on ``shard.works``, under the leased limiter."""
    from ._runner import _client_for, _committed, _execute, _Runner

    started = time.monotonic()
    output = open_output(shard.out, shard.storage_options)
    result = BatchResult(total=len(shard.works), out=output.folder, limits=shard.limits)
    limiter = LeasedLimiter(call, shard.name, shard.limits)
    count = _committed(result, limiter, Progress(len(shard.works), enabled=False))

    def on_committed(group: list[Commit]) -> None:
        count(group)
        limiter.committed(group)

    built = shard.client.build()
    client, _ = await _client_for(built, shard.limits.concurrency)  # a larger pool past 1,000 in flight
    writer = output.writer(shard.name, on_committed=on_committed)
    runner = _Runner(client=client, policy=client.retry_policy, limiter=limiter, writer=writer, result=result)
    try:
        await _execute(runner, writer, shard.works, shard.limits.concurrency)
    finally:
        writer.close()
        output.close_shard(writer)
        await limiter.close()
        await client.close()
        if built is not client:
            await built.close()
        result.elapsed = time.monotonic() - started
        result.stopped = runner.stop or (None if limiter.error is None else str(limiter.error))
        result.files = []  # the driver does not need every path back
    return result


# --- backends -------------------------------------------------------------------------------------


class _Backend(Protocol):
    def coordinator(self, limits: Limits) -> Any: ...

    def start(self, shard: _Shard) -> None: ...

    def poll(self) -> list[tuple[str, BatchResult | BaseException]]:
        """Workers that ended since the last poll: their result, or why they died."""
        ...

    def progress(self) -> dict[str, int]: ...

    def started(self) -> list[str]: ...

    def forget(self, worker: str) -> None: ...

    def stop(self) -> None: ...


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(f"running a batch on Ray needs Ray: {RAY_INSTALL_HINT}") from None
    return ray


class _RayWorker:
    """A Ray actor running one shard (its process is the worker)."""

    def run(self, shard: _Shard, coordinator: Any) -> BatchResult:
        async def call(method: str, *args: Any) -> Any:
            return await getattr(coordinator, method).remote(*args)

        return asyncio.run(_run_shard(shard, call))


class _RayCoordinator:
    """The coordinator as an async Ray actor, its limiter on the actor's own event loop. (A threaded
    actor runs one caller's calls in order, so a worker's report, the slots it frees, would wait
    behind its own lease, which waits for them.)"""

    def __init__(self, limits: Limits) -> None:
        self._coordinator = Coordinator(limits, own_loop=False)

    async def lease(self, worker: str, want: int, wait: float = LEASE_WAIT) -> tuple[float, list[float]]:
        return await self._coordinator._lease(worker, max(1, want), wait)

    async def report(
        self, worker: str, released: int, successes: int, limited: list[dict[str, Any]], done: dict[str, int]
    ) -> int:
        return await self._coordinator._report(worker, released, successes, limited, done)

    async def forget(self, worker: str) -> None:
        await self._coordinator._forget(worker)

    async def progress(self) -> dict[str, int]:
        return await self._coordinator._progress()

    async def started(self) -> list[str]:
        return await self._coordinator._started_workers()


class _RayBackend:
    def __init__(self, address: str | None, workers: int, run_id: str) -> None:
        local = address is None and not os.environ.get("RAY_ADDRESS")
        if local and "ray" not in sys.modules:
            # A Ray of our own, for this machine only: nothing outside needs to reach it, so it
            # listens on loopback (Ray's default is the machine's address; Ray reads this when
            # imported) and reports no usage.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray = self._ray = _ray()
        self._started = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
            if local:
                options.update(num_cpus=max(workers, os.cpu_count() or 1), _node_ip_address="127.0.0.1")
            ray.init(**options)
            self._started = True
        self._workers = workers
        self._run_id = run_id
        self._coordinator: Any = None
        self._running: dict[Any, str] = {}
        self._actors: dict[str, Any] = {}

    def coordinator(self, limits: Limits) -> Any:
        ray = self._ray
        actor = ray.remote(num_cpus=0, max_concurrency=4 * self._workers + 8)(_RayCoordinator)
        self._coordinator = actor.options(name=f"stepfun-batch-{self._run_id}-coordinator").remote(limits)
        return self._coordinator

    def start(self, shard: _Shard) -> None:
        worker = self._ray.remote(num_cpus=1, max_restarts=0)(_RayWorker)
        actor = worker.options(name=f"stepfun-batch-{shard.name}").remote()
        self._actors[shard.name] = actor
        self._running[actor.run.remote(shard, self._coordinator)] = shard.name

    def poll(self) -> list[tuple[str, BatchResult | BaseException]]:
        ray = self._ray
        if not self._running:
            return []
        ready, _ = ray.wait(list(self._running), num_returns=len(self._running), timeout=0)
        ended: list[tuple[str, BatchResult | BaseException]] = []
        for ref in ready:
            name = self._running.pop(ref)
            try:
                ended.append((name, ray.get(ref)))
            except Exception as exc:  # RayActorError: the worker died
                ended.append((name, exc))
            self._actors.pop(name, None)
        return ended

    def progress(self) -> dict[str, int]:
        return self._ray.get(self._coordinator.progress.remote(), timeout=CALL_TIMEOUT)  # type: ignore[no-any-return]

    def started(self) -> list[str]:
        return self._ray.get(self._coordinator.started.remote(), timeout=CALL_TIMEOUT)  # type: ignore[no-any-return]

    def forget(self, worker: str) -> None:
        self._ray.get(self._coordinator.forget.remote(worker), timeout=CALL_TIMEOUT)

    def stop(self) -> None:
        ray = self._ray
        for actor in self._actors.values():
            ray.kill(actor)
        if self._coordinator is not None:
            ray.kill(self._coordinator)
        if self._started:
            ray.shutdown()


def _process_main(shard: _Shard, coordinator: Any, results: Any) -> None:
    """A worker process: the shard's loop; its result (or error) goes back on ``results``."""
    # A thread for every call that may be on its way at once: a lease blocks its thread.
    calls = ThreadPoolExecutor(LEASES_IN_FLIGHT + REPORTS_IN_FLIGHT, thread_name_prefix="stepfun-coordinator-call")

    async def call(method: str, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(calls, getattr(coordinator, method), *args)

    try:
        outcome: BatchResult | BaseException = asyncio.run(_run_shard(shard, call))
    except BaseException as exc:
        outcome = RuntimeError(f"{type(exc).__name__}: {exc}")
    results.put((shard.name, outcome))
    calls.shutdown(wait=False)


class _Manager(BaseManager):
    """Serves the coordinator to the worker processes (over a unix socket of its own)."""


_Manager.register("Coordinator", Coordinator)


class _ProcessBackend:
    """Processes on this machine; the coordinator lives in a ``multiprocessing`` manager."""

    def __init__(self) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._manager = _Manager(ctx=self._context)
        self._manager.start()
        self._results = self._context.Queue()
        self._processes: dict[str, Any] = {}
        self._coordinator: Any = None

    def coordinator(self, limits: Limits) -> Any:
        self._coordinator = self._manager.Coordinator(limits)  # type: ignore[attr-defined]
        return self._coordinator

    def start(self, shard: _Shard) -> None:
        process = self._context.Process(
            target=_process_main, args=(shard, self._coordinator, self._results), name=f"stepfun-{shard.name}"
        )
        process.start()
        self._processes[shard.name] = process

    def poll(self) -> list[tuple[str, BatchResult | BaseException]]:
        ended: list[tuple[str, BatchResult | BaseException]] = []
        while True:
            try:
                name, outcome = self._results.get_nowait()
            except queue.Empty:
                break
            process = self._processes.pop(name, None)
            if process is not None:
                process.join(5)
            ended.append((name, outcome))
        for name, process in list(self._processes.items()):
            if not process.is_alive() and process.exitcode not in (None, 0):
                del self._processes[name]
                ended.append((name, RuntimeError(f"worker process exited with code {process.exitcode}")))
        return ended

    def progress(self) -> dict[str, int]:
        return self._coordinator.progress()  # type: ignore[no-any-return]

    def started(self) -> list[str]:
        return self._coordinator.started()  # type: ignore[no-any-return]

    def forget(self, worker: str) -> None:
        self._coordinator.forget(worker)

    def stop(self) -> None:
        for process in self._processes.values():
            process.kill()
            process.join(5)
        self._manager.shutdown()


# --- the driver -----------------------------------------------------------------------------------


def _rows(jobs: Any) -> Iterable[Any]:
    """A Ray Dataset's rows, or the jobs as given."""
    if type(jobs).__module__.startswith("ray.data") and hasattr(jobs, "iter_rows"):
        return (dict(row) for row in jobs.iter_rows())
    if isinstance(jobs, (str, os.PathLike)):
        from ._jobs import load_jobs

        return load_jobs(jobs)
    return jobs  # type: ignore[no-any-return]


def run_distributed(
    jobs: Iterable[Job | Mapping[str, Any] | str] | str | os.PathLike[str] | Any,
    *,
    out: str | os.PathLike[str],
    workers: int = 2,
    ray: bool | str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    client: StepFun | AsyncStepFun | None = None,
    concurrency: int | None = None,
    rpm: int | None = None,
    tier: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    progress: bool = True,
    progress_stream: TextIO | None = None,
) -> BatchResult:
    """Run ``jobs`` on ``workers`` workers that share ONE account-wide limit (the tier's, or
    ``concurrency``/``rpm``), writing to ``out``: a local folder or any fsspec URL
    (``s3://bucket/prefix``; ``storage_options`` go to its file system).

    Args:
      jobs: as :func:`~stepfun_openai.batch.run` takes them, or a JSONL/text file's path, or a
        Ray Dataset of job rows (``pip install 'ray[data]'``; the rows pass through the driver,
        which reads them all to give each job its id).
      workers: worker processes (Ray actors of one CPU each, or local processes).
      ray: ``None`` uses Ray when it is installed (the running one, ``RAY_ADDRESS``'s, or a local
        one it starts) and local processes otherwise; ``True`` requires Ray; an address
        (``"ray://head:10001"``, ``"auto"``) connects to that cluster; ``False`` uses processes.
      The other arguments are those of :func:`~stepfun_openai.batch.run`.

    Resumable like ``run``: jobs recorded as finished (in any worker's manifest shard under
    ``out/manifest.d/``, or in ``out/manifest.jsonl``) are skipped, so after a crash, a killed
    worker or a killed driver, running the same batch again does only what is left.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    started = time.monotonic()
    _check_defaults(defaults or {})
    limits = resolve_limits(concurrency=concurrency, rpm=rpm, tier=tier)
    output = open_output(out, storage_options)
    works = _prepare(list(_rows(jobs)), defaults or {})
    output.prepare()
    from ._runner import _skip_finished

    result = BatchResult(
        total=len(works),
        out=output.folder,
        manifest=Path(output.shards) if output.local is None else output.folder / "manifest.d",
        limits=limits,
        location=None if output.local is not None else output.url,
    )
    todo = _skip_finished(works, output.finished(), result)
    recipe = _ClientRecipe.of(client)
    run_id = _dt_stamp() + "-" + secrets.token_hex(3)
    shards = [
        _Shard(f"{run_id}-w{number}", todo[number::workers], limits, recipe, output.url, dict(storage_options or {}))
        for number in range(workers)
        if todo[number::workers]
    ]
    if not shards:
        result.elapsed = time.monotonic() - started
        return result
    use_ray = ray is not False and (ray is not None or _ray_installed())
    backend: _Backend = (
        _RayBackend(ray if isinstance(ray, str) else None, len(shards), run_id) if use_ray else _ProcessBackend()
    )
    bar = Progress(
        result.total, initial=result.skipped, enabled=progress, description="stepfun", stream=progress_stream
    )
    try:
        backend.coordinator(limits)
        for shard in shards:
            backend.start(shard)
        running = {shard.name for shard in shards}
        seen, skipped_ok = 0, result.succeeded
        started_all, stalled_since = False, time.monotonic()
        done: dict[str, int] = {}
        while running:
            time.sleep(POLL_INTERVAL)
            if not started_all:
                # A worker waits for a free CPU while others work (more workers than CPUs: it starts
                # when one ends); only when no started worker is left does the wait count.
                started_now = set(backend.started())
                started_all = running <= started_now
                if running & started_now:
                    stalled_since = time.monotonic()
                elif time.monotonic() - stalled_since > WORKER_START_TIMEOUT:
                    for name in sorted(running):
                        backend.forget(name)
                        result.stopped = result.stopped or (
                            f"worker {name} did not start within {WORKER_START_TIMEOUT:.0f} s (no free CPU "
                            "in the cluster?); its jobs are pending"
                        )
                    running.clear()
            for name, outcome in backend.poll():
                running.discard(name)
                backend.forget(name)
                if isinstance(outcome, BatchResult):
                    _merge(result, outcome)
                else:
                    result.stopped = result.stopped or (
                        f"worker {name} died ({type(outcome).__name__}: {str(outcome)[:300]}); "
                        "its jobs not yet recorded are pending"
                    )
            done = backend.progress()
            committed = done.get("committed", 0)
            if committed > seen:
                ok = skipped_ok + done.get("succeeded", 0)
                bar.update(
                    succeeded=ok,
                    failed=result.skipped + committed - ok,
                    rate_limited=done.get("rate_limited", 0),
                    advance=committed - seen,
                )
                seen = committed
        log.debug(
            "the coordinator served %d leases and %d reports for %d jobs committed",
            done.get("leases", 0),
            done.get("reports", 0),
            done.get("committed", 0),
        )
    except KeyboardInterrupt:
        result.interrupted = True
        raise BatchInterrupted(result) from None
    finally:
        backend.stop()
        bar.close()
        result.elapsed = time.monotonic() - started
    return result


def _merge(total: BatchResult, part: BatchResult) -> None:
    for name in ("succeeded", "content_filtered", "blocked", "invalid", "failed", "generated", "rate_limited"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.requests += part.requests
    total.failures.update(part.failures)
    if part.stopped and not total.stopped:
        total.stopped = part.stopped


def _ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _dt_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime())
