"""The ``generate``, ``image2image``, ``edit``, ``batch`` and ``models`` subcommands.

The flags and their help come from the catalog, so ``--help`` shows each model's ranges and
defaults. Importing this module is cheap (argparse and the catalog); the client, the batch
runner and the emulator load when a command runs.

Exit codes: 0 done; 1 an API error, or some batch jobs did not produce an image; 2 a usage
error, an invalid parameter or no API key; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import catalog

if TYPE_CHECKING:
    from ._client import StepFun
    from .types import StepFunImagesResponse
__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "add_image_commands", "add_models_command"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EMULATOR_CONCURRENCY = 5
"""``batch --emulator`` without limits: 5 in flight, no RPM cap."""

_ENDPOINT_OF = {"generate": "generations", "image2image": "image2image", "edit": "edits"}
_DEFAULT_MODEL = {"generate": "step-image-edit-2", "image2image": "step-2x-large", "edit": "step-image-edit-2"}
_EXIT_CODES_HELP = "exit codes: 0 ok; 1 API error or some jobs failed; 2 usage error or no API key; 130 interrupted"


class _UsageError(Exception):
    """A one-line error that exits with code 2."""


# --- help text from the catalog -----------------------------------------------------------------


def _specs(endpoints: Sequence[catalog.Endpoint]) -> list[tuple[str, catalog.EndpointSpec]]:
    return [
        (name, spec)
        for name, model in catalog.MODELS.items()
        for endpoint in endpoints
        if (spec := model.spec(endpoint)) is not None
    ]


def _per_model(endpoints: Sequence[catalog.Endpoint], describe: Callable[[catalog.EndpointSpec], str | None]) -> str:
    parts = []
    seen: set[str] = set()
    for name, spec in _specs(endpoints):
        text = describe(spec)
        if text is not None and name not in seen:
            seen.add(name)
            parts.append(f"{name}: {text}")
    return "; ".join(parts)


def _models_with(endpoints: Sequence[catalog.Endpoint], has: Callable[[catalog.EndpointSpec], object]) -> str:
    names = dict.fromkeys(name for name, spec in _specs(endpoints) if has(spec))
    return "models: " + ", ".join(names)


def _range(number: catalog.NumberRange) -> str:
    low, high = catalog._num(number.min), catalog._num(number.max)
    text = f"{low}..{high}"
    if number.default is not None:
        text += f", default {catalog._num(number.default)}"
    return text


def _sizes(spec: catalog.EndpointSpec) -> str:
    if spec.sizes is None:
        return "ignored (output size = input size)"
    order = " (HEIGHTxWIDTH)" if spec.size_order == "HxW" else ""
    return f"{', '.join(spec.sizes)}{order}, default {spec.default_size}"


def _add_parameters(parser: argparse.ArgumentParser, command: str, *, batch: bool = False) -> None:
    endpoints: list[catalog.Endpoint] = (
        list(catalog.ENDPOINTS) if batch else [_ENDPOINT_OF[command]]  # type: ignore[list-item]
    )
    group = parser.add_argument_group(
        "StepFun parameters (not given = not sent: StepFun applies the defaults shown)"
        + (" — for the jobs that do not set them" if batch else "")
    )
    models = [name for name, _ in _specs(endpoints)]
    models = list(dict.fromkeys(models))
    default_model = None if batch else _DEFAULT_MODEL[command]
    model_help = f"one of {', '.join(models)}"
    if batch:
        model_help += "; default per endpoint: " + ", ".join(f"{k} {v}" for k, v in _DEFAULT_MODEL.items())
    else:
        model_help += " (default: %(default)s)"
    group.add_argument("--model", default=default_model, help=model_help)
    group.add_argument("--size", help="per model: " + _per_model(endpoints, _sizes))
    group.add_argument(
        "--seed", type=int, help=f"0..{catalog.SEED_MAX}; omitted or 0 = random (the seed used is printed)"
    )
    group.add_argument("--steps", type=int, help="per model: " + _per_model(endpoints, lambda s: _range(s.steps)))
    group.add_argument(
        "--cfg-scale", type=float, help="per model: " + _per_model(endpoints, lambda s: _range(s.cfg_scale))
    )
    negative = _per_model(
        endpoints, lambda s: f"at most {s.negative_prompt_max} chars" if s.negative_prompt_max else None
    )
    if negative:
        group.add_argument("--negative-prompt", help=f"what to avoid; {negative}; ignored when cfg_scale is 1.0")
    text_mode = _models_with(endpoints, lambda s: s.text_mode)
    if text_mode:
        group.add_argument(
            "--text-mode",
            action="store_true",
            default=None,
            help="better text rendering (default off); " + _models_with(endpoints, lambda s: s.text_mode),
        )
    if command == "generate" and not batch:
        group.add_argument(
            "--style-reference",
            metavar="IMAGE",
            help="an image (path, URL) whose style to borrow; " + _models_with(endpoints, lambda s: s.style_reference),
        )
        group.add_argument(
            "--style-weight", type=float, help=f"with --style-reference: {catalog.STYLE_WEIGHT.describe()}"
        )
        group.add_argument(
            "--source-image",
            metavar="IMAGE",
            help="an image to start from (prefer image2image); " + _models_with(endpoints, lambda s: s.source_image),
        )
        group.add_argument("--source-weight", type=float, help="with --source-image: (0, 1], smaller = closer")
    if command == "image2image" and not batch:
        group.add_argument(
            "--source-url",
            "--source",
            required=True,
            metavar="IMAGE",
            help="the source image: a path or an http(s) URL (png/jpeg, at most 10 MB and 2048x2048)",
        )
        group.add_argument(
            "--source-weight",
            type=float,
            required=True,
            help="(0, 1]; smaller = closer to the source, 1 = ignore it (0.8-1.0 variations, 0.3-0.8 small edits)",
        )
    if command == "edit" and not batch:
        group.add_argument(
            "--image",
            required=True,
            metavar="IMAGE",
            help="the image to edit (path); "
            + _per_model(endpoints, lambda s: s.image_limits.describe() if s.image_limits else None),
        )
    group.add_argument("--n", type=int, help="images per request: only 1 is supported")


def _add_connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--emulator",
        action="store_true",
        help="run against a local in-process emulator instead of StepFun (no key needed, nothing billed)",
    )
    group.add_argument("--base-url", help="API base URL (default: $STEPFUN_BASE_URL, then https://api.stepfun.com/v1)")
    group.add_argument("--debug", action="store_true", help="show tracebacks and the client's retry warnings")


# --- the subcommands ----------------------------------------------------------------------------


def add_image_commands(subparsers: Any) -> None:
    """``generate``, ``image2image``, ``edit`` and ``batch``."""
    descriptions = {
        "generate": "Text to image (POST /images/generations).",
        "image2image": "Image to image (POST /images/image2image).",
        "edit": "Edit an image by instruction (POST /images/edits).",
    }
    for command, description in descriptions.items():
        parser = subparsers.add_parser(
            command,
            help=description.split(" (")[0].lower(),
            description=description,
            epilog=_EXIT_CODES_HELP,
        )
        parser.add_argument("prompt", help="the prompt or instruction")
        parser.add_argument(
            "--out",
            default=".",
            help="output file, or a directory (ends with / or exists) for <prompt>-<seed>.png (default: .)",
        )
        _add_parameters(parser, command)
        _add_connection(parser)
        parser.set_defaults(handler=_guarded(_single), endpoint=command)

    parser = subparsers.add_parser(
        "batch",
        help="many images at the account's rate limit, resumable",
        description=(
            "Run every job of JOBS: a JSONL file (one job object a line, with the keys of the Python API and "
            "optional 'endpoint' and 'id') or a text file (one prompt a line). Finished jobs are recorded in "
            "the manifest; running the same command again skips them."
        ),
        epilog=_EXIT_CODES_HELP,
    )
    parser.add_argument("jobs", metavar="JOBS", help="a .jsonl file of jobs or a text file of prompts")
    parser.add_argument("--out", required=True, help="the directory for the images")
    parser.add_argument("--manifest", help="the JSONL manifest (default: OUT/manifest.jsonl)")
    limits = parser.add_argument_group(
        "limits (default: tier V0, 5 concurrent and 10 requests/minute, or with --emulator 5 concurrent and "
        "no RPM cap; explicit values win over --tier)"
    )
    limits.add_argument("--concurrency", type=int, help="requests in flight at most")
    limits.add_argument("--rpm", type=int, help="requests per minute at most")
    tiers = ", ".join(f"{k} {c}/{r}" for k, (c, r) in catalog.RATE_LIMIT_TIERS.items())
    limits.add_argument(
        "--tier", choices=list(catalog.RATE_LIMIT_TIERS), help=f"your account's tier (concurrent/RPM): {tiers}"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    scale = parser.add_argument_group(
        "many workers, one account (--out may then be any fsspec URL, e.g. s3://bucket/prefix; "
        "the manifest is one shard per worker under OUT/manifest.d/)"
    )
    scale.add_argument(
        "--workers", type=int, help="worker processes sharing the account's limits (Ray if installed, else local)"
    )
    scale.add_argument(
        "--ray",
        nargs="?",
        const=True,
        metavar="ADDRESS",
        help="run on Ray: the running or a new local Ray, or the cluster at ADDRESS (write --ray=ADDRESS, "
        "or put JOBS first); needs pip install 'stepfun-openai[ray]'",
    )
    _add_parameters(parser, "generate", batch=True)
    _add_connection(parser)
    parser.set_defaults(handler=_guarded(_batch))


def add_models_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "models", help="the model catalog as a table", description="StepFun's image models, per endpoint."
    )
    parser.set_defaults(handler=_models)


# --- running ------------------------------------------------------------------------------------


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """One line per error (a traceback with --debug) and the documented exit codes."""

    def run(args: argparse.Namespace) -> int:
        import openai

        from ._client import MissingAPIKeyError
        from ._exceptions import StepFunValidationError, get_trace_id
        from .batch._manifest import ManifestLockedError

        try:
            with _quiet_logs(debug=getattr(args, "debug", False)):
                return handler(args)
        except KeyboardInterrupt as exc:
            message = str(exc) or "interrupted"
            _error(f"{message}", args)
            return EXIT_INTERRUPTED
        except (
            _UsageError,
            StepFunValidationError,
            MissingAPIKeyError,
            ManifestLockedError,
            ValueError,
            OSError,
        ) as exc:
            _error(str(exc), args)
            return EXIT_USAGE
        except openai.APIError as exc:
            status = getattr(exc, "status_code", None)
            trace = get_trace_id(exc)
            text = f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + f": {exc}"
            if trace:
                text += f" [trace id {trace}]"
            _error(text, args)
            return EXIT_FAILED

    return run


@contextlib.contextmanager
def _quiet_logs(*, debug: bool) -> Iterator[None]:
    """stderr stays one line: the client's "retrying" warnings show only with ``--debug``."""
    import logging

    logger = logging.getLogger("stepfun_openai")
    previous = logger.level
    logger.setLevel(logging.DEBUG if debug else logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _error(message: str, args: argparse.Namespace) -> None:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"stepfun-openai: error: {' '.join(message.split())}", file=sys.stderr)


