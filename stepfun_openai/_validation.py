"""Local validation of a request body against the model catalog, before anything is sent.

It checks the body as it will go on the wire (typed arguments and ``extra_body`` already
merged), so values passed the seed guide's way, through ``extra_body``, are checked too.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from typing import Any

import httpx2
from openai import NotGiven, Omit

from . import catalog
from ._exceptions import StepFunValidationError, caller_stacklevel
from ._inputs import EncodedImage, InlineImage, inspect_image_string
from ._sniff import ImageInfo

__all__ = [
    "check_call_options",
    "check_image",
    "check_wire_values",
    "validate_request",
    "warn_if_retired",
    "warn_if_undocumented",
]


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
    # Compared as given, never through float(): an int past 1e308 (seed=10**400) cannot be one.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(param, value, rng.describe(), model, endpoint)
        return
    if isinstance(value, float) and (not math.isfinite(value) or (rng.integer and not value.is_integer())):
        _fail(param, value, rng.describe(), model, endpoint)
    if not rng.contains(value):
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
        # Not "pass validate=False": StepFun itself refuses n != 1. Fanning out is the way to more.
        _fail(
            "n",
            body["n"],
            "1 (StepFun generates one image per request)",
            model,
            endpoint,
            "For n images, a client built with fan_out=True (the default) sends n requests at once (n <= 10)",
            skippable=False,
        )
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


# --- What a body can carry at all (checked also with validate=False) -------------------------------

_SURROGATE_RE = re.compile("[\ud800-\udfff]")
"""The only code points UTF-8 cannot encode: lone surrogates (from ``json.loads('"\\ud800"')``,
``surrogateescape``-decoded bytes, or a model's output)."""
_MAX_INT_BITS = 1024
"""Larger integers are refused: no parameter takes them, and past 4300 digits Python cannot
even write them (``str()`` raises)."""
_NO_KEY = object()
"""The "key" of a list item."""
_MAX_DEPTH = 32
"""Nesting deeper than this (or a container that holds itself) is refused, not recursed into."""


def check_wire_values(body: Mapping[str, Any], endpoint: catalog.Endpoint, *, prefix: str = "") -> None:
    """Refuse, naming the parameter, a value the request body cannot carry: text UTF-8 cannot
    encode, a float JSON has no word for (NaN, infinity), an integer too large to write, a value
    that is not JSON, or nesting too deep. Without this they would escape from the SDK's
    serialiser as a raw ``UnicodeEncodeError``, ``ValueError`` or ``TypeError`` (or, in a form
    field, be sent as ``"nan"``). Runs with and without ``validate``: it is not a judgement
    about what StepFun accepts, but about what can be sent at all."""
    model = body.get("model")
    shown_model = model if isinstance(model, str) and not _SURROGATE_RE.search(model) else None
    for key, value in body.items():
        _check_wire(prefix + _key_name(key), key, value, 0, shown_model, endpoint)


def _key_name(key: object) -> str:
    """A key as it appears in a parameter's name: as is, or its repr when empty or not a string."""
    return key if isinstance(key, str) and key else _short_key(key)


def _short_key(key: object) -> str:
    try:
        return repr(key)[:40]
    except Exception:  # an integer too large to write
        return f"<{type(key).__name__}>"


def _wire_fail(param: str, value: object, allowed: str, model: str | None, endpoint: str) -> None:
    raise StepFunValidationError(param, value, allowed, model=model, endpoint=endpoint, skippable=False)


def _check_wire(param: str, key: object, value: object, depth: int, model: str | None, endpoint: str) -> None:
    if isinstance(key, str):
        if _SURROGATE_RE.search(key):
            _wire_fail(param, key, "a key UTF-8 can encode (this one holds a lone surrogate)", model, endpoint)
    elif key is not _NO_KEY:  # JSON object keys and form field names are strings
        _wire_fail(param, key, "a string key", model, endpoint)
    if value is None or isinstance(value, (bool, InlineImage)):
        return
    if isinstance(value, str):
        if _SURROGATE_RE.search(value):
            _wire_fail(param, value, "text UTF-8 can encode (this holds a lone surrogate)", model, endpoint)
        return
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            _wire_fail(param, value, f"an integer of at most {_MAX_INT_BITS} bits", model, endpoint)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            _wire_fail(param, value, "a finite number (JSON has no NaN or infinity)", model, endpoint)
        return
    if isinstance(value, (Mapping, list, tuple)):
        if depth >= _MAX_DEPTH:
            _wire_fail(param, "<...>", f"at most {_MAX_DEPTH} levels of nesting", model, endpoint)
        if isinstance(value, Mapping):
            for inner_key, inner in value.items():
                _check_wire(f"{param}.{_key_name(inner_key)}", inner_key, inner, depth + 1, model, endpoint)
        else:
            for index, inner in enumerate(value):
                _check_wire(f"{param}[{index}]", _NO_KEY, inner, depth + 1, model, endpoint)
        return
    from ._compat import openapi_dumps  # the SDK's own writer knows a few more types (datetime, models)

    try:
        openapi_dumps(value)
    except (TypeError, ValueError, RecursionError):
        _wire_fail(
            param, f"<{type(value).__name__}>", "a JSON value (string, number, bool, list or dict)", model, endpoint
        )


_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE_RE = re.compile(r"^[\t\x20-\x7e]*$")
_MAX_TIMEOUT = 10_000_000.0
"""Seconds (about 115 days): larger ones overflow the platform's clock types inside the socket layer."""


def check_call_options(
    endpoint: catalog.Endpoint, *, extra_headers: object, extra_query: object, timeout: object
) -> None:
    """The options every call takes, checked before anything is sent (with or without
    ``validate``): a header the HTTP layer would refuse (non-ASCII, a line break, not a string),
    a query value JSON could not carry either, or a timeout that is not a positive, finite
    number of seconds would otherwise surface as a raw ``UnicodeEncodeError``, ``TypeError``,
    ``ValueError`` or ``OverflowError`` from deep in the transport."""
    if extra_headers is not None:
        if not isinstance(extra_headers, Mapping):
            _wire_fail("extra_headers", extra_headers, "a dict of header names to strings", None, endpoint)
        assert isinstance(extra_headers, Mapping)
        for name, value in extra_headers.items():
            param = f"extra_headers[{name!r}]"
            if not isinstance(name, str) or not _HEADER_NAME_RE.match(name):
                _wire_fail(param, name, "a header name (ASCII letters, digits and -)", None, endpoint)
            if isinstance(value, (NotGiven, Omit)):
                continue  # the SDK's way to drop one of its default headers
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if not isinstance(text, str) or not _HEADER_VALUE_RE.match(text):
                _wire_fail(param, value, "a header value of printable ASCII (no line breaks)", None, endpoint)
    if extra_query is not None:
        if not isinstance(extra_query, Mapping):
            _wire_fail("extra_query", extra_query, "a dict of query parameters", None, endpoint)
        assert isinstance(extra_query, Mapping)
        for name in extra_query:
            if not isinstance(name, str):
                _wire_fail(
                    f"extra_query[{_short_key(name)}]", name, "a query parameter name (a string)", None, endpoint
                )
        check_wire_values(extra_query, endpoint, prefix="extra_query.")
    _check_timeout(timeout, endpoint)


def _check_timeout(timeout: object, endpoint: str) -> None:
    if timeout is None or isinstance(timeout, NotGiven):
        return
    allowed = f"seconds: a number in (0, {_MAX_TIMEOUT:g}], None, or an httpx2.Timeout of such numbers"
    if isinstance(timeout, httpx2.Timeout):
        parts: tuple[object, ...] = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    elif isinstance(timeout, tuple):
        parts = timeout
    else:
        parts = (timeout,)
    for part in parts:
        if part is None:
            continue
        if isinstance(part, bool) or not isinstance(part, (int, float)) or not 0 < part <= _MAX_TIMEOUT:
            _wire_fail("timeout", timeout, allowed, None, endpoint)
        if isinstance(part, float) and not math.isfinite(part):
            _wire_fail("timeout", timeout, allowed, None, endpoint)
