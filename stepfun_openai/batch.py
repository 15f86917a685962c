"""Many images at the account's rate limit: resumable, with a progress bar.

```python
from stepfun_openai import batch

result = batch.run(
    [{"prompt": "a lighthouse at dawn"}, {"prompt": "a lighthouse at dusk", "seed": 7}],
    out="out/",
    tier="V1",
)
print(result.summary())
```

Every job becomes one request on ``AsyncStepFun`` under two limits at once (requests in flight
and requests per minute, see :mod:`stepfun_openai._ratelimit`), which adapt when StepFun
answers 429. Each image is written atomically into ``out`` with its provenance in a PNG text
chunk, and each finished job appends one line to ``out/manifest.jsonl`` (flushed and fsynced
after the image is in place). Running the same batch again skips the finished jobs, so a crash
or Ctrl-C costs at most the requests that were in flight.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as _dt
import hashlib
import inspect
import json
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import openai

from . import catalog
from ._exceptions import (
    ContentBlockedError,
    InsufficientBalanceError,
    StepFunRateLimitError,
    StepFunValidationError,
    get_trace_id,
)
from ._manifest import Manifest, add_png_text, fsync_dir, remove_stale_temp_files, write_atomic
from ._progress import Progress, format_duration
from ._ratelimit import AdaptiveLimiter, Limits, resolve_limits
from ._retry import RetryPolicy, async_retrying, retry_after_seconds
from ._sniff import sniff

if TYPE_CHECKING:
    from ._client import AsyncStepFun, StepFun

__all__ = [
    "DEFAULT_MODELS",
    "BatchInterrupted",
    "BatchResult",
    "Job",
    "JobEndpoint",
    "Limits",
    "arun",
    "load_jobs",
    "resolve_limits",
    "run",
]

JobEndpoint = Literal["generate", "image2image", "edit"]

DEFAULT_MODELS: dict[JobEndpoint, str] = {
    "generate": "step-image-edit-2",
    "image2image": "step-2x-large",
    "edit": "step-image-edit-2",
}
"""The model a job gets when neither it nor ``defaults`` names one (the catalog's recommended)."""

_ENDPOINT_NAMES: dict[str, JobEndpoint] = {
    "generate": "generate",
    "generations": "generate",
    "image2image": "image2image",
    "edit": "edit",
    "edits": "edit",
}
_CATALOG_ENDPOINT: dict[JobEndpoint, catalog.Endpoint] = {
    "generate": "generations",
    "image2image": "image2image",
    "edit": "edits",
}
_IMAGE_KEYS = frozenset({"source_url", "source_image", "image", "style_reference"})
"""Keys whose values are images, at any depth of a job's parameters (``extra_body`` too)."""
_NOT_JOB_PARAMS = frozenset({"extra_headers", "extra_query", "timeout", "response_format"})
_FATAL_STATUS = frozenset({401, 402, 403, 404})
"""The key, the balance, the permission or the base URL is wrong: every other job would fail too."""
_MAX_RATE_LIMITED_ATTEMPTS = 30
_UNREACHABLE_AFTER = 5
"""Connection errors in a row, before any answer from the server, that stop the batch (at least
this many, or the concurrency up to 20)."""
METADATA_KEY = "stepfun-openai"
"""The PNG ``iTXt`` keyword under which each saved image carries its provenance (JSON)."""


# --- jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One image to make: the endpoint (``generate``, ``image2image``, ``edit``), the keyword
    arguments of the matching ``client.images`` method, and optionally a stable ``id``.

    Without an ``id`` the job's id is derived from its content, so the same job in a later run
    is recognised (and skipped once finished).
    """

    endpoint: JobEndpoint
    params: Mapping[str, Any]
    id: str | None = None
    error: str | None = None
    """Why the job cannot run (e.g. a line of a jobs file that is not a job): it is recorded as
    ``invalid`` with this message, and the other jobs run."""

    @classmethod
    def generate(cls, prompt: str, *, id: str | None = None, **params: Any) -> Job:
        """A text-to-image job; ``params`` are those of ``client.images.generate``."""
        return cls("generate", {"prompt": prompt, **params}, id)

    @classmethod
    def image2image(
        cls, prompt: str, *, source_url: Any, source_weight: float, id: str | None = None, **params: Any
    ) -> Job:
        """An image-to-image job; ``params`` are those of ``client.images.image2image``."""
        return cls(
            "image2image", {"prompt": prompt, "source_url": source_url, "source_weight": source_weight, **params}, id
        )

    @classmethod
    def edit(cls, prompt: str, *, image: Any, id: str | None = None, **params: Any) -> Job:
        """An edit job; ``params`` are those of ``client.images.edit``."""
        return cls("edit", {"prompt": prompt, "image": image, **params}, id)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """``{"prompt": ..., [endpoint], [id], **params}``; without ``endpoint``, a job with ``image``
        is an edit, one with ``source_url`` an image2image, anything else a generation."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a job must be a dict (or a Job), got {type(data).__name__}")
        params = dict(data)
        endpoint_value = params.pop("endpoint", None)
        job_id = params.pop("id", None)
        if job_id is not None and not isinstance(job_id, (str, int)):
            raise TypeError(f"a job's id must be a string, got {job_id!r}")
        if endpoint_value is None:
            endpoint: JobEndpoint = (
                "edit" if "image" in params else "image2image" if "source_url" in params else "generate"
            )
        else:
            if endpoint_value not in _ENDPOINT_NAMES:
                raise ValueError(f"unknown endpoint {endpoint_value!r}; use one of generate, image2image, edit")
            endpoint = _ENDPOINT_NAMES[endpoint_value]
        return cls(endpoint, params, None if job_id is None else str(job_id))


