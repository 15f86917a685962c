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


def _serving() -> str:
    """``step-image-edit-2 generations/edits; ...``: which endpoints each model serves."""
    return "; ".join(f"{name} {'/'.join(model.endpoints)}" for name, model in catalog.MODELS.items())


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
        model_help = (
            f"the model of the jobs that name none, for each endpoint it serves ({_serving()}); jobs of "
            "the other endpoints keep their own default: " + ", ".join(f"{k} {v}" for k, v in _DEFAULT_MODEL.items())
        )
    else:
        model_help += " (default: %(default)s)"
    group.add_argument("--model", default=default_model, help=model_help)
    if batch:
        for endpoint in ("image2image", "edit"):
            serving = ", ".join(catalog.models_for(_ENDPOINT_OF[endpoint]))  # type: ignore[arg-type]
            group.add_argument(
                f"--{endpoint}-model",
                metavar="MODEL",
                help=f"the model of the {endpoint} jobs that name none (wins over --model): one of {serving}",
            )
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
    group.add_argument("--n", type=int, help="images: n requests at once (1..10; StepFun makes one image per request)")
    group.add_argument(
        "--fit",
        action="store_true",
        default=None,
        help="convert or scale an input image the model would reject (format, pixels, bytes) instead of "
        "refusing it; each change is reported (needs Pillow: pip install 'stepfun-openai[pil]')",
    )


def _add_connection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--emulator",
        action="store_true",
        help="run against a local in-process emulator instead of StepFun (no key needed, nothing billed)",
    )
    group.add_argument("--base-url", help="API base URL (default: $STEPFUN_BASE_URL, then https://api.stepfun.com/v1)")
    group.add_argument(
        "--region",
        choices=["mainland", "international"],
        help="whose prices apply (yuan or dollars) when the host does not say: a proxy or an emulator "
        "(StepFun's hosts say it themselves; --emulator charges mainland prices)",
    )
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
            help="output file, or a directory (ends with / or exists) for <prompt>-<seed>.png; the extension "
            "follows the image's real format (fox.jpg holding a PNG is written as fox.png) (default: .)",
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
            "the manifest; running the same command again skips them. The StepFun parameters below are "
            "defaults for the jobs that do not set them, each applied to the jobs whose endpoint takes it; "
            "--model only to the endpoints that model serves. Jobs refused as invalid are listed at the end "
            "(the first few with their reasons; the manifest has them all)."
        ),
        epilog=_EXIT_CODES_HELP,
    )
    parser.add_argument("jobs", metavar="JOBS", help="a .jsonl file of jobs or a text file of prompts")
    parser.add_argument(
        "--out", required=True, help="the directory for the images, named <prompt>-<job id>.png (stable on resume)"
    )
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
    money = parser.add_argument_group("money")
    money.add_argument(
        "--max-spend",
        metavar="AMOUNT",
        help="a budget in the account's currency: the spend (in flight and earlier runs included) never "
        "passes it; the jobs it leaves stay pending for a later run",
    )
    money.add_argument(
        "--dry-run",
        action="store_true",
        help="print the job count, the estimated cost and the balance; generate nothing",
    )
    money.add_argument(
        "--allow-partial",
        action="store_true",
        help="start even when the balance is lower than the estimated cost (the batch stops cleanly at the 402)",
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
        from .batch._budget import BudgetError
        from .batch._manifest import ManifestLockedError

        try:
            with _quiet_logs(debug=getattr(args, "debug", False)), _one_line_warnings():
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
            _error(_for_the_command_line(exc), args)
            return EXIT_USAGE
        except BudgetError as exc:
            _error(str(exc).replace("allow_partial=True, ", ""), args)
            return EXIT_FAILED
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


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings reach stderr as one line each, ``stepfun-openai: warning: ...``: a retired model
    (a ``DeprecationWarning``, which Python hides outside ``__main__``), what ``--fit`` changed."""
    import warnings

    def show(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
        text = _command_line_text(" ".join(str(message).split())).replace("fit=True changed", "--fit changed")
        print(f"stepfun-openai: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct warning once, DeprecationWarning included
        warnings.showwarning = show
        yield


def _for_the_command_line(exc: BaseException) -> str:
    """An error's text as the command line can act on it: ``--fit`` for ``fit=True``, and no
    ``validate=False`` advice (a Python client's option; the command has no such flag)."""
    from ._exceptions import StepFunValidationError

    return _command_line_text(exc.reason if isinstance(exc, StepFunValidationError) else str(exc))


def _command_line_text(text: str) -> str:
    from ._exceptions import VALIDATE_FALSE_HINT

    return (
        text.replace(VALIDATE_FALSE_HINT, "")
        .replace("pass fit=True", "add --fit")
        .replace("pass StepFun(region=...)", "add --region")
    )


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
            yield {"api_key": emulator.api_key, "base_url": emulator.base_url, "region": args.region or "mainland"}
        return
    if not any(os.environ.get(name) for name in ("STEPFUN_API_KEY", "STEP_API_KEY")):
        raise _UsageError(
            "no API key: set STEPFUN_API_KEY (or STEP_API_KEY), or add --emulator to try a local emulator"
        )
    settings: dict[str, Any] = {"base_url": args.base_url} if args.base_url else {}
    if args.region:
        settings["region"] = args.region
    yield settings


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
        "fit",
    )
    params = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    style = getattr(args, "style_reference", None)
    if style is not None:
        from .types import StyleReference

        params["style_reference"] = StyleReference(style, getattr(args, "style_weight", None))
    elif getattr(args, "style_weight", None) is not None:
        raise _UsageError("--style-weight needs --style-reference")
    return params


_IMAGE_SUFFIXES = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".gif": "gif"}


