"""Jobs: what a batch is asked to do, their stable ids, and how they are described in the manifest."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .. import catalog
from .._cost import Cost
from .._exceptions import StepFunValidationError
from .._inputs import MAX_INPUT_BYTES, open_image_file, read_bounded
from .._urls import is_data_url, is_http_url

__all__ = ["DEFAULT_MODELS", "Job", "JobEndpoint", "content_id", "load_jobs"]

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
        if isinstance(job_id, str) and _printable(job_id) != job_id:
            raise ValueError(f"a job's id must be text UTF-8 can encode, got {job_id!r}")
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
    lines = [(number, line.strip()) for number, line in _read_lines(source)]
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
        except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits; deep nesting
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            jobs.append(_invalid_line(source, number, line, f"not a usable JSON object ({reason})"))
            continue
        try:
            job = Job.from_dict(data)
        except (TypeError, ValueError) as exc:
            jobs.append(_invalid_line(source, number, line, str(exc)))
            continue
        jobs.append(_resolve_paths(job, source.parent))
    return jobs


MAX_JOBS_FILE_BYTES = 1024 * 1024 * 1024
"""The most a jobs file is read to (1 GiB: millions of jobs; a job's images go by path or URL)."""
MAX_JOB_LINE_BYTES = MAX_INPUT_BYTES * 4 // 3 + 64 * 1024
"""The longest line a jobs file may have: one job with the largest inline image (base64) there is."""


def _read_lines(source: Path) -> Iterable[tuple[int, str]]:
    """``(number, line)`` of ``source``, read line by line within :data:`MAX_JOB_LINE_BYTES` a line
    and :data:`MAX_JOBS_FILE_BYTES` in all (a pipe such as ``/dev/stdin`` works; ``/dev/zero`` or
    a runaway file is refused, never read into memory whole). Bytes that are not UTF-8 become lone
    surrogates: that line's job is refused, not the file."""
    total = 0
    with open(source, "rb") as handle:
        for number in itertools.count(1):
            raw = handle.readline(MAX_JOB_LINE_BYTES + 1)
            if not raw:
                return
            total += len(raw)
            if len(raw) > MAX_JOB_LINE_BYTES:
                raise ValueError(
                    f"{source}:{number}: a line of more than {MAX_JOB_LINE_BYTES:,} bytes: not a jobs file "
                    "(one job a line; give large images by path or URL)"
                )
            if total > MAX_JOBS_FILE_BYTES:
                raise ValueError(
                    f"{source}: more than {MAX_JOBS_FILE_BYTES:,} bytes of jobs: split it into several batches"
                )
            yield number, raw.decode("utf-8", "surrogateescape").rstrip("\r\n")


def _invalid_line(source: Path, number: int, line: str, reason: str) -> Job:
    """A line that is not a job: an ``invalid`` job whose id is stable for the same line."""
    digest = hashlib.sha256(_utf8(f"{number}:{line}")).hexdigest()[:12]
    excerpt = _printable(line if len(line) <= 200 else line[:200] + "...")
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
    return not (is_http_url(value) or is_data_url(value)) and len(value) < 1024


def _canonical(value: Any, key: str | None = None) -> Any:
    """A JSON-able stand-in for ``value`` that changes when the content does (images hashed,
    including the bytes of an image given as a file path)."""
    if key in _IMAGE_KEYS and isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if isinstance(text, str) and _looks_like_path(text):
            digest = _file_digest(text)
            if digest is not None:
                return {"path": text, "sha256": digest}
    if type(value) is int and value.bit_length() > 64:  # json.dumps refuses past 4300 digits
        digest = hashlib.sha256(value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)).hexdigest()
        return {"int": digest}
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
        return {"sha256": _stream_digest(value)}
    return {"repr": _repr(value)}


def _stream_digest(handle: Any) -> str:
    """The sha256 of what a file object holds from where it stands, read in bounded pieces (a
    file object that never ends is hashed up to the limit, and refused when the job is prepared)."""
    position = handle.tell()
    digest = hashlib.sha256()
    try:
        for piece in read_bounded(handle, param="image", shown=handle, limit=_HASH_FILES_UP_TO):
            digest.update(piece)
    except StepFunValidationError as exc:
        return f"unreadable: {exc.allowed}"
    finally:
        handle.seek(position)
    return digest.hexdigest()


