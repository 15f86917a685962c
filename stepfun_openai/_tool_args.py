"""The arguments of the image tool, generated from the model catalog.

One pydantic model serves both integrations: it is the LangChain tool's ``args_schema`` and,
through :func:`strict_json_schema`, the ``parameters`` of the OpenAI function definition. The
enums (models, sizes) and the ranges in the descriptions come from ``catalog``, so a model added
there shows up in the tool without touching this file. Per-model rules (which sizes a model takes,
its step range) are left to the client's catalog validation, whose errors name the model.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    create_model,
)

from . import catalog

__all__ = [
    "DEFAULT_SOURCE_WEIGHT",
    "EDIT_MODELS",
    "IMAGE2IMAGE_MODELS",
    "IMAGE_SIZES",
    "IMAGE_TEXT_MAX_CHARS",
    "IMAGE_TOOL_MODELS",
    "INTEGER_LIMIT",
    "TEXT_MAX_CHARS",
    "TEXT_TO_IMAGE_MODELS",
    "ImageToolArgs",
    "endpoint_tool_args",
    "strict_json_schema",
]

DEFAULT_SOURCE_WEIGHT = 0.5
"""image2image requires ``source_weight``; the tool sends this when the model gives none
(the middle of the contract's "small edits" band, 0.3-0.8)."""

TEXT_TO_IMAGE_MODELS: tuple[str, ...] = tuple(catalog.models_for("generations"))
IMAGE2IMAGE_MODELS: tuple[str, ...] = tuple(catalog.models_for("image2image"))
IMAGE_TOOL_MODELS: tuple[str, ...] = tuple(dict.fromkeys(TEXT_TO_IMAGE_MODELS + IMAGE2IMAGE_MODELS))

# Bounds on what a model may send, held whatever the client's ``validate`` says: the catalog's
# per-model limits are checked only with ``validate=True``, but these keep a hostile or confused
# model from making the tool hold, encode or send unbounded data.
TEXT_MAX_CHARS = 16 * 1024
"""The longest ``prompt`` / ``negative_prompt`` the tool forwards (the models' own limits, in the
descriptions, are lower; a generous bound leaves room for StepFun raising them)."""
IMAGE_TEXT_MAX_CHARS = (catalog.MAX_IMAGE_BYTES + 2) // 3 * 4 + 256
"""The longest ``source_image`` / ``style_reference``: a data URL of the largest image StepFun takes."""
INTEGER_LIMIT = 2**63
"""Integers must lie in [-2**63, 2**63): beyond, they are no one's seed or step count, and Python
cannot even print one of more than 4300 digits."""


def _sizes() -> tuple[str, ...]:
    sizes: dict[str, None] = {}
    for name in IMAGE_TOOL_MODELS:
        for endpoint in ("generations", "image2image"):
            spec = catalog.MODELS[name].spec(endpoint)
            for size in (spec.sizes or ()) if spec else ():
                sizes[size] = None
    # Aspects too: a model asked for "16:9" need not know that step-image-edit-2 writes HEIGHTxWIDTH.
    return (*sizes, *catalog.ASPECTS, *catalog.ORIENTATIONS)


IMAGE_SIZES: tuple[str, ...] = _sizes()


def _per_model(describe: Callable[[catalog.EndpointSpec], str | None]) -> str:
    """``"step-image-edit-2: ...; step-2x-large: ..."``, saying when a model's image-to-image
    endpoint differs from its text-to-image one."""
    parts: list[str] = []
    for name in IMAGE_TOOL_MODELS:
        model = catalog.MODELS[name]
        t2i = (spec := model.spec("generations")) and describe(spec)
        i2i = (spec := model.spec("image2image")) and describe(spec)
        if t2i and i2i and t2i != i2i:
            parts.append(f"{name}: {t2i}; with a source image {i2i}")
        elif t2i or i2i:
            parts.append(f"{name}: {t2i or i2i}")
    return "; ".join(parts)


def _size_text(spec: catalog.EndpointSpec) -> str | None:
    if not spec.sizes:
        return None
    order = "HEIGHTxWIDTH" if spec.size_order == "HxW" else "WIDTHxHEIGHT"
    return f"{', '.join(spec.sizes)} ({order})"


def _one_of(allowed: tuple[str, ...], what: str) -> Any:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"not a known {what}; use one of {', '.join(allowed)}")
        return value

    return AfterValidator(check)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _text(limit: int) -> Any:
    """A string of at most ``limit`` characters and valid Unicode (JSON's ``"\\ud800"`` escape
    decodes to a lone surrogate, which no UTF-8 request body can carry)."""

    def check(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"too long ({len(value)} characters); at most {limit}")
        if _SURROGATE.search(value):
            raise ValueError("not valid Unicode (it holds a lone surrogate such as \\ud800); send plain UTF-8 text")
        return value

    return AfterValidator(check)


