"""Local validation of a request body against the model catalog, before anything is sent.

It checks the body as it will go on the wire (typed arguments and ``extra_body`` already
merged), so values passed the seed guide's way, through ``extra_body``, are checked too.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from . import catalog
from ._exceptions import StepFunValidationError, caller_stacklevel
from ._inputs import EncodedImage, inspect_image_string
from ._sniff import ImageInfo

__all__ = ["check_image", "validate_request", "warn_if_retired", "warn_if_undocumented"]


_warned_models: set[str] = set()
_warned_hosts: set[tuple[catalog.Host, str, str]] = set()


def warn_if_undocumented(base_url: object, model: object, endpoint: catalog.Endpoint) -> None:
    """A ``UserWarning`` once per process when StepFun's docs don't list ``model`` on ``endpoint``
    for the host being called (the international host and Step Plan list only step-image-edit-2,
    generations and edits). Not a refusal: the docs contradict each other."""
    if base_url is None or not isinstance(model, str):
        return
    host = catalog.host_of(base_url)
    if catalog.documented_on(host, model, endpoint) or (host, model, endpoint) in _warned_hosts:
        return
    _warned_hosts.add((host, model, endpoint))
    where = "Step Plan" if host.step_plan else f"the {host.region} host"
    warnings.warn(
        f"StepFun's docs for {where} ({base_url}) do not list {model} on {endpoint} (they list "
        "step-image-edit-2 on generations and edits); the request is sent anyway",
        UserWarning,
        stacklevel=caller_stacklevel(),
    )


def warn_if_retired(model: str) -> None:
    """A ``DeprecationWarning`` once per process per retired model; the request still goes out."""
    spec = catalog.get_model(model)
    if spec is None or spec.status != "retired" or model in _warned_models:
        return
    _warned_models.add(model)
    warnings.warn(
        f"StepFun retired {model} on {spec.retired_on}; use {spec.replacement} instead "
        "(the request is sent anyway, but StepFun may reject it)",
        DeprecationWarning,
        stacklevel=caller_stacklevel(),
    )


def _fail(
    param: str,
    value: object,
    allowed: str,
    model: str | None,
    endpoint: str,
    hint: str | None = None,
    *,
    skippable: bool = True,
) -> None:
    """Raise the error; ``skippable``: the catalog's rule, which ``validate=False`` would skip
    (not for data no server could use, such as a corrupt image)."""
    raise StepFunValidationError(param, value, allowed, model=model, endpoint=endpoint, hint=hint, skippable=skippable)


def _check_number(param: str, value: object, rng: catalog.NumberRange, model: str, endpoint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(param, value, rng.describe(), model, endpoint)
        return
    if rng.integer and not float(value).is_integer():
        _fail(param, value, rng.describe(), model, endpoint)
    if not rng.contains(float(value)):
        _fail(param, value, rng.describe(), model, endpoint)


def _check_prompt(param: str, value: object, limit: int, model: str, endpoint: str, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        _fail(param, value, f"a non-empty string of at most {limit} characters", model, endpoint)
        return
    if len(value) > limit:
        _fail(param, f"<{len(value)} characters>", f"at most {limit} characters", model, endpoint)


_FIT_HINT = "pass fit=True (needs the [pil] extra: pip install 'stepfun-openai[pil]') to convert or scale it"


def check_image(
    param: str,
    image: EncodedImage | ImageInfo,
    nbytes: int | None,
    limits: catalog.ImageLimits,
    model: str,
    endpoint: str,
    *,
    fittable: bool = True,
) -> None:
    """Format, bytes and pixel limits of an input image (remote URLs are the server's business).

    The error suggests ``fit=True`` only where fit would fix it: a png/jpeg/webp/gif too large
    in bytes or pixels, or in a format the endpoint does not take, given where ``fit`` applies
    (``fittable``: not an image passed as a string in ``extra_body``). Data that is no image we
    know (a text file) or a header cut short is not something fit can repair."""
    info = image.info if isinstance(image, EncodedImage) else image
    if isinstance(image, EncodedImage) and image.is_url:
        return
    fit_hint = _FIT_HINT if fittable else None
    if info.format is None:
        _fail(param, "<unrecognised image data>", f"an image: {limits.describe()}", model, endpoint, skippable=False)
    if info.format not in limits.formats:
        _fail(param, f"<{info.format} image>", f"formats {', '.join(limits.formats)}", model, endpoint, fit_hint)
    if nbytes is not None and nbytes > limits.max_bytes:
        _fail(param, f"<{nbytes} bytes>", f"at most {limits.max_bytes} bytes (10 MB)", model, endpoint, fit_hint)
    width, height = info.width, info.height
    if width is None or height is None:
        _fail(
            param,
            f"<{info.format} image of unknown size>",
            f"an image whose header gives its size (this one looks truncated or corrupt): {limits.describe()}",
            model,
            endpoint,
            skippable=False,
        )
        return
    if width > limits.max_width or height > limits.max_height:
        _fail(
            param,
            f"<{width}x{height} pixels>",
            f"at most {limits.max_width}x{limits.max_height} pixels",
            model,
            endpoint,
            fit_hint,
        )
    if min(width, height) < limits.min_side:
        _fail(param, f"<{width}x{height} pixels>", f"at least {limits.min_side} pixels a side", model, endpoint)
    if limits.max_aspect and max(width, height) > limits.max_aspect * min(width, height):
        _fail(param, f"<{width}x{height} pixels>", f"aspect ratio within 1:{limits.max_aspect:g}", model, endpoint)


def _spec_for(model: object, endpoint: catalog.Endpoint) -> catalog.EndpointSpec:
    serving = catalog.models_for(endpoint)
    if not isinstance(model, str) or not model:
        _fail("model", model, f"one of {', '.join(serving)}", None, endpoint)
    assert isinstance(model, str)
    spec = catalog.get_model(model)
    if spec is None:
        _fail("model", model, f"one of {', '.join(serving)} (unknown model)", None, endpoint)
    assert spec is not None
    endpoint_spec = spec.spec(endpoint)
    if endpoint_spec is None:
        _fail("model", model, f"/images/{endpoint} serves {', '.join(serving)}", None, endpoint)
    assert endpoint_spec is not None
    return endpoint_spec


def _check_size(value: object, spec: catalog.EndpointSpec, model: str, endpoint: str) -> None:
    if spec.sizes is None:
        if not isinstance(value, str) or catalog.parse_size(value) is None:
            _fail(
                "size",
                value,
                "a size like 1024x1024 (ignored by this model: output size = input size)",
                model,
                endpoint,
            )
        return
    if value not in spec.sizes:
        order = "HEIGHTxWIDTH" if spec.size_order == "HxW" else "WIDTHxHEIGHT"
        _fail("size", value, f"one of {', '.join(spec.sizes)} ({order})", model, endpoint)


def validate_request(
    endpoint: catalog.Endpoint,
    body: Mapping[str, Any],
    *,
    images: Mapping[str, EncodedImage] | None = None,
    edit_image: ImageInfo | None = None,
    edit_bytes: int = 0,
) -> catalog.EndpointSpec:
    """Raise ``StepFunValidationError`` for the first parameter the catalog rejects.

    ``images`` holds what encoding already learned about the body's images (by parameter:
    ``source_url``, ``source_image``, ``style_reference.source_url``); an image not in it (one
    given as a string in ``extra_body``) is inspected from its first bytes."""
    images = images or {}
    model = body.get("model")
    spec = _spec_for(model, endpoint)
    assert isinstance(model, str)
    _check_prompt("prompt", body.get("prompt"), spec.prompt_max, model, endpoint, required=True)
    if "size" in body:
        _check_size(body["size"], spec, model, endpoint)
    if "n" in body and (isinstance(body["n"], bool) or body["n"] != 1):
        _fail("n", body["n"], "1 (StepFun generates one image per request)", model, endpoint)
    if "response_format" in body and body["response_format"] not in ("url", "b64_json"):
        _fail("response_format", body["response_format"], "'url' or 'b64_json'", model, endpoint)
    if "seed" in body:
        _check_number("seed", body["seed"], catalog.SEED, model, endpoint)
    if "steps" in body:
        _check_number("steps", body["steps"], spec.steps, model, endpoint)
    if "cfg_scale" in body:
        _check_number("cfg_scale", body["cfg_scale"], spec.cfg_scale, model, endpoint)
    if "negative_prompt" in body:
        if spec.negative_prompt_max is None:
            _fail("negative_prompt", body["negative_prompt"], _who_has(endpoint, "negative_prompt"), model, endpoint)
        _check_prompt("negative_prompt", body["negative_prompt"], spec.negative_prompt_max or 0, model, endpoint, False)
    if "text_mode" in body:
        if not spec.text_mode:
            _fail("text_mode", body["text_mode"], _who_has(endpoint, "text_mode"), model, endpoint)
        if not isinstance(body["text_mode"], bool):
            _fail("text_mode", body["text_mode"], "true or false", model, endpoint)
    if "style_reference" in body:
        _check_style_reference(body["style_reference"], spec, model, endpoint, images)
    if endpoint == "generations":
        _check_source_image(body, spec, model, images)
    if endpoint == "image2image":
        _check_image2image_source(body, spec, model, images)
    if endpoint == "edits" and edit_image is not None and spec.image_limits is not None:
        check_image("image", edit_image, edit_bytes, spec.image_limits, model, endpoint)
    return spec


def _who_has(endpoint: catalog.Endpoint, feature: str) -> str:
    models = [
        name
        for name, model in catalog.MODELS.items()
        if (spec := model.spec(endpoint)) is not None
        and (spec.negative_prompt_max is not None if feature == "negative_prompt" else getattr(spec, feature))
    ]
    return f"not supported by this model; only {', '.join(models) or 'no model'} on /images/{endpoint}"


def _check_source(
    param: str,
    source: object,
    images: Mapping[str, EncodedImage],
    spec: catalog.EndpointSpec,
    model: str,
    endpoint: catalog.Endpoint,
    allowed: str,
) -> None:
    """A source image: what encoding learned about it, or else its string inspected."""
    encoded = images.get(param)
    fittable = encoded is not None  # fit=True converts what was encoded, not a string from extra_body
    if encoded is None:
        if not isinstance(source, str) or not source:
            _fail(param, source, allowed, model, endpoint)
        assert isinstance(source, str)
        if spec.image_limits is None:
            return
        encoded = inspect_image_string(source, param=param)
    if spec.image_limits is not None:
        check_image(param, encoded, encoded.nbytes, spec.image_limits, model, endpoint, fittable=fittable)


def _check_style_reference(
    value: object,
    spec: catalog.EndpointSpec,
    model: str,
    endpoint: catalog.Endpoint,
    images: Mapping[str, EncodedImage],
) -> None:
    if not spec.style_reference:
        _fail("style_reference", "{...}", _who_has(endpoint, "style_reference"), model, endpoint)
    if not isinstance(value, Mapping):
        _fail("style_reference", value, "an object with source_url (or image) and weight", model, endpoint)
    assert isinstance(value, Mapping)
    source = value.get("source_url", value.get("image"))
    allowed = "an http(s) URL, a data: URL or base64 of a png/jpeg"
    _check_source("style_reference.source_url", source, images, spec, model, endpoint, allowed)
    if "weight" in value:
        _check_number("style_reference.weight", value["weight"], catalog.STYLE_WEIGHT, model, endpoint)


def _check_source_image(
    body: Mapping[str, Any], spec: catalog.EndpointSpec, model: str, images: Mapping[str, EncodedImage]
) -> None:
    if "source_image" not in body and "source_weight" not in body:
        return
    if not spec.source_image:
        _fail("source_image", "<image>", _who_has("generations", "source_image"), model, "generations")
    allowed = "required with source_weight: base64 (or a URL) of a png/jpeg"
    _check_source("source_image", body.get("source_image"), images, spec, model, "generations", allowed)
    if "source_weight" in body:
        _check_number("source_weight", body["source_weight"], catalog.SOURCE_WEIGHT, model, "generations")


def _check_image2image_source(
    body: Mapping[str, Any], spec: catalog.EndpointSpec, model: str, images: Mapping[str, EncodedImage]
) -> None:
    allowed = "required: an http(s) URL or a data: URL of a png/jpeg"
    _check_source("source_url", body.get("source_url"), images, spec, model, "image2image", allowed)
    if "source_weight" not in body:
        _fail(
            "source_weight",
            None,
            f"required: {catalog.SOURCE_WEIGHT.describe()} (smaller = closer to the source)",
            model,
            "image2image",
        )
    _check_number("source_weight", body["source_weight"], catalog.SOURCE_WEIGHT, model, "image2image")
