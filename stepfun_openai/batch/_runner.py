"""Running a batch: the job loop, the limiter around each attempt, the files and the manifest."""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import os
import secrets
import time
from collections.abc import AsyncIterable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import openai

from .. import catalog
from .._exceptions import (
    ContentBlockedError,
    InsufficientBalanceError,
    StepFunRateLimitError,
    StepFunValidationError,
    get_trace_id,
)
from .._retry import RetryPolicy, async_retrying, retry_after_seconds
from .._sniff import sniff
from ._jobs import _CATALOG_ENDPOINT, Job, JobEndpoint, _check_defaults, _describe, _file_stem, _prepare, _Work
from ._manifest import Manifest, add_png_text, fsync_dir, remove_stale_temp_files, write_atomic
from ._progress import Progress
from ._ratelimit import AdaptiveLimiter, resolve_limits
from ._result import BatchInterrupted, BatchResult, _count

if TYPE_CHECKING:
    from .._client import AsyncStepFun, StepFun

_FATAL_STATUS = frozenset({401, 402, 403, 404})
"""The key, the balance, the permission or the base URL is wrong: every other job would fail too."""
_MAX_RATE_LIMITED_ATTEMPTS = 30
_UNREACHABLE_AFTER = 5
"""Connection errors in a row, before any answer from the server, that stop the batch (at least
this many, or the concurrency up to 20)."""
METADATA_KEY = "stepfun-openai"
"""The PNG ``iTXt`` keyword under which each saved image carries its provenance (JSON)."""

# --- running ----------------------------------------------------------------------------------


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