def _output_path(out: str, prompt: str, seed: int | None, index: int, extension: str) -> tuple[Path, bool]:
    """Where ``--out`` puts an image: in a directory ``<prompt slug>-<seed><ext>`` (the package's
    one scheme, ``image_stem``); a file name keeps its name, with the extension of the image's
    real format (``fox.jpg`` receiving a PNG is written as ``fox.png``: StepFun's bytes stay as
    they came, with their provenance, and no file claims a format it is not). The flag says
    whether the name was made up in a directory (never replacing a file there) rather than given
    by the user (replaced)."""
    path = Path(out)
    if _is_directory(out):
        from ._results import image_stem

        # Each image of --n has its own seed, so its own name; a taken name gets -2, -3, ... on write.
        return path / f"{image_stem(prompt, seed)}{extension}", True
    if _IMAGE_SUFFIXES.get(path.suffix.lower()) != _IMAGE_SUFFIXES[extension]:
        path = path.with_suffix(extension) if path.suffix.lower() in _IMAGE_SUFFIXES else Path(f"{path}{extension}")
    return (path if not index else path.with_name(f"{path.stem}-{index}{path.suffix}")), False


def _is_directory(out: str) -> bool:
    path = Path(out)
    return out.endswith(("/", os.sep)) or path.is_dir() or not path.suffix


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
        extension = image._extension()
        path, made_up = _output_path(args.out, args.prompt, image.seed, index, extension)
        if not made_up and path.suffix != Path(args.out).suffix and not index:
            kind = _IMAGE_SUFFIXES[extension].upper()
            print(f"stepfun-openai: note: StepFun sent a {kind} image: writing {path.name}", file=sys.stderr)
        # Atomic, with the request's provenance in the file. In a directory, a file (or sidecar)
        # already under the name is never replaced: the next free name (``-2``, ...) is used.
        path = image._write(path, image.read(), metadata=True, exclusive=made_up)
        written += 1
        size, cost = image._context.get("size"), image.cost
        details = [f"seed {image.seed}", *([f"size {size}"] if size else []), *([f"cost {cost}"] if cost.known else [])]
        print(f"wrote {path} ({', '.join(details)})")
    return EXIT_OK if written else EXIT_FAILED


def _batch(args: argparse.Namespace) -> int:
    from . import batch
    from ._client import StepFun

    jobs = _with_endpoint_models(batch.load_jobs(args.jobs), args)
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
    if args.dry_run:
        with _connection(args) as connection, StepFun(**connection) as client:
            found = batch.estimate(jobs, manifest=manifest, client=client, defaults=defaults)
        print(_command_line_text(f"dry run: nothing generated\n{found}"))
        if found.affordable is False:
            print("the balance is lower than the estimated cost: a live run stops at the 402 (see --allow-partial)")
        return EXIT_OK
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
                max_spend=args.max_spend,
                check_balance=True,
                allow_partial=args.allow_partial,
                progress=not args.no_progress,
            )
        except batch.BatchInterrupted as exc:
            raise _interrupted(exc.result, manifest) from None
    return _finished(result)