def _bounded(value: Any) -> Any:
    """Refuse integers (or whole floats) outside ``INTEGER_LIMIT``, before pydantic converts them:
    it raises a bare ``ValueError`` on an integer of more than 4300 digits. ``true``/``false`` are
    refused too (pydantic would take them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("a number, not true or false")
    if not isinstance(value, (int, float)):
        return value
    too_large = (isinstance(value, int) and not -INTEGER_LIMIT <= value < INTEGER_LIMIT) or (
        isinstance(value, float) and math.isfinite(value) and abs(value) >= INTEGER_LIMIT
    )
    if too_large:
        raise ValueError("too large for any model; the ranges are in the argument's description")
    return value


Integer = Annotated[int, BeforeValidator(_bounded), AfterValidator(_bounded)]
Text = Annotated[str, _text(TEXT_MAX_CHARS)]
ImageText = Annotated[str, _text(IMAGE_TEXT_MAX_CHARS)]

ModelName = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": list(IMAGE_TOOL_MODELS)}),
    _one_of(IMAGE_TOOL_MODELS, "StepFun image model"),
]
SizeName = Annotated[
    str,
    WithJsonSchema({"type": "string", "enum": list(IMAGE_SIZES)}),
    _one_of(IMAGE_SIZES, "size"),
]


def _retired(name: str) -> bool:
    return catalog.MODELS[name].status == "retired"


def _label(name: str) -> str:
    """A model's name, marked ``(retired)`` when StepFun retired it."""
    return f"{name} (retired)" if _retired(name) else name


# The retired step-1x-medium stays in the enum: it is the only model with style_reference (its
# catalog description, shown to the model, says it is retired and what replaces it).
_MODEL_HELP = "; ".join(f"{name}: {catalog.MODELS[name].description}" for name in IMAGE_TOOL_MODELS)
_PROMPT_MAX = {spec.prompt_max for name in IMAGE_TOOL_MODELS for spec in catalog.MODELS[name].endpoints.values()}
_NEGATIVE = [
    name
    for name in IMAGE_TOOL_MODELS
    if (spec := catalog.MODELS[name].spec("generations")) is not None and spec.negative_prompt_max
]
_TEXT_MODE = [
    name
    for name in IMAGE_TOOL_MODELS
    if (spec := catalog.MODELS[name].spec("generations")) is not None and spec.text_mode
]
_STYLE = [
    name
    for name in IMAGE_TOOL_MODELS
    if (spec := catalog.MODELS[name].spec("generations")) is not None and spec.style_reference
]

_STYLE_NOTE = "; StepFun may refuse requests to a retired model" if _STYLE and all(map(_retired, _STYLE)) else ""