class _Runner:
    def __init__(
        self,
        *,
        client: AsyncStepFun,
        policy: RetryPolicy,
        limiter: AdaptiveLimiter,
        manifest: Manifest,
        out: Path,
        result: BatchResult,
        progress: Progress,
    ) -> None:
        self.client = client
        self.policy = policy
        self.limiter = limiter
        self.manifest = manifest
        self.out = out
        self.result = result
        self.progress = progress
        self.stop: str | None = None
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
            "params": _describe(work.params),
            "seed": fields.pop("seed", work.params.get("seed")),
            "file": None,
            "error": None,
            "trace_id": None,
            "attempts": work.attempts,
            "elapsed": round(time.monotonic() - started, 3),
            "time": _now_iso(),
        }
        event.update(fields)
        return event

    async def _finish(self, work: _Work, event: dict[str, Any], reason: str | None = None) -> None:
        await asyncio.to_thread(self.manifest.append, event)
        _count(self.result, event["status"], reason)
        self._tick()

    def _tick(self) -> None:
        result = self.result
        not_ok = result.total - result.pending - result.succeeded + result.failed
        self.progress.update(succeeded=result.succeeded, failed=not_ok, rate_limited=self.limiter.rate_limited)

    # -- one job --

    async def run_job(self, work: _Work) -> None:
        started = time.monotonic()
        if work.invalid is not None:
            error = {"type": "StepFunValidationError", "message": work.invalid}
            await self._finish(work, self._record(work, "invalid", started, error=error), "invalid")
            return
        params = {**work.params, "response_format": "b64_json"}
        if not params.get("seed"):
            # Chosen once per job, so every retry asks for the same image (and the manifest says which).
            params["seed"] = secrets.randbelow(catalog.SEED_MAX) + 1
        work.params = {**work.params, "seed": params["seed"]}
        try:
            self._check(work.endpoint, params)
        except (StepFunValidationError, TypeError, ValueError, OSError) as exc:
            await self._finish(work, self._record(work, "invalid", started, error=_error_of(exc)), "invalid")
            return
        retrying = async_retrying(
            self.policy,
            paced=_paced_by_limiter,
            max_paced=_MAX_RATE_LIMITED_ATTEMPTS,
            before=self._before_attempt,
            log_retries=False,  # the progress bar and the manifest tell
            limit_total_time=False,  # a job's time is mostly the limiter's queue, not its retries
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._attempt(work, params)
        except _StopRequested:
            return  # not recorded: it runs when the batch is resumed
        except (StepFunValidationError, openai.BadRequestError) as exc:
            # A 400 from StepFun is as final as a local validation error: not sent again on resume.
            event = self._record(work, "invalid", started, error=_error_of(exc), trace_id=get_trace_id(exc))
            await self._finish(work, event, "invalid")
        except ContentBlockedError as exc:
            event = self._record(work, "blocked", started, error=_error_of(exc), trace_id=get_trace_id(exc))
            await self._finish(work, event, "blocked (451)")
        except InsufficientBalanceError as exc:  # includes QuotaExceededError, a 429 that waiting cannot fix
            await self._fail(work, exc, started, fatal=True)
        except Exception as exc:
            fatal = isinstance(exc, openai.APIStatusError) and exc.status_code in _FATAL_STATUS
            await self._fail(work, exc, started, fatal=fatal)
        else:
            await self._succeed(work, response, started)

    def _before_attempt(self, state: object) -> None:
        if self.stop is not None:
            raise _StopRequested

    async def _attempt(self, work: _Work, params: dict[str, Any]) -> Any:
        """One HTTP request, inside the limiter, whose feedback it gives."""
        sent_at = await self.limiter.acquire()
        work.attempts += 1
        self.result.requests += 1
        try:
            response = await self._call(work.endpoint, params)
        except Exception as exc:
            self.limiter.release()
            if isinstance(exc, openai.APIConnectionError):
                self._on_connection_error(exc)
            else:
                self.reached = True  # the server answered: it is reachable
            if _paced_by_limiter(exc):
                kind = exc.kind if isinstance(exc, StepFunRateLimitError) else None
                limit = exc.limit if isinstance(exc, StepFunRateLimitError) else None
                self.limiter.on_rate_limited(
                    kind=kind, limit=limit, retry_after=retry_after_seconds(exc), sent_at=sent_at
                )
                self.result.rate_limited += 1
                work.rate_limited += 1
            raise
        except BaseException:
            self.limiter.release()
            raise
        self.limiter.release()
        self.limiter.on_success()
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

    def _check(self, endpoint: JobEndpoint, params: Mapping[str, Any]) -> None:
        """Validate (and encode) the request before it takes a rate-limit slot."""
        from .._requests import ClientSettings, prepare_edit, prepare_json

        settings: ClientSettings = getattr(self.client, "_stepfun_settings", ClientSettings())
        typed = {k: v for k, v in params.items() if k != "extra_body"}
        extra = params.get("extra_body")
        if endpoint == "edit":
            prepare_edit(typed, extra, settings)
        else:
            prepare_json(_CATALOG_ENDPOINT[endpoint], typed, extra, settings)

    async def _call(self, endpoint: JobEndpoint, params: dict[str, Any]) -> Any:
        images = self.client.images
        if endpoint == "generate":
            return await images.generate(**params)
        if endpoint == "image2image":
            return await images.image2image(**params)
        return await images.edit(**params)

    async def _fail(self, work: _Work, exc: BaseException, started: float, *, fatal: bool = False) -> None:
        event = self._record(work, "failed", started, error=_error_of(exc), trace_id=get_trace_id(exc))
        if fatal and self.stop is None:
            self.stop = f"{type(exc).__name__}: {exc}"
        await self._finish(work, event, type(exc).__name__)

    async def _succeed(self, work: _Work, response: Any, started: float) -> None:
        images = list(response.images)
        trace_id = getattr(response, "trace_id", None)
        seed = images[0].seed if images and images[0].seed is not None else work.params.get("seed")
        if any(image.content_filtered for image in images):
            event = self._record(
                work,
                "content_filtered",
                started,
                seed=seed,
                trace_id=trace_id,
                error={"type": "content_filtered", "message": "StepFun moderation marked the image content_filtered"},
            )
            await self._finish(work, event, "content_filtered")
            return
        stem = _file_stem(work.id)
        paths: list[Path] = []
        for number, image in enumerate(images):
            data = base64.b64decode(image.b64_json or "")
            suffix = "" if number == 0 else f"-{number}"
            extension = sniff(data[:64]).format or "png"
            paths.append(self.out / f"{stem}{suffix}.{'jpg' if extension == 'jpeg' else extension}")
        event = self._record(
            work, "succeeded", started, seed=seed, trace_id=trace_id, file=self._relative(paths[0]) if paths else None
        )
        if len(paths) > 1:
            event["files"] = [self._relative(p) for p in paths]
        # The order is the crash-safety: every file in place (atomically), then the manifest line.
        for image, path in zip(images, paths, strict=True):
            if hasattr(image, "asave"):
                await image.asave(path)  # atomic, with the request's provenance in the file
            else:  # pragma: no cover - before StepFunImage.save existed
                data = base64.b64decode(image.b64_json or "")
                provenance = {"job_id": work.id, **_describe(work.params), "seed": image.seed, "trace_id": trace_id}
                await asyncio.to_thread(write_atomic, path, add_png_text(data, METADATA_KEY, provenance))

        def commit() -> None:
            fsync_dir(self.out)  # the renames are durable before the line that vouches for them
            self.manifest.append(event)

        await asyncio.to_thread(commit)
        self.result.generated += 1
        self.result.files.extend(paths)
        _count(self.result, "succeeded")
        self._tick()

    def _relative(self, path: Path) -> str:
        try:
            return os.path.relpath(path, self.manifest.path.parent)
        except ValueError:  # pragma: no cover - another drive on Windows
            return str(path)


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
    progress: bool = True,
    progress_stream: TextIO | None = None,
    _holder: list[BatchResult] | None = None,
) -> BatchResult:
    """Run ``jobs`` (``Job``s, dicts with the keyword arguments of ``client.images.generate`` /
    ``image2image`` / ``edit`` plus optional ``endpoint`` and ``id``, or prompt strings).

    Args:
      out: the directory the images go to (created if missing).
      manifest: the JSONL manifest, default ``out/manifest.jsonl``. Jobs it records as finished
        are skipped, so running the same batch again resumes it.
      client: an ``AsyncStepFun``; default one from the environment (``STEPFUN_API_KEY``).
      concurrency, rpm, tier: the limits; explicit values win over the tier's
        (``catalog.RATE_LIMIT_TIERS``); with none of them, tier V0 (5 concurrent, 10/minute).
      defaults: parameters for every job that does not set them, e.g. ``{"model": ..., "size": ...}``.
      progress: show a progress bar (tqdm if installed, else a line on stderr every few seconds).
    """
    started = time.monotonic()
    _check_defaults(defaults or {})
    limits = resolve_limits(concurrency=concurrency, rpm=rpm, tier=tier)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    book = Manifest(Path(manifest) if manifest is not None else out_dir / "manifest.jsonl")
    works = _prepare(await _iterate(jobs), defaults or {})
    result = BatchResult(total=len(works), out=out_dir, manifest=book.path, limits=limits)
    if _holder is not None:
        _holder.append(result)

    book.open()
    owns_client = client is None
    try:
        remove_stale_temp_files(out_dir)
        finished = book.finished()
        todo: list[_Work] = []
        for work in works:
            previous = finished.get(work.id)
            if previous is None:
                todo.append(work)
                continue
            result.skipped += 1
            status = previous["status"]
            error = previous.get("error") or {}
            reason = {"blocked": "blocked (451)"}.get(status, status)
            if status == "failed":
                reason = error.get("type", "failed")
            _count(result, status, reason)
        if client is None:
            from .._client import AsyncStepFun

            client = AsyncStepFun()
        policy = client.retry_policy
        # Every HTTP request goes through the limiter: the batch does the retrying, not the client.
        batch_client = client.with_options(max_retries=0)
        limiter = AdaptiveLimiter(limits)
        bar = Progress(
            result.total, initial=result.skipped, enabled=progress, description="stepfun", stream=progress_stream
        )
        runner = _Runner(
            client=batch_client,
            policy=policy,
            limiter=limiter,
            manifest=book,
            out=out_dir,
            result=result,
            progress=bar,
        )
        queue: asyncio.Queue[_Work] = asyncio.Queue()
        for work in todo:
            queue.put_nowait(work)

        async def worker() -> None:
            while runner.stop is None:
                try:
                    work = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await runner.run_job(work)

        workers = [asyncio.create_task(worker()) for _ in range(max(1, min(limits.concurrency, len(todo))))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            result.interrupted = True
            raise
        finally:
            result.elapsed = time.monotonic() - started
            result.stopped = runner.stop
            bar.close()
    finally:
        book.close()
        if owns_client and client is not None:
            await client.close()
    return result


def _async_twin(client: StepFun | AsyncStepFun) -> AsyncStepFun:
    """A new ``AsyncStepFun`` with the settings of ``client`` (sync or async)."""
    from .._client import AsyncStepFun

    return AsyncStepFun(
        api_key=client.api_key,
        base_url=client.base_url,
        retry_policy=client.retry_policy,
        validate=client.validate,
        stable_seed=client.stable_seed,
        timeout=client.timeout,
        default_headers=dict(getattr(client, "_custom_headers", {}) or {}) or None,
    )


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
                progress=progress,
                progress_stream=progress_stream,
                _holder=holder,
            )
        finally:
            if own is not None:
                await own.close()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        partial = holder[0] if holder else BatchResult(out=Path(out))
        partial.interrupted = True
        raise BatchInterrupted(partial) from None
