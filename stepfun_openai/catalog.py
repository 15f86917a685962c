"""The model catalog: what each StepFun image model accepts, per endpoint.

One source of truth (``shared/stepfun-image-api.md``) for client-side validation, the CLI's
help, the README's parameter table and the emulator. Standard library only: the emulator
imports this module.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

__all__ = [
    "ASPECTS",
    "DEFAULT_BASE_URL",
    "ENDPOINTS",
    "INTERNATIONAL_BASE_URL",
    "INTERNATIONAL_STEP_PLAN_BASE_URL",
    "MODELS",
    "ORIENTATIONS",
    "PRICES",
    "RATE_LIMIT_TIERS",
    "SEED_MAX",
    "STEP_PLAN_BASE_URL",
    "Endpoint",
    "EndpointSpec",
    "Host",
    "ImageLimits",
    "ModelSpec",
    "NumberRange",
    "Price",
    "Region",
    "describe_sizes",
    "documented_on",
    "get_model",
    "host_of",
    "is_aspect",
    "models_for",
    "parse_size",
    "price_of",
    "resolve_size",
]

Endpoint = Literal["generations", "image2image", "edits"]
ENDPOINTS: tuple[Endpoint, ...] = ("generations", "image2image", "edits")

DEFAULT_BASE_URL = "https://api.stepfun.com/v1"
INTERNATIONAL_BASE_URL = "https://api.stepfun.ai/v1"
STEP_PLAN_BASE_URL = "https://api.stepfun.com/step_plan/v1"
INTERNATIONAL_STEP_PLAN_BASE_URL = "https://api.stepfun.ai/step_plan/v1"
"""Step Plan (a monthly subscription): images are paid from the plan's credit, not the cash balance.
A plan key used on ``/v1`` is billed from the cash balance instead."""

Region = Literal["mainland", "international"]

SEED_MAX = 2147483647
"""Seeds are 0..2147483647; 0 or omitted asks the server for a random seed."""

MAX_IMAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class NumberRange:
    """A closed range (``min_exclusive`` opens the lower end) with an optional default."""

    min: float
    max: float
    default: float | None = None
    integer: bool = False
    min_exclusive: bool = False

    def contains(self, value: float) -> bool:
        low_ok = value > self.min if self.min_exclusive else value >= self.min
        return low_ok and value <= self.max

    def describe(self) -> str:
        low = "(" if self.min_exclusive else "["
        kind = "an integer" if self.integer else "a number"
        text = f"{kind} in {low}{_num(self.min)}, {_num(self.max)}]"
        if self.default is not None:
            text += f", default {_num(self.default)}"
        return text


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class ImageLimits:
    """What an input image may be: formats, bytes, pixels per side, aspect ratio."""

    formats: tuple[str, ...] = ("png", "jpeg")
    max_bytes: int = MAX_IMAGE_BYTES
    max_width: int = 2048
    max_height: int = 2048
    min_side: int = 1
    max_aspect: float | None = None  # e.g. 3.0 means 1:3..3:1

    def describe(self) -> str:
        text = (
            f"{'/'.join(self.formats)}, at most {self.max_bytes // (1024 * 1024)} MB and "
            f"{self.max_width}x{self.max_height} pixels"
        )
        if self.min_side > 1:
            text += f", at least {self.min_side} pixels a side"
        if self.max_aspect:
            text += f", aspect ratio between 1:{_num(self.max_aspect)} and {_num(self.max_aspect)}:1"
        return text


@dataclass(frozen=True)
class EndpointSpec:
    """One model on one endpoint."""

    endpoint: Endpoint
    prompt_max: int
    steps: NumberRange
    cfg_scale: NumberRange
    sizes: tuple[str, ...] | None = None
    """Allowed ``size`` values; ``None`` means ``size`` is accepted but ignored (output = input)."""
    default_size: str | None = "1024x1024"
    size_order: Literal["WxH", "HxW"] = "WxH"
    negative_prompt_max: int | None = None
    """``None``: the model has no ``negative_prompt``."""
    text_mode: bool = False
    style_reference: bool = False
    source_image: bool = False
    """Generations only: the seed notebook's ``source_image`` + ``source_weight``."""
    requires_source: bool = False
    """image2image: ``source_url`` and ``source_weight`` are required."""
    image_limits: ImageLimits | None = None
    """Limits for source / edit images on this endpoint."""
    notes: str = ""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    endpoints: dict[Endpoint, EndpointSpec]
    status: Literal["current", "retired", "listed"] = "current"
    retired_on: _dt.date | None = None
    replacement: str | None = None
    description: str = ""

    def spec(self, endpoint: Endpoint) -> EndpointSpec | None:
        return self.endpoints.get(endpoint)