def _as_job(item: Job | Mapping[str, Any] | str) -> Job:
    if isinstance(item, Job):
        return item
    if isinstance(item, str):
        return Job.generate(item)
    return Job.from_dict(item)


def load_jobs(path: str | os.PathLike[str]) -> list[Job]:
    """Jobs from a file: JSONL (one job object a line) or plain text (one prompt a line).

    Blank lines and lines starting with ``#`` in a text file are skipped. Relative image paths in
    a JSONL job are resolved against the file's directory (when the file exists there). A JSONL
    line that is not a valid job becomes a job with an ``error`` naming ``file:line``: the batch
    records it as ``invalid`` and runs the others.
    """
    source = Path(path)
    text = source.read_text(encoding="utf-8")
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, line) for number, line in lines if line]
    is_jsonl = source.suffix.lower() in (".jsonl", ".ndjson") or (bool(lines) and lines[0][1].startswith("{"))
    jobs: list[Job] = []
    for number, line in lines:
        if not is_jsonl:
            if not line.startswith("#"):
                jobs.append(Job.generate(line))
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            jobs.append(_invalid_line(source, number, line, f"not a JSON object ({exc.msg})"))
            continue
        try:
            job = Job.from_dict(data)
        except (TypeError, ValueError) as exc:
            jobs.append(_invalid_line(source, number, line, str(exc)))
            continue
        jobs.append(_resolve_paths(job, source.parent))
    return jobs


def _invalid_line(source: Path, number: int, line: str, reason: str) -> Job:
    """A line that is not a job: an ``invalid`` job whose id is stable for the same line."""
    digest = hashlib.sha256(f"{number}:{line}".encode()).hexdigest()[:12]
    excerpt = line if len(line) <= 200 else line[:200] + "..."
    return Job("generate", {"line": excerpt}, f"line{number}-{digest}", error=f"{source}:{number}: {reason}")


def _resolve_paths(job: Job, base: Path) -> Job:
    params = dict(job.params)
    changed = False
    for key in ("source_url", "source_image", "image"):
        value = params.get(key)
        if isinstance(value, str) and _looks_like_path(value) and not Path(value).is_absolute():
            candidate = base / value
            if candidate.exists():
                params[key] = str(candidate)
                changed = True
    return replace(job, params=params) if changed else job


def _looks_like_path(value: str) -> bool:
    return not value.startswith(("http://", "https://", "data:")) and len(value) < 1024


def _canonical(value: Any, key: str | None = None) -> Any:
    """A JSON-able stand-in for ``value`` that changes when the content does (images hashed,
    including the bytes of an image given as a file path)."""
    if key in _IMAGE_KEYS and isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and _looks_like_path(text):
            digest = _file_digest(text)
            if digest is not None:
                return {"path": text, "sha256": digest}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, str(k)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    image = getattr(value, "image", None)
    if image is not None and hasattr(value, "weight"):  # StyleReference
        return {"image": _canonical(image, "image"), "weight": value.weight}
    if hasattr(value, "tobytes") and hasattr(value, "size"):  # a PIL image
        return {"pil": hashlib.sha256(value.tobytes()).hexdigest(), "size": list(value.size)}
    if hasattr(value, "read") and hasattr(value, "seek"):
        position = value.tell()
        data = value.read()
        value.seek(position)
        return {"sha256": hashlib.sha256(data if isinstance(data, bytes) else str(data).encode()).hexdigest()}
    return {"repr": repr(value)}


_HASH_FILES_UP_TO = 64 * 1024 * 1024
"""Image files up to this size are hashed into the job id (StepFun takes at most 10 MB anyway)."""


