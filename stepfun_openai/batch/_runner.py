"""Running a batch: one retry loop per job around the client's own sender, inside the limiter.

Each job's request is prepared once (:func:`stepfun_openai._requests.prepare`: merged, encoded,
validated, seeded) before it takes a rate-limit slot, so an invalid job costs no capacity; every
attempt sends that same request through ``client.images._send`` with the client's retries off
(``max_retries=0``): the batch's loop is the only one, and each attempt passes the limiter. A
finished job's outcome goes to the :class:`~._writer.GroupWriter`, which commits the outcomes of
all the jobs waiting for it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as _dt
import gc
import logging
import os
import time
import warnings
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import openai

from .. import catalog
from .._cost import Cost
from .._exceptions import (
    ContentBlockedError,
    InsufficientBalanceError,
    StepFunRateLimitError,
    StepFunValidationError,
    caller_stacklevel,
    get_trace_id,
)
from .._group_files import ImageParts
from .._requests import DECODE_RESULTS
from .._retry import RetryPolicy, async_retrying, explain_connection_error, retry_after_seconds
from ._budget import Budget, BudgetError, job_cost, money, spent_in
from ._jobs import _CATALOG_ENDPOINT, Job, _check_defaults, _prepare, _Work, describe_params, describe_value
from ._manifest import Manifest, remove_stale_temp_files
from ._progress import Progress
from ._ratelimit import AdaptiveLimiter, Limiter, resolve_limits
from ._result import PROBLEMS_SHOWN, BatchInterrupted, BatchResult, _count, note_problem
from ._writer import Commit, GroupWriter, open_writer

log = logging.getLogger("stepfun_openai")

if TYPE_CHECKING:
    from .._client import AsyncStepFun, StepFun
    from .._requests import PreparedRequest
    from ..types import StepFunImagesResponse

_FATAL_STATUS = frozenset({401, 402, 403, 404})
"""The key, the balance, the permission or the base URL is wrong: every other job would fail too."""
_MAX_RATE_LIMITED_ATTEMPTS = 30
COMMIT_AHEAD = 64
"""With the writer process: finished jobs (up to the concurrency) that may wait for their commit
besides the requests in flight, each holding its images' bytes."""
_UNREACHABLE_AFTER = 5
"""Connection errors in a row, before any answer from the server, that stop the batch (at least
this many, or the concurrency up to 20)."""


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _error_of(exc: BaseException) -> dict[str, Any]:
    message = str(exc)
    if len(message) > 500:
        message = message[:480] + f"... ({len(message)} chars)"
    error: dict[str, Any] = {"type": type(exc).__name__, "message": message}
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        error["status"] = status
    return error


def _paced_by_limiter(exc: BaseException) -> bool:
    """A 429 about the request rate or concurrency: the limiter slows down and paces the retry.
    (A 429 about balance or quota, ``InsufficientBalanceError``, is not retried at all.)"""
    return isinstance(exc, openai.RateLimitError) and not isinstance(exc, InsufficientBalanceError)


class _StopRequested(Exception):
    """The batch is stopping: the job's next attempt is not made, and the job stays pending."""