SEED = NumberRange(0, SEED_MAX, None, integer=True)
SOURCE_WEIGHT = NumberRange(0, 1, None, min_exclusive=True)
STYLE_WEIGHT = NumberRange(0, 2, 1, min_exclusive=True)
RESPONSE_FORMATS = ("url", "b64_json")

WXH_SIZES = ("256x256", "512x512", "768x768", "1024x1024", "1280x800", "800x1280")
EDIT2_SIZES = ("1024x1024", "768x1360", "896x1184", "1360x768", "1184x896")
EDIT1X_SIZES = ("512x512", "768x768", "1024x1024")

SOURCE_LIMITS = ImageLimits(formats=("png", "jpeg"), max_width=2048, max_height=2048)
EDIT2_LIMITS = ImageLimits(formats=("png", "jpeg", "webp"), max_width=4096, max_height=4096)
EDIT1X_LIMITS = ImageLimits(
    formats=("png", "jpeg", "webp"), max_width=4096, max_height=4096, min_side=64, max_aspect=3.0
)


def _gen(steps_default: int, cfg_default: float, **kw: object) -> EndpointSpec:
    return EndpointSpec(
        endpoint="generations",
        prompt_max=512,
        steps=NumberRange(1, 50, steps_default, integer=True),
        cfg_scale=NumberRange(1, 10, cfg_default),
        **kw,  # type: ignore[arg-type]
    )


def _i2i(cfg_default: float) -> EndpointSpec:
    return EndpointSpec(
        endpoint="image2image",
        prompt_max=1024,
        steps=NumberRange(1, 100, 50, integer=True),
        cfg_scale=NumberRange(1, 10, cfg_default),
        sizes=WXH_SIZES,
        requires_source=True,
        image_limits=SOURCE_LIMITS,
    )


MODELS: dict[str, ModelSpec] = {
    "step-image-edit-2": ModelSpec(
        name="step-image-edit-2",
        description="current, recommended; fast (8 steps); sizes are HEIGHTxWIDTH",
        endpoints={
            "generations": _gen(
                8,
                1.0,
                sizes=EDIT2_SIZES,
                size_order="HxW",
                negative_prompt_max=512,
                text_mode=True,
                notes="negative_prompt is ignored when cfg_scale = 1.0",
            ),
            "edits": EndpointSpec(
                endpoint="edits",
                prompt_max=512,
                steps=NumberRange(1, 50, 8, integer=True),
                cfg_scale=NumberRange(1, 10, 1.0),
                sizes=None,
                default_size=None,
                negative_prompt_max=512,
                text_mode=True,
                image_limits=EDIT2_LIMITS,
                notes="output size = input size; size is ignored",
            ),
        },
    ),
    "step-2x-large": ModelSpec(
        name="step-2x-large",
        description="current",
        endpoints={
            "generations": _gen(50, 6.0, sizes=WXH_SIZES, source_image=True, image_limits=SOURCE_LIMITS),
            "image2image": _i2i(6.0),
        },
    ),
    "step-1x-medium": ModelSpec(
        name="step-1x-medium",
        status="retired",
        retired_on=_dt.date(2026, 7, 8),
        replacement="step-2x-large",
        description="retired 2026-07-08, use step-2x-large; the only model with style_reference",
        endpoints={
            "generations": _gen(
                50, 7.5, sizes=WXH_SIZES, style_reference=True, source_image=True, image_limits=SOURCE_LIMITS
            ),
            "image2image": _i2i(7.5),
        },
    ),
    "step-1x-edit": ModelSpec(
        name="step-1x-edit",
        status="listed",
        description="edits only (listed on one version of the edits page)",
        endpoints={
            "edits": EndpointSpec(
                endpoint="edits",
                prompt_max=512,
                steps=NumberRange(1, 50, 28, integer=True),
                cfg_scale=NumberRange(1, 10, 6.0),
                sizes=EDIT1X_SIZES,
                default_size="512x512",
                text_mode=True,
                image_limits=EDIT1X_LIMITS,
                notes="square input -> that size; otherwise aspect kept at about size^2 area",
            ),
        },
    ),
}

RATE_LIMIT_TIERS: dict[str, tuple[int, int]] = {
    "V0": (5, 10),
    "V1": (100, 1_000),
    "V2": (200, 5_000),
    "V3": (400, 10_000),
    "V4": (1_000, 20_000),
    "V5": (10_000, 200_000),
}
"""Per account, by cumulative top-up: tier -> (concurrency, requests per minute)."""


def get_model(name: str) -> ModelSpec | None:
    return MODELS.get(name)


def models_for(endpoint: Endpoint) -> list[str]:
    """Names of the models that serve ``endpoint``, in catalog order."""
    return [name for name, spec in MODELS.items() if endpoint in spec.endpoints]