_HASH_FILES_UP_TO = 64 * 1024 * 1024
"""Image files up to this size are hashed into the job id (StepFun takes at most 10 MB anyway)."""


def _file_digest(path: str) -> str | None:
    """The sha256 of the file at ``path`` (``None`` if there is none), so that editing a source
    image in place gives its job a new id."""
    try:
        target = Path(path)
        if not target.is_file():
            return None  # a FIFO or a device is never opened here (the request refuses it by name)
        size = target.stat().st_size
        if size > _HASH_FILES_UP_TO:
            return f"size {size}, mtime {target.stat().st_mtime_ns}"
        digest = hashlib.sha256()
        with open_image_file(path, param="image", limit=_HASH_FILES_UP_TO) as handle:
            for piece in read_bounded(handle, param="image", shown=path, limit=_HASH_FILES_UP_TO):
                digest.update(piece)
        return digest.hexdigest()
    except StepFunValidationError:  # swapped or grown since the stat: the request will say why
        return None
    except (OSError, ValueError):
        return None


_NOT_IN_ID = frozenset({"response_format", "fit"})
"""Not part of a job's identity: the batch always asks for ``b64_json``, and ``fit`` only decides
whether an image that does not fit is converted or refused (so adding ``fit`` to a batch that
made most of its images does not make them again)."""


def content_id(endpoint: str, params: Mapping[str, Any]) -> str:
    """The id of a job without one: a hash of its endpoint and parameters."""
    canonical = {
        "endpoint": endpoint,
        "params": _canonical({k: v for k, v in params.items() if k not in _NOT_IN_ID}),
    }
    digest = hashlib.sha256(_utf8(json.dumps(canonical, sort_keys=True, ensure_ascii=False))).hexdigest()
    return digest[:16]


def _safe_id(job_id: str) -> str:
    """``job_id`` as a piece of a file name (an id that had to change gets a hash of itself)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", job_id).strip("._")[:80] or "job"
    if safe != job_id:
        safe += "-" + hashlib.sha256(_utf8(job_id)).hexdigest()[:8]
    return safe


def _file_stems(works: list[_Work]) -> None:
    """Name each job's images: ``<prompt slug>-<job id>`` (the package's one scheme,
    :func:`~stepfun_openai._results.image_stem`, tagged with the job id instead of the seed).

    The id is unique in the batch and the same on every run, so a resumed job writes the file
    its earlier attempt would have. Two jobs whose names would still meet (user-given ids such
    as ``b-c`` under prompt ``a`` and ``c`` under ``a b``; or ``A`` and ``a`` on a
    case-insensitive disk) get a hash of their id appended, decided by the job list alone, so
    resuming the same list gives the same names. Manifests written by earlier versions (files
    named ``<job id>.png``) resume as well: finished jobs are skipped by id, their files kept."""
    from .._results import image_stem

    taken: set[str] = set()
    for work in works:
        prompt = work.params.get("prompt")
        stem = image_stem(prompt if isinstance(prompt, str) else None, _safe_id(work.id))
        if stem.casefold() in taken:
            stem += "-" + hashlib.sha256(work.id.encode()).hexdigest()[:8]
        taken.add(stem.casefold())
        work.stem = stem


def describe_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters for the manifest: image payloads become a short description, never base64,
    wherever they are (top level, ``extra_body``, a ``style_reference``)."""
    return {str(k): _describe_value(v, str(k)) for k, v in params.items()}


def _utf8(text: str) -> bytes:
    """UTF-8 that a lone surrogate (a JSONL line's ``"\\ud800"``, or a byte that was not UTF-8)
    cannot break: hashing and ids never fail on the text a job holds."""
    return text.encode("utf-8", "surrogatepass")