class _Slot:
    """The concurrency slot of a job's successful request, given back once (:meth:`release`)."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: Limiter) -> None:
        self._limiter: Limiter | None = limiter

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter.release()


class _Runner:
    def __init__(
        self,
        *,
        client: AsyncStepFun,
        policy: RetryPolicy,
        limiter: Limiter,
        writer: GroupWriter,
        result: BatchResult,
    ) -> None:
        from .._requests import ClientSettings

        self.client = client
        self.policy = policy
        self.limiter = limiter
        self.writer = writer
        self.result = result
        settings: ClientSettings = getattr(client, "_stepfun_settings", ClientSettings())
        # The batch always fixes the seed before the first attempt (and records it), whatever the client does.
        self.settings = dataclasses.replace(settings, stable_seed=True)
        self.stop: str | None = None
        self.fatal = False
        """A job failed in a way every other would (the key, the balance, ...): a request waiting
        for its slot is not sent either (a budget's stop lets those already started go on)."""
        self.reached = False
        """Some request got an answer from the server (so connection errors are not its absence)."""
        self.connection_failures = 0
        self.unreachable_after = max(_UNREACHABLE_AFTER, min(limiter.max_concurrency, 20))

    # -- bookkeeping --

    def _record(self, work: _Work, status: str, started: float, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {
            "id": work.id,
            "index": work.index,
            "status": status,
            "endpoint": work.endpoint,
            "params": describe_params(work.params),
            "seed": describe_value(fields.pop("seed", work.params.get("seed"))),
            "file": None,
            "error": None,
            "trace_id": None,
            "attempts": work.attempts,
            "elapsed": round(time.monotonic() - started, 3),
            "time": _now_iso(),
        }
        event.update(fields)
        return event

    async def _finish(self, event: dict[str, Any], reason: str | None = None) -> None:
        await self.writer.commit(Commit(event, reason=reason))

    # -- one job --

    async def run_job(self, work: _Work) -> None:
        started = time.monotonic()
        if work.invalid is not None:
            error = {"type": "StepFunValidationError", "message": work.invalid}
            await self._finish(self._record(work, "invalid", started, error=error), "invalid")
            return
        try:
            request = self._prepare(work)
        except (StepFunValidationError, TypeError, ValueError, OSError) as exc:
            await self._finish(self._record(work, "invalid", started, error=_error_of(exc)), "invalid")
            return
        try:
            response = await self._send(work, request)
        except _StopRequested:
            return  # not recorded: it runs when the batch is resumed
        except (StepFunValidationError, openai.BadRequestError) as exc:
            # A 400 from StepFun is as final as a local validation error: not sent again on resume.
            event = self._record(work, "invalid", started, error=_error_of(exc), trace_id=get_trace_id(exc))
            await self._finish(event, "invalid")
        except ContentBlockedError as exc:
            event = self._record(work, "blocked", started, error=_error_of(exc), trace_id=get_trace_id(exc))
            await self._finish(event, "blocked (451)")
        except InsufficientBalanceError as exc:  # includes QuotaExceededError, a 429 that waiting cannot fix
            await self.writer.commit(self._failure(work, exc, started, fatal=True))
        except Exception as exc:
            fatal = isinstance(exc, openai.APIStatusError) and exc.status_code in _FATAL_STATUS
            await self.writer.commit(self._failure(work, exc, started, fatal=fatal))
        else:
            # The request's concurrency slot is held until the writer has the job: with a writer
            # process, until its bytes are in the pipe (then a killed batch repeats at most the
            # concurrency's jobs: the process commits what it was handed).
            slot = _Slot(self.limiter)
            try:
                commit = self._outcome(work, response, started)
                # The job waits for its commit holding its images' bytes, not the response: many
                # waiting responses would be objects for the garbage collector to go through, again and again.
                del response
                commit.handed = slot.release
                await self.writer.commit(commit)
            finally:
                slot.release()

    def _prepare(self, work: _Work) -> PreparedRequest:
        """The job's one request: what every attempt sends (a batch always asks for ``b64_json``)."""
        from .._requests import prepare

        arguments = {**work.params, "response_format": "b64_json"}
        request = prepare(
            _CATALOG_ENDPOINT[work.endpoint], arguments, self.settings, base_url=getattr(self.client, "base_url", None)
        )
        work.params = {**work.params, "seed": request.seed}  # the manifest says which image was asked for
        return request

    async def _send(self, work: _Work, request: PreparedRequest) -> StepFunImagesResponse:
        """The job's attempts. Most jobs succeed at the first, which is made directly; a failure
        hands over to the job's retry loop (tenacity, under the client's policy), whose first
        attempt is that failure, so the loop decides about it as about any other."""
        if self.stop is not None:
            raise _StopRequested
        try:
            return await self._attempt(work, request)
        except _StopRequested:
            raise
        except Exception as exc:
            failed: Exception | None = exc
        retrying = async_retrying(
            self.policy,
            paced=_paced_by_limiter,
            max_paced=_MAX_RATE_LIMITED_ATTEMPTS,
            before=self._before_attempt,
            log_retries=False,  # the progress bar and the manifest tell
            limit_total_time=False,  # a job's time is mostly the limiter's queue, not its retries
        )
        async for attempt in retrying:
            with attempt:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                return await self._attempt(work, request)
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    def _before_attempt(self, state: object) -> None:
        if self.stop is not None:
            raise _StopRequested

    async def _attempt(self, work: _Work, request: PreparedRequest) -> StepFunImagesResponse:
        """One HTTP request, inside the limiter, whose feedback it gives."""
        sent_at = await self.limiter.acquire()
        if self.fatal:
            self.limiter.release()
            raise _StopRequested
        work.attempts += 1
        self.result.requests += 1
        try:
            response = await self.client.images._send(request, max_retries=0)
        except Exception as exc:
            self.limiter.release()
            if isinstance(exc, openai.APIConnectionError):
                self._on_connection_error(exc)
            else:
                self.reached = True  # the server answered: it is reachable
            if _paced_by_limiter(exc):
                kind = exc.kind if isinstance(exc, StepFunRateLimitError) else None
                limit = exc.limit if isinstance(exc, StepFunRateLimitError) else None
                # A server-requested wait is capped as the client caps it: one 429 with
                # "Retry-After: 999999" must not stall the whole batch for days.
                retry_after = retry_after_seconds(exc)
                if retry_after is not None:
                    retry_after = min(retry_after, self.policy.max_retry_after)
                self.limiter.on_rate_limited(kind=kind, limit=limit, retry_after=retry_after, sent_at=sent_at)
                self.result.rate_limited += 1
                work.rate_limited += 1
            raise
        except BaseException:
            self.limiter.release()
            raise
        self.limiter.on_success()  # the slot stays taken: run_job gives it back (see _Slot)
        self.reached = True
        return response

    def _on_connection_error(self, exc: BaseException) -> None:
        """Stop the batch when the first attempts all fail to connect: the host is unreachable
        (a wrong base URL, no network), and every job would spend its retries on it."""
        if self.reached:
            return
        self.connection_failures += 1
        if self.connection_failures >= self.unreachable_after and self.stop is None:
            base_url = getattr(self.client, "base_url", "the API")
            self.stop = (
                f"cannot reach {base_url}: the first {self.connection_failures} attempts all failed "
                f"({type(exc).__name__}: {exc}); check the base URL and the network"
            )
        if self.stop is not None:
            raise _StopRequested from exc

    def _failure(self, work: _Work, exc: BaseException, started: float, *, fatal: bool = False) -> Commit:
        if isinstance(exc, openai.APIConnectionError):  # where, how often, how long: the job's, not an attempt's
            explain_connection_error(exc, work.attempts, time.monotonic() - started)
        event = self._record(work, "failed", started, error=_error_of(exc), trace_id=get_trace_id(exc))
        if fatal:
            self.fatal = True
            self.stop = self.stop or f"{type(exc).__name__}: {exc}"
        return Commit(event, reason=type(exc).__name__)

    def _outcome(self, work: _Work, response: StepFunImagesResponse, started: float) -> Commit:
        """What a job that got an answer commits: its images and line, or why it has none."""
        images = response.images
        trace_id = response.trace_id
        seed = images[0].seed if images and images[0].seed is not None else work.params.get("seed")
        work.billed = cost = response.cost  # generated, so billed (content_filtered ones too)
        if any(image.content_filtered for image in images):
            error = {"type": "content_filtered", "message": "StepFun moderation marked the image content_filtered"}
            event = self._record(
                work, "content_filtered", started, seed=seed, trace_id=trace_id, error=error, cost=cost.as_dict()
            )
            return Commit(event, reason="content_filtered")
        try:
            # Decoded here, once (the response check did it already): CPU work on the writer's
            # thread would hold the GIL against this loop.
            parts: list[ImageParts] = [(image.read(), image._context, image.seed) for image in images]
        except ValueError as exc:  # read() refused it (the response check should have): runs again on resume
            return self._failure(work, exc, started)
        event = self._record(work, "succeeded", started, seed=seed, trace_id=trace_id, cost=cost.as_dict())
        return Commit(event, images=parts, stem=work.stem)


def _committed(result: BatchResult, limiter: Limiter, bar: Progress) -> Any:
    """What the writer reports back, on the event loop: counts, files, progress."""

    def on_committed(group: list[Commit]) -> None:
        for commit in group:
            status = commit.event["status"]
            if status == "succeeded":
                result.generated += 1
                result.files.extend(commit.files)
            _count(result, status, commit.reason)
            if status != "succeeded":
                note_problem(result, commit.event["id"], status, commit.event.get("error"))
        not_ok = result.total - result.pending - result.succeeded + result.failed
        bar.update(succeeded=result.succeeded, failed=not_ok, rate_limited=limiter.rate_limited, advance=len(group))

    return on_committed


async def _iterate(jobs: Iterable[Any] | AsyncIterable[Any]) -> list[Any]:
    if isinstance(jobs, AsyncIterable):
        return [item async for item in jobs]
    return list(jobs)


async def arun(
    jobs: Iterable[Job | Mapping[str, Any] | str] | AsyncIterable[Job | Mapping[str, Any] | str],
    *,
    out: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
    client: AsyncStepFun | None = None,
    concurrency: int | None = None,
    rpm: int | None = None,
    tier: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    max_spend: float | str | Decimal | None = None,
    check_balance: bool = False,
    allow_partial: bool = False,
    progress: bool = True,
    progress_stream: TextIO | None = None,
    _holder: list[BatchResult] | None = None,
) -> BatchResult:
    """Run ``jobs`` (``Job``s, dicts with the keyword arguments of ``client.images.generate`` /
    ``image2image`` / ``edit`` plus optional ``endpoint`` and ``id``, or prompt strings).

    Args:
      out: the directory the images go to (created if missing), each named
        ``<prompt slug>-<job id>.png`` (the same name on every run, so a resumed job rewrites its
        own file; the seed is in the manifest and in the image's provenance).
      manifest: the JSONL manifest, default ``out/manifest.jsonl``. Jobs it records as finished
        are skipped, so running the same batch again resumes it; a succeeded job whose image file
        was deleted runs again, and unreadable lines are skipped (both counted in the result).
      client: an ``AsyncStepFun``; default one from the environment (``STEPFUN_API_KEY``).
      concurrency: requests in flight at most (wins over the tier's).
      rpm: requests per minute at most (wins over the tier's).
      tier: the account's tier, ``V0`` to ``V5`` (``catalog.RATE_LIMIT_TIERS``); with none of the
        three limits, tier V0 (5 concurrent, 10/minute).
      defaults: parameters for every job that does not set them, e.g. ``{"model": ..., "size": ...}``;
        each applies to the jobs whose endpoint takes it, and ``model`` only to the jobs whose
        endpoint that model serves (the others keep their endpoint's default model).
      max_spend: a budget in the client's currency (yuan on the mainland, dollars on the
        international host; ``StepFun(region=...)`` elsewhere): the spend, counting the jobs in
        flight and what the manifest records from earlier runs, never passes it. The first job that
        would pass it stops the batch from starting more (``result.stopped`` says so); the rest stay
        pending for a later run. Every job's price must be known (:class:`BudgetError` otherwise).
      check_balance: before starting, compare the account's balance with the estimated cost: a
        lower balance is a :class:`BudgetError` unless ``allow_partial`` (then the batch runs until
        StepFun answers 402, which stops it cleanly: the rest stay pending).
      allow_partial: with ``check_balance``, start even when the balance is lower than the estimate.
      progress: show a progress bar (tqdm if installed, else a line on stderr every few seconds).
    """
    started = time.monotonic()
    _check_defaults(defaults or {})
    limit = None if max_spend is None else money(max_spend)
    limits = resolve_limits(concurrency=concurrency, rpm=rpm, tier=tier)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    book = Manifest(Path(manifest) if manifest is not None else out_dir / "manifest.jsonl")
    works = _prepare(await _iterate(jobs), defaults or {})
    result = BatchResult(total=len(works), out=out_dir, manifest=book.path, limits=limits)
    if _holder is not None:
        _holder.append(result)

    book.open()
    owned: AsyncStepFun | None = None
    try:
        remove_stale_temp_files(out_dir)
        finished = book.finished()
        result.unreadable_lines, result.missing_files = book.skipped_lines, book.missing_files
        todo = _skip_finished(works, finished, result)
        earlier = [work.id for work in works if finished.get(work.id, ("succeeded",))[0] != "succeeded"]
        if earlier:
            errors = book.errors(earlier[:PROBLEMS_SHOWN])
            for job_id in earlier[:PROBLEMS_SHOWN]:
                note_problem(result, job_id, finished[job_id][0], errors.get(job_id))
        del finished
        client, owned = await _client_for(client, limits.concurrency)
        host, region = catalog.host_of(client.base_url), client.region
        costs = {work.id: job_cost(work, host, region) for work in todo if work.invalid is None}
        budget = Budget(limit, spent_in(book))
        result.max_spend = limit
        budget.check(costs.values())
        if check_balance:
            await _check_balance(client, Cost.total(costs.values()), allow_partial=allow_partial)
        limiter = AdaptiveLimiter(limits)
        bar = Progress(
            result.total, initial=result.skipped, enabled=progress, description="stepfun", stream=progress_stream
        )
        writer = open_writer(book, out_dir, on_committed=_committed(result, limiter, bar), jobs=len(todo))
        runner = _Runner(client=client, policy=client.retry_policy, limiter=limiter, writer=writer, result=result)
        try:
            # Handed to the writer process, a finished job is safe from a crash of this one (the
            # process commits what it was given), so jobs may wait for their commit beside the
            # requests in flight; with the writer thread, a job waiting for its commit is in flight.
            ahead = min(limits.concurrency, COMMIT_AHEAD) if writer.outlives_the_batch else 0
            with _collector_tuned():
                await _execute(runner, writer, todo, limits.concurrency, budget=budget, costs=costs, ahead=ahead)
        except BaseException:
            result.interrupted = True
            raise
        finally:
            writer.close()  # whatever was handed over is committed, even after Ctrl-C
            result.elapsed = time.monotonic() - started
            result.stopped = runner.stop
            result.spent = budget.total
            bar.close()
    finally:
        book.close()
        if owned is not None:
            await owned.close()
    return result


_tuned = 0
_thresholds: tuple[int, int, int] | None = None
_frozen = False
YOUNG_THRESHOLD = 10_000
"""While a batch runs, the collector's first generation is collected after this many new objects
(Python's default: 700)."""


@contextlib.contextmanager
def _collector_tuned() -> Iterator[None]:
    """The garbage collector, tuned while batches run (undone when the last one ends).

    A batch keeps many jobs' objects alive for a while (requests in flight, outcomes waiting for
    their commit), so the collector ran after every few jobs and moved them from generation to
    generation, and each full pass went through the whole process (the SDK's modules and types:
    40-60 ms a pass). So: the objects older than the batch are left out of the collector's passes
    (``gc.freeze``, unless the program froze objects itself), and the first generation is
    collected after :data:`YOUNG_THRESHOLD` new objects, not 700 (a threshold the program changed
    meanwhile is left as it is). Garbage made during the batch is collected as usual. Measured on
    a batch of small images: about a tenth of its CPU, then a few percent."""
    global _tuned, _thresholds, _frozen
    if _tuned == 0:
        _frozen = gc.get_freeze_count() == 0
        if _frozen:
            gc.freeze()
        _thresholds = gc.get_threshold()
        gc.set_threshold(max(_thresholds[0], YOUNG_THRESHOLD), *_thresholds[1:])
    _tuned += 1
    try:
        yield
    finally:
        _tuned -= 1
        if _tuned == 0:
            if _thresholds is not None and gc.get_threshold()[0] == max(_thresholds[0], YOUNG_THRESHOLD):
                gc.set_threshold(*_thresholds)
            if _frozen:
                gc.unfreeze()


_FREE = Cost(Decimal(0), None, images=0)
"""The budget's view of a job that is never sent (unreadable): it costs nothing."""


async def _check_balance(client: AsyncStepFun, estimate: Cost, *, allow_partial: bool) -> None:
    """A balance lower than the batch's estimated cost stops it before it starts (unless
    ``allow_partial``); an account that cannot be read (a proxy without ``/accounts``) does not."""
    try:
        account = await client.with_options(max_retries=0, timeout=30).account.retrieve()
    except openai.APIError as exc:
        log.warning("the balance could not be read (%s): the batch starts without checking it", type(exc).__name__)
        return
    if not account.prepaid or account.balance is None or not estimate.known or allow_partial:
        return
    assert estimate.amount is not None
    if Decimal(str(account.balance)) < estimate.amount:
        raise BudgetError(
            f"the balance ({account.balance}) is lower than the batch's estimated cost ({estimate}): top up, "
            "run fewer jobs, or allow a partial run (allow_partial=True, --allow-partial): it stops cleanly "
            "when StepFun answers 402, and the rest run when the batch is resumed"
        )


def _skip_finished(
    works: list[_Work], finished: Mapping[str, tuple[str, str | None]], result: BatchResult
) -> list[_Work]:
    """The jobs still to do; those an earlier run finished are counted in ``result`` as skipped."""
    todo: list[_Work] = []
    for work in works:
        previous = finished.get(work.id)
        if previous is None:
            todo.append(work)
            continue
        result.skipped += 1
        status, error_type = previous
        reason = {"blocked": "blocked (451)"}.get(status, status)
        if status == "failed":
            reason = error_type or "failed"
        _count(result, status, reason)
    return todo


async def _execute(
    runner: _Runner,
    writer: GroupWriter,
    todo: list[_Work],
    concurrency: int,
    *,
    budget: Budget | None = None,
    costs: Mapping[str, Cost] | None = None,
    ahead: int = 0,
) -> None:
    """Run ``todo`` with ``concurrency + ahead`` tasks (each takes the next job when it is done
    with one: its outcome committed), then wait until every outcome is committed; on an error or a
    cancellation the tasks are cancelled first. The limiter keeps at most ``concurrency`` requests
    in flight; ``ahead`` more tasks let as many finished jobs wait for their commit meanwhile, as
    long as the writer's commits outlive the batch (a writer process that could not start leaves
    them to the thread: the extra tasks then end). The one job loop of ``arun`` and of a
    distributed batch's workers. With a ``budget``, a job starts only while its cost (from
    ``costs``) fits it (see ``_budget``)."""
    pending = iter(todo)

    async def worker(extra: bool) -> None:
        # This task's context only: every image a job gets is read at once, so the response
        # check decodes it (once, strictly) instead of scanning it for read() to decode again.
        DECODE_RESULTS.set(True)
        while runner.stop is None and writer.error is None and (not extra or writer.outlives_the_batch):
            work = next(pending, None)
            if work is None:
                return
            cost = (costs or {}).get(work.id, _FREE)
            if budget is not None and not budget.reserve(cost):
                runner.stop = runner.stop or budget.stop_reason(cost)
                runner.result.budget_reached = True
                return
            try:
                await runner.run_job(work)
            finally:
                if budget is not None:
                    budget.settle(cost, work.billed)

    count = max(1, min(concurrency + ahead, len(todo)))
    workers = [asyncio.create_task(worker(number >= concurrency)) for number in range(count)]
    try:
        await asyncio.gather(*workers)
        await writer.drain()
    except BaseException:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise


async def _client_for(client: AsyncStepFun | None, concurrency: int) -> tuple[AsyncStepFun, AsyncStepFun | None]:
    """The client the batch sends with, and the one it must close (if it made one).

    Requests in flight are capped by the connection pool (the SDK's default holds 1,000): a
    batch allowed more sends with a copy of the client (every setting kept) whose pool is that
    large. A pool the user built is theirs: a warning says it caps the batch instead.
    """
    from .._compat import AsyncHttpxClientWrapper, connection_limit

    owned: AsyncStepFun | None = None
    if client is None:
        from .._client import AsyncStepFun

        client = owned = AsyncStepFun()
    limit = connection_limit(client._client)
    if limit is None or limit >= concurrency:
        return client, owned
    if not client._http_client_is_users:
        import httpx2

        pool = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        larger = client.with_options(
            http_client=AsyncHttpxClientWrapper(base_url=client.base_url, timeout=client.timeout, limits=pool)
        )
        if owned is not None:
            await owned.close()  # never used: the copy sends instead
        return larger, larger
    warnings.warn(
        f"the client's HTTP connection pool holds {limit} connections, fewer than the batch's concurrency "
        f"({concurrency}): at most {limit} requests will be in flight. Build the client with "
        f"http_client=openai.DefaultAsyncHttpxClient(limits=httpx2.Limits(max_connections={concurrency}))",
        UserWarning,
        stacklevel=caller_stacklevel(),
    )
    return client, owned


def run(
    jobs: Iterable[Job | Mapping[str, Any] | str],
    *,
    out: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
    client: StepFun | AsyncStepFun | None = None,
    concurrency: int | None = None,
    rpm: int | None = None,
    tier: str | None = None,
    defaults: Mapping[str, Any] | None = None,
    max_spend: float | str | Decimal | None = None,
    check_balance: bool = False,
    allow_partial: bool = False,
    progress: bool = True,
    progress_stream: TextIO | None = None,
) -> BatchResult:
    """The synchronous form of :func:`arun` (same arguments; ``client`` may be a ``StepFun`` or an
    ``AsyncStepFun``: the batch runs on an async copy of it with the same settings). Ctrl-C raises
    :class:`BatchInterrupted` (a ``KeyboardInterrupt``) once the batch has stopped cleanly.

    In a notebook (a running event loop) use ``await arun(...)`` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("an event loop is already running (a notebook?): use `await stepfun_openai.batch.arun(...)`")
    if client is not None:
        _warn_if_users_http_client(client)  # here, on the caller's stack, so it points at their line
    holder: list[BatchResult] = []

    async def main() -> BatchResult:
        # An async client's connections belong to one event loop, and this one is ours alone.
        own = _async_twin(client) if client is not None else None
        try:
            return await arun(
                jobs,
                out=out,
                manifest=manifest,
                client=own,
                concurrency=concurrency,
                rpm=rpm,
                tier=tier,
                defaults=defaults,
                max_spend=max_spend,
                check_balance=check_balance,
                allow_partial=allow_partial,
                progress=progress,
                progress_stream=progress_stream,
                _holder=holder,
            )
        finally:
            if own is not None and own is not client:
                await own.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        partial = holder[0] if holder else BatchResult(out=Path(out))
        partial.interrupted = True
        raise BatchInterrupted(partial) from None


def _async_twin(client: StepFun | AsyncStepFun) -> AsyncStepFun:
    """An ``AsyncStepFun`` with every setting of ``client`` and connections of its own: an async
    client's connections belong to the event loop that opened them, and ``run`` closes its twin."""
    from .._client import AsyncStepFun
    from .._compat import AsyncHttpxClientWrapper

    fresh = AsyncHttpxClientWrapper(base_url=client.base_url, timeout=client.timeout)  # the SDK's default
    return client.copy(http_client=fresh) if isinstance(client, AsyncStepFun) else client.to_async(http_client=fresh)


def _warn_if_users_http_client(client: StepFun | AsyncStepFun) -> None:
    """``run()`` cannot send through the caller's own HTTP client (see :func:`_async_twin`)."""
    if client._http_client_is_users:
        # Said here, not by to_async(): its advice (pass an httpx2.AsyncClient) is not for run().
        warnings.warn(
            f"batch.run() sends from an event loop of its own, so it cannot use your {type(client).__name__}'s "
            f"http_client ({type(client._client).__name__}): it sends through a fresh default one, without your "
            "client's pool limits, proxies, transport or event hooks. To use yours: await batch.arun(..., "
            "client=AsyncStepFun(http_client=httpx2.AsyncClient(...)))",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