def parse_size(size: str) -> tuple[int, int] | None:
    """``"800x1280"`` -> ``(800, 1280)`` (first, second number as written), or ``None``."""
    parts = size.lower().split("x") if isinstance(size, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def pixel_size(size: str, order: Literal["WxH", "HxW"]) -> tuple[int, int] | None:
    """The ``(width, height)`` in pixels that a ``size`` string means under ``order``."""
    parsed = parse_size(size)
    if parsed is None:
        return None
    return parsed if order == "WxH" else (parsed[1], parsed[0])


def parameter_table() -> list[dict[str, str]]:
    """One row per model and endpoint: what the README's table and ``stepfun-openai models`` show."""
    rows: list[dict[str, str]] = []
    for name, model in MODELS.items():
        for endpoint, spec in model.endpoints.items():
            if spec.sizes is None:
                sizes = "= input size"
            else:
                order = " (HxW)" if spec.size_order == "HxW" else ""
                sizes = ", ".join(spec.sizes) + order
            extras = [
                feature
                for feature, on in (
                    ("negative_prompt", spec.negative_prompt_max is not None),
                    ("text_mode", spec.text_mode),
                    ("style_reference", spec.style_reference),
                    ("source_image", spec.source_image),
                    ("source_url+source_weight", spec.requires_source),
                )
                if on
            ]
            status: str = model.status
            if model.retired_on:
                status = f"retired {model.retired_on} → {model.replacement}"
            rows.append(
                {
                    "model": name,
                    "endpoint": endpoint,
                    "sizes": sizes,
                    "steps": f"{_num(spec.steps.min)}..{_num(spec.steps.max)} ({_num(spec.steps.default or 0)})",
                    "cfg_scale": f"{_num(spec.cfg_scale.min)}..{_num(spec.cfg_scale.max)} "
                    f"({_num(spec.cfg_scale.default or 0)})",
                    "prompt": f"≤ {spec.prompt_max}",
                    "also": ", ".join(extras) or "—",
                    "status": status,
                }
            )
    return rows


def parameter_table_markdown() -> str:
    """The per-model parameter table as Markdown (defaults in parentheses)."""
    rows = parameter_table()
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row[h] for h in headers) + " |" for row in rows]
    return "\n".join(lines)


# --- prices -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Price:
    """What one generated image costs on one region's cash balance, as the pricing page said on
    ``read_on`` (prices change: this is a snapshot, never a guess)."""

    amount: Decimal
    currency: Literal["CNY", "USD"]
    read_on: _dt.date

    def __str__(self) -> str:
        symbol = "¥" if self.currency == "CNY" else "$"
        return f"{symbol}{self.amount} per image (read {self.read_on})"


_PRICES_READ_ON = _dt.date(2026, 6, 19)

PRICES: dict[tuple[str, Region], Price] = {
    ("step-2x-large", "mainland"): Price(Decimal("0.1"), "CNY", _PRICES_READ_ON),
    ("step-image-edit-2", "mainland"): Price(Decimal("0.02"), "CNY", _PRICES_READ_ON),
    ("step-image-edit-2", "international"): Price(Decimal("0.003"), "USD", _PRICES_READ_ON),
}
"""Per generated image (``content_filtered`` ones included: they are generated and billed; a failed
request is not). A model and region missing here has no published price: its cost is unknown."""


def price_of(model: str, region: Region | None) -> Price | None:
    """The catalog's price of one ``model`` image in ``region``; ``None`` when it is not known."""
    return PRICES.get((model, region)) if region is not None else None


# --- hosts: regions, Step Plan, what each documents ---------------------------------------------------


@dataclass(frozen=True)
class Host:
    """What a base URL says about billing and documentation."""

    region: Region | None
    """``None``: not a StepFun host (the emulator, a proxy): the region is whatever the client says."""
    step_plan: bool = False
    """Paid from a Step Plan's monthly credit, not the cash balance: no per-image cash price."""

    @property
    def stepfun(self) -> bool:
        return self.region is not None


def host_of(base_url: object) -> Host:
    """The :class:`Host` behind a base URL (``api.stepfun.com`` mainland, ``api.stepfun.ai``
    international, a ``/step_plan/`` path Step Plan; anything else unknown)."""
    return _host_of(str(base_url))


@functools.lru_cache(maxsize=256)
def _host_of(base_url: str) -> Host:
    # Asked on every request and response (cost, documentation warnings): a client calls few URLs.
    parts = urllib.parse.urlsplit(base_url)
    host = (parts.hostname or "").lower()
    region: Region | None = None
    if host == "stepfun.com" or host.endswith(".stepfun.com"):
        region = "mainland"
    elif host == "stepfun.ai" or host.endswith(".stepfun.ai"):
        region = "international"
    return Host(region=region, step_plan=region is not None and "/step_plan" in parts.path)