def _repr(value: object) -> str:
    """``repr``, or the type's name for a value that has none (an integer of over 4300 digits)."""
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _printable(text: str) -> str:
    """``text`` with lone surrogates replaced, for the manifest (a UTF-8 file)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace") if not text.isascii() else text


def describe_value(value: Any, key: str | None = None) -> Any:
    """One value for the manifest (see :func:`describe_params`); writable whatever it is."""
    return _describe_value(value, key)


def _describe_value(value: Any, key: str | None) -> Any:
    if type(value) is int and value.bit_length() > 64:
        return f"<integer of {value.bit_length()} bits>"
    if type(value) is str and not value.isascii():
        value = _printable(value)
    if key not in _IMAGE_KEYS and (
        value is None or type(value) in (bool, int, float) or (type(value) is str and len(value) <= _LONG_STRING)
    ):
        return value  # most parameters: nothing to describe
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
    return f"<inline image, {len(text)} chars, sha256 {hashlib.sha256(_utf8(text)).hexdigest()[:16]}>"


def _describe_image(value: Any) -> Any:
    if isinstance(value, str):
        if is_http_url(value):
            return value if len(value) < 2048 else value[:2048]
        if value.startswith("data:") or len(value) > _LONG_STRING:
            return _digest_of(value)
        return _printable(value)  # a path
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
    stem: str = ""  # its images' file name, without the number and extension (_file_stems)
    attempts: int = 0
    rate_limited: int = 0
    billed: Cost | None = None  # what StepFun billed for it (set once it answered with an image)


def _allowed_params(endpoint: JobEndpoint) -> set[str]:
    """What a job for ``endpoint`` may set: the method's parameters, ``fit`` and ``extra_body``."""
    from .._requests import PARAMETERS

    return set(PARAMETERS[_CATALOG_ENDPOINT[endpoint]] | {"fit", "extra_body"}) - _NOT_JOB_PARAMS


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


def _serves(model: object, endpoint: JobEndpoint) -> bool:
    """Whether a default ``model`` applies to a job of ``endpoint``: the catalog says the model
    serves it, or the catalog does not know the model (then StepFun, or validation, says)."""
    spec = catalog.get_model(model) if isinstance(model, str) else None
    return spec is None or spec.spec(_CATALOG_ENDPOINT[endpoint]) is not None


def _prepare(items: Iterable[Job | Mapping[str, Any] | str], defaults: Mapping[str, Any]) -> list[_Work]:
    """The jobs as work: defaults applied, ids given, unknown parameters marked invalid.

    A parameter in ``defaults`` applies to every job whose endpoint takes it and that does not set
    it, except ``model``: a default model applies only to the jobs whose endpoint it serves (a
    generation model never lands on an edit job, which keeps its own default model)."""
    _check_defaults(defaults)
    works: list[_Work] = []
    seen: Counter[str] = Counter()
    explicit: dict[str, int] = {}
    allowed = {endpoint: _allowed_params(endpoint) for endpoint in DEFAULT_MODELS}
    for index, item in enumerate(items):
        try:
            job = _as_job(item)
        except (TypeError, ValueError) as exc:
            job_id = "invalid-" + hashlib.sha256(_utf8(_repr(item))).hexdigest()[:12]
            raw = {str(k): v for k, v in item.items()} if isinstance(item, Mapping) else {"job": _repr(item)[:200]}
            works.append(_Work(index, job_id, "generate", raw, invalid=str(exc)))
            continue
        if job.error is not None:
            job_id = job.id or "invalid-" + hashlib.sha256(_utf8(_repr(job.params))).hexdigest()[:12]
            works.append(_Work(index, job_id, job.endpoint, dict(job.params), invalid=job.error))
            continue
        if isinstance(job.id, str) and _printable(job.id) != job.id:
            job_id = "invalid-" + hashlib.sha256(_utf8(job.id)).hexdigest()[:12]
            reason = f"a job's id must be text UTF-8 can encode, got {job.id!r}"
            works.append(_Work(index, job_id, job.endpoint, dict(job.params), invalid=reason))
            continue
        applied = {
            k: v
            for k, v in defaults.items()
            if k in allowed[job.endpoint] and (k != "model" or _serves(v, job.endpoint))
        }
        params = {**applied, **job.params}
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
            try:
                base = content_id(job.endpoint, params)
            except RecursionError:
                reason = "parameters nested too deeply"
                job_id = "invalid-" + hashlib.sha256(str(index).encode()).hexdigest()[:12]
                works.append(_Work(index, job_id, job.endpoint, {"model": params.get("model")}, invalid=reason))
                continue
            seen[base] += 1
            # The same job twice means two images: the second gets its own id, stable by order.
            job_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        invalid = None
        if unknown:
            known = ", ".join(sorted(allowed[job.endpoint]))
            invalid = f"unknown parameter(s) {', '.join(unknown)} for {job.endpoint}; known: {known}"
        works.append(_Work(index, job_id, job.endpoint, params, invalid=invalid))
    _file_stems(works)
    return works