@contextlib.contextmanager
def _connection(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Client settings: an in-process emulator with ``--emulator``, else the key from the environment."""
    if args.emulator:
        from .emulator import Emulator

        with Emulator() as emulator:
            yield {"api_key": emulator.api_key, "base_url": emulator.base_url}
        return
    if not any(os.environ.get(name) for name in ("STEPFUN_API_KEY", "STEP_API_KEY")):
        raise _UsageError(
            "no API key: set STEPFUN_API_KEY (or STEP_API_KEY), or add --emulator to try a local emulator"
        )
    yield {"base_url": args.base_url} if args.base_url else {}


def _params(args: argparse.Namespace, command: str) -> dict[str, Any]:
    names = (
        "model",
        "size",
        "seed",
        "steps",
        "cfg_scale",
        "negative_prompt",
        "text_mode",
        "n",
        "source_url",
        "source_weight",
        "source_image",
        "image",
    )
    params = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    style = getattr(args, "style_reference", None)
    if style is not None:
        from .types import StyleReference

        params["style_reference"] = StyleReference(style, getattr(args, "style_weight", None))
    elif getattr(args, "style_weight", None) is not None:
        raise _UsageError("--style-weight needs --style-reference")
    return params


def _output_path(out: str, prompt: str, seed: int | None, index: int, extension: str) -> Path:
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        suffix = f"-{index}" if index else ""
        from ._results import slugify

        return path / f"{slugify(prompt, limit=48)}-{seed if seed is not None else 'image'}{suffix}{extension}"
    return path if not index else path.with_name(f"{path.stem}-{index}{path.suffix}")


def _single(args: argparse.Namespace) -> int:
    from ._client import StepFun

    command: str = args.endpoint
    params = _params(args, command)
    params["response_format"] = "b64_json"
    with _connection(args) as connection:
        client: StepFun = StepFun(**connection)
        with client:
            method: Callable[..., StepFunImagesResponse] = getattr(client.images, command)
            response = method(prompt=args.prompt, **params)
    written = 0
    for index, image in enumerate(response.images):
        if image.content_filtered:
            print(f"image {index} was content_filtered by StepFun moderation (seed {image.seed}); not written")
            continue
        path = _output_path(args.out, args.prompt, image.seed, index, image._extension())
        image.save(path)  # atomic, with the request's provenance in the file
        written += 1
        print(f"wrote {path} (seed {image.seed})")
    return EXIT_OK if written else EXIT_FAILED


def _batch(args: argparse.Namespace) -> int:
    from . import batch
    from ._client import StepFun

    jobs = batch.load_jobs(args.jobs)
    defaults = _params(args, "generate")
    concurrency = args.concurrency
    if args.emulator and args.concurrency is None and args.rpm is None and args.tier is None:
        # The in-process emulator has no limits: tier V0's 10/minute would only slow the demo down.
        concurrency = EMULATOR_CONCURRENCY
        limits = batch.Limits(concurrency, None, "--emulator default: the local emulator has no limits")
    else:
        limits = batch.resolve_limits(concurrency=args.concurrency, rpm=args.rpm, tier=args.tier)
    if args.workers is not None or args.ray is not None:
        return _batch_distributed(args, jobs, defaults, concurrency, limits)
    manifest = Path(args.manifest) if args.manifest else Path(args.out) / "manifest.jsonl"
    print(f"{len(jobs)} jobs from {args.jobs}; limits: {limits.describe()}", file=sys.stderr)
    # batch.run sends with an async twin of this client, made in its own event loop.
    with _connection(args) as connection, StepFun(**connection) as client:
        try:
            result = batch.run(
                jobs,
                out=args.out,
                manifest=manifest,
                client=client,
                concurrency=concurrency,
                rpm=args.rpm,
                tier=args.tier,
                defaults=defaults,
                progress=not args.no_progress,
            )
        except batch.BatchInterrupted as exc:
            done = exc.result
            command = shlex.join(["stepfun-openai", *sys.argv[1:]]) if sys.argv[1:] else "the same command"
            raise KeyboardInterrupt(
                f"interrupted: {done.succeeded} of {done.total} images done and recorded in {manifest}; "
                f"resume with: {command}"
            ) from None
    print(result.summary())
    if result.stopped:
        return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def _batch_distributed(
    args: argparse.Namespace, jobs: list[Any], defaults: dict[str, Any], concurrency: int | None, limits: Any
) -> int:
    """``batch --workers N`` / ``--ray [ADDRESS]``: the same jobs on many workers, one account-wide limit."""
    from . import batch
    from ._client import StepFun

    if args.manifest:
        raise _UsageError(
            "--manifest does not apply with --workers/--ray: each worker keeps a shard in OUT/manifest.d/"
        )
    workers = 2 if args.workers is None else args.workers
    if workers < 1:
        raise _UsageError(f"--workers must be a positive integer, got {workers}")
    where = "Ray workers" if args.ray is not None else "workers"
    print(f"{len(jobs)} jobs from {args.jobs} on {workers} {where}; limits: {limits.describe()}", file=sys.stderr)
    with _connection(args) as connection, StepFun(**connection) as client:
        try:
            result = batch.run_distributed(
                jobs,
                out=args.out,
                workers=workers,
                ray=args.ray,
                client=client,
                concurrency=concurrency,
                rpm=args.rpm,
                tier=args.tier,
                defaults=defaults,
                progress=not args.no_progress,
            )
        except ImportError as exc:  # Ray or fsspec missing: the message names the extra
            raise _UsageError(str(exc)) from None
        except batch.BatchInterrupted as exc:
            done = exc.result
            command = shlex.join(["stepfun-openai", *sys.argv[1:]]) if sys.argv[1:] else "the same command"
            raise KeyboardInterrupt(
                f"interrupted: {done.succeeded} of {done.total} images done and recorded in {args.out}; "
                f"resume with: {command}"
            ) from None
    print(result.summary())
    if result.stopped:
        return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def _models(args: argparse.Namespace) -> int:
    header = ("MODEL", "ENDPOINT", "STATUS", "SIZES (default first)", "STEPS", "CFG_SCALE", "EXTRAS")
    rows = [header]
    for name, model in catalog.MODELS.items():
        status = model.status + (f" {model.retired_on} -> {model.replacement}" if model.retired_on else "")
        for endpoint, spec in model.endpoints.items():
            if spec.sizes is None:
                sizes = "= input size"
            else:
                ordered = [s for s in spec.sizes if s == spec.default_size] + [
                    s for s in spec.sizes if s != spec.default_size
                ]
                sizes = " ".join(ordered) + (" (HxW)" if spec.size_order == "HxW" else "")
            extras = [
                flag
                for flag, present in (
                    ("negative_prompt", spec.negative_prompt_max),
                    ("text_mode", spec.text_mode),
                    ("style_reference", spec.style_reference),
                    ("source_image", spec.source_image),
                )
                if present
            ]
            rows.append((name, endpoint, status, sizes, _range(spec.steps), _range(spec.cfg_scale), ", ".join(extras)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    tiers = ", ".join(f"{k} {c}/{r}" for k, (c, r) in catalog.RATE_LIMIT_TIERS.items())
    print(f"\nrate limits per tier (concurrent/RPM): {tiers}")
    return EXIT_OK