_DOCUMENTED_NARROW: dict[Endpoint, tuple[str, ...]] = {
    "generations": ("step-image-edit-2",),
    "edits": ("step-image-edit-2",),
}
"""What the international docs and Step Plan list: step-image-edit-2, generations and edits only."""


def documented_on(host: Host, model: str, endpoint: Endpoint) -> bool:
    """Whether StepFun's docs list ``model`` on ``endpoint`` for ``host``. The docs contradict each
    other (the international model list still describes the other models), so the client warns
    about an undocumented pair rather than refusing it. Unknown hosts document everything."""
    if host.region is None or (host.region == "mainland" and not host.step_plan):
        return True
    return model in _DOCUMENTED_NARROW.get(endpoint, ())


# --- sizes by aspect ------------------------------------------------------------------------------------

ASPECTS: dict[str, float] = {"1:1": 1.0, "16:9": 16 / 9, "9:16": 9 / 16, "4:3": 4 / 3, "3:4": 3 / 4}
"""Aspect ratios (width:height) that ``size`` accepts besides the model's own sizes."""

ORIENTATIONS = ("landscape", "portrait", "square")
_ASPECT_TOLERANCE = math.log(1.25)
"""How far (as a ratio) a model's size may be from the asked aspect and still count as it."""


def _aspect(width: int, height: int) -> str:
    ratio = width / height
    for name, value in ASPECTS.items():
        if abs(math.log(ratio / value)) < 0.03:
            return name
    return f"{ratio:.2f}:1"


def describe_sizes(spec: EndpointSpec) -> str:
    """The sizes ``spec`` offers with their aspects, in the model's own order (for messages)."""
    if spec.sizes is None:
        return "no size choice (the output has the input's size)"
    order = "HEIGHTxWIDTH" if spec.size_order == "HxW" else "WIDTHxHEIGHT"
    shown = []
    for size in spec.sizes:
        width, height = pixel_size(size, spec.size_order) or (1, 1)
        shown.append(f"{size} ({_aspect(width, height)})")
    return f"{', '.join(shown)}, written {order}"


def is_aspect(size: object) -> bool:
    """Whether ``size`` asks for an aspect (``"16:9"``, ``"landscape"``) rather than a size."""
    return isinstance(size, str) and (size.strip().lower() in ORIENTATIONS or size.strip() in ASPECTS)


def resolve_size(model: str, endpoint: Endpoint, aspect: str) -> str:
    """The ``model``'s own size (in its own order: HEIGHTxWIDTH for step-image-edit-2) for an
    aspect ratio (``"16:9"``, ``"9:16"``, ``"1:1"``, ``"4:3"``, ``"3:4"``) or an orientation
    (``"landscape"``, ``"portrait"``, ``"square"``): the closest supported aspect, the default size
    among equals, then the largest. ``ValueError`` (naming what the model offers) when the model
    has no size close to it or no size choice at all."""
    spec = MODELS[model].endpoints.get(endpoint) if model in MODELS else None
    if spec is None:
        raise ValueError(f"{model!r} does not serve {endpoint}")
    if spec.sizes is None:
        raise ValueError(f"{model} on {endpoint} has {describe_sizes(spec)}; an aspect ratio cannot apply")
    wanted = aspect.strip().lower()
    sized = [(size, *(pixel_size(size, spec.size_order) or (1, 1))) for size in spec.sizes]
    if wanted in ORIENTATIONS:
        if wanted == "square":
            pool = [s for s in sized if s[1] == s[2]]
        else:
            pool = [s for s in sized if (s[1] > s[2]) == (wanted == "landscape") and s[1] != s[2]]
            # the most pronounced one: what "landscape" looks like on this model
            extreme = max(abs(math.log(w / h)) for _, w, h in pool) if pool else 0
            pool = [s for s in pool if abs(abs(math.log(s[1] / s[2])) - extreme) < 1e-9]
    elif wanted in ASPECTS:
        target = math.log(ASPECTS[wanted])
        best = min((abs(math.log(w / h) - target) for _, w, h in sized), default=math.inf)
        pool = [s for s in sized if abs(abs(math.log(s[1] / s[2]) - target) - best) < 1e-9]
        if best > _ASPECT_TOLERANCE:
            pool = []
    else:
        raise ValueError(f"{aspect!r} is not an aspect: use one of {', '.join([*ASPECTS, *ORIENTATIONS])} or a size")
    if not pool:
        raise ValueError(f"{model} has no size close to {aspect} on {endpoint}: it offers {describe_sizes(spec)}")
    for size, _, _ in pool:
        if size == spec.default_size:
            return size
    return max(pool, key=lambda s: s[1] * s[2])[0]