def _file_digest(path: str) -> str | None:
    """The sha256 of the file at ``path`` (``None`` if there is none), so that editing a source
    image in place gives its job a new id."""
    try:
        target = Path(path)
        if not target.is_file():
            return None
        size = target.stat().st_size
        if size > _HASH_FILES_UP_TO:
            return f"size {size}, mtime {target.stat().st_mtime_ns}"
        return hashlib.sha256(target.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return None


def content_id(endpoint: str, params: Mapping[str, Any]) -> str:
    """The id of a job without one: a hash of its endpoint and parameters."""
    canonical = {
        "endpoint": endpoint,
        "params": _canonical({k: v for k, v in params.items() if k != "response_format"}),
    }
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return digest[:16]


def _file_stem(job_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", job_id).strip("._")[:80] or "job"
    if safe != job_id:
        safe += "-" + hashlib.sha256(job_id.encode()).hexdigest()[:8]
    return safe


def _describe(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for the manifest: image payloads become a short description, never base64,
    wherever they are (top level, ``extra_body``, a ``style_reference``)."""
    return {str(k): _describe_value(v, str(k)) for k, v in params.items()}


def _describe_value(value: Any, key: str | None) -> Any:
    if key in _IMAGE_KEYS:
        return _describe_image(value)
    if isinstance(value, Mapping):
        return {str(k): _describe_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe_value(v, None) for v in value]
    if isinstance(value, str) and len(value) > _LONG_STRING:
        return _digest_of(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _describe_image(value)
    image = getattr(value, "image", None)
    if image is not None and hasattr(value, "weight"):  # StyleReference
        return {"image": _describe_image(image), "weight": value.weight}
    return _canonical(value)


_LONG_STRING = 1024
"""A string longer than this in a job's parameters is described by a digest in the manifest."""


def _digest_of(text: str) -> str:
    return f"<inline image, {len(text)} chars, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}>"


def _describe_image(value: Any) -> Any:
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            return value if len(value) < 2048 else value[:2048]
        if value.startswith("data:") or len(value) > _LONG_STRING:
            return _digest_of(value)
        return value  # a path
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes, sha256 {hashlib.sha256(bytes(value)).hexdigest()[:16]}>"
    if isinstance(value, Mapping):  # a style_reference as a dict
        return {str(k): _describe_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_describe_image(v) for v in value]
    image = getattr(value, "image", None)
    if image is not None and hasattr(value, "weight"):
        return {"image": _describe_image(image), "weight": value.weight}
    return f"<{type(value).__name__}>"


@dataclass
class _Work:
    index: int
    id: str
    endpoint: JobEndpoint
    params: dict[str, Any]
    invalid: str | None = None  # why the job could not even be read
    attempts: int = 0
    rate_limited: int = 0


def _allowed_params(endpoint: JobEndpoint) -> set[str]:
    from ._images import AsyncImages

    method: dict[JobEndpoint, Callable[..., Any]] = {
        "generate": AsyncImages.generate,
        "image2image": AsyncImages.image2image,
        "edit": AsyncImages.edit,
    }
    names = set(inspect.signature(method[endpoint]).parameters) - {"self"}
    return names - _NOT_JOB_PARAMS


_IGNORED_PARAMS = frozenset({"response_format"})
"""Accepted in a job or in ``defaults`` and ignored: a batch always asks for ``b64_json``."""


def _check_defaults(defaults: Mapping[str, Any]) -> None:
    """``defaults`` may hold only parameters that some endpoint takes: a typo is an error."""
    allowed = set().union(*(_allowed_params(endpoint) for endpoint in DEFAULT_MODELS)) | _IGNORED_PARAMS
    unknown = sorted(str(key) for key in defaults if key not in allowed)
    if unknown:
        raise ValueError(
            f"unknown key(s) in defaults: {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def _prepare(items: Iterable[Job | Mapping[str, Any] | str], defaults: Mapping[str, Any]) -> list[_Work]:
    _check_defaults(defaults)
    works: list[_Work] = []
    seen: Counter[str] = Counter()
    explicit: dict[str, int] = {}
    allowed = {endpoint: _allowed_params(endpoint) for endpoint in DEFAULT_MODELS}
    for index, item in enumerate(items):
        try:
            job = _as_job(item)
        except (TypeError, ValueError) as exc:
            job_id = "invalid-" + hashlib.sha256(repr(item).encode()).hexdigest()[:12]
            raw = {str(k): v for k, v in item.items()} if isinstance(item, Mapping) else {"job": repr(item)[:200]}
            works.append(_Work(index, job_id, "generate", raw, invalid=str(exc)))
            continue
        if job.error is not None:
            job_id = job.id or "invalid-" + hashlib.sha256(repr(job.params).encode()).hexdigest()[:12]
            works.append(_Work(index, job_id, job.endpoint, dict(job.params), invalid=job.error))
            continue
        params = {**{k: v for k, v in defaults.items() if k in allowed[job.endpoint]}, **job.params}
        for name in _IGNORED_PARAMS:
            params.pop(name, None)
        params.setdefault("model", DEFAULT_MODELS[job.endpoint])
        unknown = sorted(set(params) - allowed[job.endpoint])
        if job.id is not None:
            if job.id in explicit:
                raise ValueError(f"job id {job.id!r} is used twice (jobs {explicit[job.id]} and {index})")
            explicit[job.id] = index
            job_id = job.id
        else:
            base = content_id(job.endpoint, params)
            seen[base] += 1
            # The same job twice means two images: the second gets its own id, stable by order.
            job_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        invalid = None
        if unknown:
            known = ", ".join(sorted(allowed[job.endpoint]))
            invalid = f"unknown parameter(s) {', '.join(unknown)} for {job.endpoint}; known: {known}"
        works.append(_Work(index, job_id, job.endpoint, params, invalid=invalid))
    return works


# --- results ----------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What a batch did. Counts cover every job, including those finished by an earlier run."""

    total: int = 0
    succeeded: int = 0
    skipped: int = 0
    """Jobs already finished in an earlier run (not requested again)."""
    content_filtered: int = 0
    blocked: int = 0
    invalid: int = 0
    failed: int = 0
    """Jobs whose request failed (they run again when the batch is resumed)."""
    failures: Counter[str] = field(default_factory=Counter)
    """Why jobs did not produce an image, by reason (error type, ``content_filtered``, ...)."""
    generated: int = 0
    """Images generated in this run."""
    rate_limited: int = 0
    """429s seen in this run."""
    requests: int = 0
    """HTTP requests made in this run."""
    elapsed: float = 0.0
    out: Path = Path(".")
    manifest: Path = Path("manifest.jsonl")
    files: list[Path] = field(default_factory=list)
    """The images written in this run."""
    limits: Limits | None = None
    interrupted: bool = False
    stopped: str | None = None
    """Why the batch stopped early (a key, balance or permission error), if it did."""

    @property
    def pending(self) -> int:
        """Jobs without a final outcome yet (failed, interrupted, or never started)."""
        return self.total - self.succeeded - self.content_filtered - self.blocked - self.invalid

    @property
    def ok(self) -> bool:
        """Every job produced its image."""
        return self.succeeded == self.total

    @property
    def images_per_minute(self) -> float:
        return self.generated / self.elapsed * 60 if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.succeeded} of {self.total} images done"
            + (f" ({self.skipped} finished in an earlier run)" if self.skipped else "")
            + f"; {self.generated} generated in {format_duration(self.elapsed)}"
            + f" ({self.images_per_minute:.1f} images/minute, {self.rate_limited} 429s seen)"
        ]
        not_started = self.not_started
        if self.failures or not_started:
            reasons = [f"{count} {reason}" for reason, count in self.failures.most_common()]
            if not_started:
                reasons.append(f"{not_started} not started")
            lines.append(f"not done: {', '.join(reasons)}")
        lines.append(f"images in {self.out}/, manifest {self.manifest}")
        if self.stopped:
            lines.append(
                f"stopped early: {self.stopped}; {self.pending} job(s) pending: "
                "run the same batch again (same manifest) to resume"
            )
        return "\n".join(lines)

    @property
    def not_started(self) -> int:
        """Jobs with no outcome at all in this run or an earlier one (after an early stop or Ctrl-C)."""
        return self.pending - self.failed


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`. ``result`` holds what was done; finished jobs are in the manifest,
    so running the same batch again resumes it."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        super().__init__(
            f"batch interrupted: {result.succeeded} of {result.total} done; run it again with the same "
            f"manifest ({result.manifest}) to resume"
        )


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


def _count(result: BatchResult, status: str, reason: str | None = None) -> None:
    if status == "succeeded":
        result.succeeded += 1
    elif status == "content_filtered":
        result.content_filtered += 1
    elif status == "blocked":
        result.blocked += 1
    elif status == "invalid":
        result.invalid += 1
    else:
        result.failed += 1
    if status != "succeeded":
        result.failures[reason or status] += 1


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
        from ._requests import ClientSettings, prepare_edit, prepare_json

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
            from ._client import AsyncStepFun

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
    from ._client import AsyncStepFun

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