class ImageToolArgs(BaseModel):
    """Generate an image with StepFun. Every argument but prompt may be null (= the default)."""

    # allow_inf_nan=False: JSON's NaN/Infinity literals (and 1e999) are refused, naming the argument.
    model_config = ConfigDict(extra="forbid", title="generate_image", allow_inf_nan=False)

    prompt: Text = Field(
        description=(
            "What the image should show, in detail. At most "
            f"{min(_PROMPT_MAX)} characters ({max(_PROMPT_MAX)} with a source image)."
        ),
    )
    model: ModelName | None = Field(
        default=None,
        description=(
            f"StepFun model; null picks the tool's default (text to image) or the first model that "
            f"serves image-to-image when source_image is given. {_MODEL_HELP}. "
            f"Image-to-image: {', '.join(map(_label, IMAGE2IMAGE_MODELS))}."
        ),
    )
    size: SizeName | None = Field(
        default=None,
        description=(
            f"Output size, null = 1024x1024. Allowed per model: {_per_model(_size_text)}. Or an aspect, "
            f"resolved to the chosen model's closest size: {', '.join([*catalog.ASPECTS, *catalog.ORIENTATIONS])}."
        ),
    )
    seed: Integer | None = Field(
        default=None,
        description=(
            f"Reuse a seed to reproduce an image; {catalog.SEED.describe()}; null or 0 = random "
            "(the result reports the seed used)."
        ),
    )
    steps: Integer | None = Field(
        default=None,
        description=f"Denoising steps, null = the model's default. {_per_model(lambda s: s.steps.describe())}.",
    )
    cfg_scale: float | None = Field(
        default=None,
        description=(
            "Prompt adherence (higher = follows the prompt more literally), null = the model's default. "
            f"{_per_model(lambda s: s.cfg_scale.describe())}."
        ),
    )
    negative_prompt: Text | None = Field(
        default=None,
        description=f"What to avoid. Only {', '.join(_NEGATIVE)}; ignored when cfg_scale is 1.0.",
    )
    text_mode: StrictBool | None = Field(  # "yes" or 1 is refused, not coerced to true
        default=None,
        description=f"true renders text in the image better. Only {', '.join(_TEXT_MODE)}.",
    )
    source_image: ImageText | None = Field(
        default=None,
        description=(
            "An image to start from (image-to-image): an http(s) URL, a data: URL, or the path of an image "
            "file in a directory the application allows (none unless it says so); "
            f"{catalog.SOURCE_LIMITS.describe()}. Only {', '.join(map(_label, IMAGE2IMAGE_MODELS))}."
        ),
    )
    source_weight: float | None = Field(
        default=None,
        description=(
            f"With source_image: {catalog.SOURCE_WEIGHT.describe()}, null = {DEFAULT_SOURCE_WEIGHT}. "
            "Smaller stays closer to the source; 0.8-1.0 variations, 0.3-0.8 small changes, "
            "0-0.5 detail enhancement."
        ),
    )
    style_reference: ImageText | None = Field(
        default=None,
        description=(
            "An image whose style to borrow: an http(s) URL, a data: URL, or the path of an image file in "
            "a directory the application allows (none unless it says so). "
            f"Only {', '.join(map(_label, _STYLE)) or 'no model'}{_STYLE_NOTE}."
        ),
    )
    style_weight: float | None = Field(
        default=None,
        description=(
            f"With style_reference: {catalog.STYLE_WEIGHT.describe()}; 0.5-1.5 recommended "
            "(higher copies the reference's content too)."
        ),
    )


_STRICT_DROP = ("default", "title")


def _strictify(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _strictify(value) for key, value in node.items() if key not in _STRICT_DROP}
        if out.get("type") == "object" or "properties" in out:
            out["required"] = list(out.get("properties", {}))
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strictify(item) for item in node]
    return node


def strict_json_schema(model: type[BaseModel] = ImageToolArgs) -> dict[str, Any]:
    """``model``'s JSON schema within OpenAI's strict-mode subset: every property required (the
    optional ones as ``anyOf [..., null]``), ``additionalProperties: false``, no ``default``.

    Property descriptions are kept; ranges stay in the descriptions rather than as
    ``minimum``/``maximum``, because they differ per model and not every OpenAI-compatible
    endpoint accepts those keywords in strict mode.
    """
    schema = _strictify(copy.deepcopy(model.model_json_schema()))
    assert isinstance(schema, dict)
    return schema


# --- one tool per endpoint (the MCP server's generate_image / image_to_image / edit_image) ---------

EDIT_MODELS: tuple[str, ...] = tuple(catalog.models_for("edits"))

_ENDPOINT_FIELDS: dict[catalog.Endpoint, tuple[str, ...]] = {
    "generations": (
        "prompt", "model", "size", "seed", "steps", "cfg_scale",
        "negative_prompt", "text_mode", "style_reference", "style_weight",
    ),
    "image2image": ("prompt", "source_image", "source_weight", "model", "size", "seed", "steps", "cfg_scale"),
    "edits": ("prompt", "image", "model", "size", "seed", "steps", "cfg_scale", "negative_prompt", "text_mode"),
}  # fmt: skip
"""Which of :class:`ImageToolArgs`'s arguments each endpoint takes (``image`` is the edit tool's
name for ``source_image``: an edit has no source weight, its image *is* the subject)."""


def _endpoint_models(endpoint: catalog.Endpoint) -> tuple[str, ...]:
    return tuple(catalog.models_for(endpoint))


def _on(endpoint: catalog.Endpoint, describe: Callable[[catalog.EndpointSpec], str | None]) -> str:
    """``"step-2x-large: ...; step-1x-medium: ..."`` for the models of one endpoint."""
    parts = []
    for name in _endpoint_models(endpoint):
        spec = catalog.MODELS[name].spec(endpoint)
        text = describe(spec) if spec else None
        parts.append(f"{name}: {text or 'ignored (the output has the input size)'}")
    return "; ".join(parts)