def _with_endpoint_models(jobs: list[Any], args: argparse.Namespace) -> list[Any]:
    """``--image2image-model`` / ``--edit-model`` given to the jobs of that endpoint that name no
    model (each must serve its endpoint). ``--model`` is a batch default: the batch applies it
    only to the jobs whose endpoint it serves."""
    import dataclasses

    chosen = {"image2image": args.image2image_model, "edit": args.edit_model}
    for endpoint, name in chosen.items():
        if name is None:
            continue
        model = catalog.get_model(name)
        if model is not None and model.spec(_ENDPOINT_OF[endpoint]) is None:  # type: ignore[arg-type]
            serving = ", ".join(catalog.models_for(_ENDPOINT_OF[endpoint]))  # type: ignore[arg-type]
            path = f"/images/{_ENDPOINT_OF[endpoint]}"
            raise _UsageError(f"--{endpoint}-model {name} does not serve {path}: use one of {serving}")
    return [
        dataclasses.replace(job, params={"model": chosen[job.endpoint], **job.params})
        if job.error is None and chosen.get(job.endpoint) is not None
        else job
        for job in jobs
    ]


_TABLE_WIDTH = 100
"""The ``models`` table fits a 100-column terminal."""


def _compact_range(number: catalog.NumberRange) -> str:
    """``1..50 (8)``: the range, its default in parentheses."""
    text = f"{catalog._num(number.min)}..{catalog._num(number.max)}"
    return text + (f" ({catalog._num(number.default)})" if number.default is not None else "")


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
    # Budgets, estimates and the balance check are the one-process batch's: a budget the workers
    # would not keep must not look kept.
    money = [
        flag
        for flag, given in (
            ("--max-spend", args.max_spend is not None),
            ("--dry-run", args.dry_run),
            ("--allow-partial", args.allow_partial),
        )
        if given
    ]
    if money:
        raise _UsageError(
            f"{' and '.join(money)} {'does' if len(money) == 1 else 'do'} not apply with --workers/--ray yet: "
            "the workers share the account's limits but not a budget. Run without --workers/--ray to "
            "spend at most --max-spend (or to estimate)"
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
            raise _interrupted(exc.result, args.out) from None
    return _finished(result)


def _interrupted(done: Any, record: object) -> KeyboardInterrupt:
    """Ctrl-C in a batch: what was done, where it is recorded, and the command that resumes it."""
    command = shlex.join(["stepfun-openai", *sys.argv[1:]]) if sys.argv[1:] else "the same command"
    return KeyboardInterrupt(
        f"interrupted: {done.succeeded} of {done.total} images done and recorded in {record}; resume with: {command}"
    )


def _finished(result: Any) -> int:
    """A batch's summary (the reasons of the jobs not done, as the CLI can act on them), and its exit code."""
    print(_command_line_text(result.summary()))
    if result.stopped:
        return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED


def _models(args: argparse.Namespace) -> int:
    """One row per model and endpoint, its sizes on the line below; retirements after the table.
    Within :data:`_TABLE_WIDTH` columns (a test holds it to that)."""
    import textwrap

    header = ("MODEL", "ENDPOINT", "STATUS", "STEPS", "CFG_SCALE", "EXTRAS")
    rows: list[tuple[tuple[str, ...], str]] = []
    for name, model in catalog.MODELS.items():
        for endpoint, spec in model.endpoints.items():
            if spec.sizes is None:
                sizes = "= the input image's size"
            else:
                ordered = [s for s in spec.sizes if s == spec.default_size] + [
                    s for s in spec.sizes if s != spec.default_size
                ]
                sizes = " ".join(ordered) + (" (HEIGHTxWIDTH)" if spec.size_order == "HxW" else "")
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
            ranges = (_compact_range(spec.steps), _compact_range(spec.cfg_scale))
            rows.append(((name, endpoint, model.status, *ranges, ", ".join(extras)), sizes))
    widths = [max(len(row[i]) for row in [header, *(row for row, _ in rows)]) for i in range(len(header))]
    indent = " " * (widths[0] + 2)

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    print(line(header))
    for row, sizes in rows:
        print(line(row))
        print(textwrap.fill(f"sizes: {sizes}", _TABLE_WIDTH, initial_indent=indent, subsequent_indent=indent + "  "))
    print("\nranges: min..max (default); sizes: the default first")
    for name, model in catalog.MODELS.items():
        if model.retired_on:
            print(f"{name} was retired on {model.retired_on}: use {model.replacement}")
    tiers = ", ".join(f"{k} {c}/{r}" for k, (c, r) in catalog.RATE_LIMIT_TIERS.items())
    print(textwrap.fill(f"rate limits per tier (concurrent/RPM): {tiers}", _TABLE_WIDTH, subsequent_indent="  "))
    return EXIT_OK