def _steps_text(spec: catalog.EndpointSpec) -> str:
    return spec.steps.describe()


def _endpoint_overrides(endpoint: catalog.Endpoint) -> dict[str, tuple[Any, Any]]:
    """The arguments whose allowed values differ per endpoint: the model and size enums and the
    per-model ranges are read from the catalog for this endpoint's models only."""
    models = _endpoint_models(endpoint)
    current = [name for name in models if catalog.MODELS[name].status == "current"]
    sizes = tuple(
        dict.fromkeys(size for name in models for size in (catalog.MODELS[name].endpoints[endpoint].sizes or ()))
    )
    aspects = (*catalog.ASPECTS, *catalog.ORIENTATIONS) if sizes else ()  # resolved per model, as in the client
    sizes = (*sizes, *aspects)
    model_type = Annotated[
        str, WithJsonSchema({"type": "string", "enum": list(models)}), _one_of(models, f"model for {endpoint}")
    ]
    size_type = Annotated[str, WithJsonSchema({"type": "string", "enum": list(sizes)}), _one_of(sizes, "size")]
    model_help = "; ".join(f"{name}: {catalog.MODELS[name].description}" for name in models)
    overrides: dict[str, tuple[Any, Any]] = {
        "model": (
            model_type | None,
            Field(default=None, description=f"StepFun model, null = {(current or models)[0]}. {model_help}."),
        ),
        "size": (
            size_type | None,
            Field(
                default=None,
                description=f"Output size, null = the model's default. {_on(endpoint, _size_text)}."
                + (f" Or an aspect, resolved to the model's closest size: {', '.join(aspects)}." if aspects else ""),
            ),
        ),
        "steps": (
            Integer | None,
            Field(
                default=None,
                description=f"Denoising steps, null = the model's default. {_on(endpoint, _steps_text)}.",
            ),
        ),
        "cfg_scale": (
            float | None,
            Field(
                default=None,
                description=(
                    "Prompt adherence (higher = follows the prompt more literally), null = the model's default. "
                    f"{_on(endpoint, lambda s: s.cfg_scale.describe())}."
                ),
            ),
        ),
    }
    limits = "; ".join(
        f"{name}: {spec.image_limits.describe()}"
        for name in models
        if (spec := catalog.MODELS[name].spec(endpoint)) is not None and spec.image_limits is not None
    )
    where = "an http(s) URL, a data: URL, or the path of an image file inside a directory the server allows"
    if endpoint == "image2image":
        overrides["source_image"] = (ImageText, Field(description=f"The image to start from: {where}; {limits}."))
    if endpoint == "edits":
        overrides["image"] = (ImageText, Field(description=f"The image to edit: {where}; {limits}."))
    return overrides


_ENDPOINT_TITLES: dict[catalog.Endpoint, str] = {
    "generations": "generate_image",
    "image2image": "image_to_image",
    "edits": "edit_image",
}


def endpoint_tool_args(endpoint: catalog.Endpoint) -> type[BaseModel]:
    """The arguments of a tool for one endpoint: the subset of :class:`ImageToolArgs` that the
    endpoint takes, the same fields and validators, with the model and size enums and the
    per-model ranges narrowed to that endpoint's models (from the catalog)."""
    cached = _BY_ENDPOINT.get(endpoint)
    if cached is not None:
        return cached
    overrides = _endpoint_overrides(endpoint)
    fields: dict[str, Any] = {}
    for name in _ENDPOINT_FIELDS[endpoint]:
        if name in overrides:
            fields[name] = overrides[name]
        else:
            info = ImageToolArgs.model_fields[name]
            fields[name] = (info.rebuild_annotation(), info)
    model = create_model(
        _ENDPOINT_TITLES[endpoint].title().replace("_", "") + "Args",
        __config__=ConfigDict(extra="forbid", title=_ENDPOINT_TITLES[endpoint], allow_inf_nan=False),
        __doc__=f"The arguments of {_ENDPOINT_TITLES[endpoint]} (StepFun's {endpoint} endpoint).",
        **fields,
    )
    _BY_ENDPOINT[endpoint] = model
    return model  # type: ignore[no-any-return]


_BY_ENDPOINT: dict[catalog.Endpoint, type[BaseModel]] = {}
