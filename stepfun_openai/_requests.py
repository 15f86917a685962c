"""From typed keyword arguments to the request StepFun receives, built once (sync, async and batch).

Data flows one way: typed arguments -> images encoded (once) -> merged with ``extra_body`` ->
stable seed -> validated against the catalog (reading what encoding learned about each image)
-> a :class:`PreparedRequest`, which the images resource (or the batch, on every attempt) sends.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import os
import random
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2
from openai import NotGiven, Omit, not_given

from . import catalog
from ._cost import image_cost
from ._download import DEFAULT_MAX_BYTES
from ._exceptions import MalformedResponseError, StepFunValidationError, redact_secrets, request_secrets
from ._input_types import StyleReference
from ._inputs import MAX_INPUT_BYTES, EncodedImage, InlineImage, encode_inline, image_bytes
from ._sniff import HEADER_BYTES, sniff
from ._urls import is_http_url, redact_url
from ._validation import check_call_options, check_wire_values, validate_request, warn_if_retired, warn_if_undocumented

__all__ = [
    "CALL_OPTIONS",
    "PARAMETERS",
    "ClientSettings",
    "PreparedRequest",
    "deep_merge",
    "finish_images_response",
    "prepare",
]

_EXCERPT = 300


@dataclass(frozen=True)
class ClientSettings:
    validate: bool = True
    stable_seed: bool = True
    fit: bool = False
    """Convert/scale input images that the model would reject (needs Pillow); see ``_fit``."""
    region: catalog.Region | None = None
    """Whose prices apply when the host does not say (the emulator, a proxy); see ``_cost``."""
    fan_out: bool = True
    """``n > 1`` sends n requests at once (see ``_fanout``); off, ``n > 1`` is refused locally."""


_COMMON = frozenset({"model", "prompt", "size", "n", "response_format", "seed", "steps", "cfg_scale"})

PARAMETERS: dict[catalog.Endpoint, frozenset[str]] = {
    "generations": _COMMON | {"negative_prompt", "text_mode", "style_reference", "source_image", "source_weight"},
    "image2image": _COMMON | {"source_url", "source_weight"},
    "edits": _COMMON | {"image", "negative_prompt", "text_mode"},
}
"""The typed keyword arguments of each endpoint's method (a test keeps them equal to the signatures)."""

CALL_OPTIONS = frozenset({"fit", "extra_headers", "extra_query", "extra_body", "timeout"})
"""The keyword arguments every image method takes besides the endpoint's parameters."""


@dataclass(frozen=True)
class PreparedRequest:
    """One logical call, ready to send on every attempt: merged, images encoded once, validated
    once, seed fixed once. ``body`` is the JSON body (inline images as :class:`InlineImage`
    pieces) or, for edits, the form fields beside ``files``."""

    endpoint: catalog.Endpoint
    body: dict[str, Any]
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    extra_headers: Mapping[str, str] | None = None
    extra_query: Mapping[str, object] | None = None
    timeout: float | httpx2.Timeout | NotGiven | None = not_given
    _parts: _JSONParts | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return f"/images/{self.endpoint}"

    @property
    def seed(self) -> int | None:
        seed = self.body.get("seed")
        if isinstance(seed, str) and seed.isdigit():  # an edit's form field
            return int(seed)
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def with_seed(self, seed: int | None) -> PreparedRequest:
        """The same request asking for another seed (``None``: the server picks)."""
        body = {k: v for k, v in self.body.items() if k != "seed"}
        if seed is not None:
            body["seed"] = str(seed) if self.files is not None else seed
        parts = _JSONParts(body) if self._parts is not None else None
        return dataclasses.replace(self, body=body, _parts=parts)

    def post_arguments(self, *, is_async: bool, max_retries: int | None = None) -> dict[str, Any]:
        """``body``/``content``/``files``/``options`` for the SDK's ``_post``. A body with inline
        images goes as raw content written around their base64 bytes (no ``json.dumps`` copies of
        megabytes of base64), with its length known: sent as Content-Length, never chunked."""
        from ._compat import make_request_options

        headers = dict(self.extra_headers or {})
        arguments: dict[str, Any] = {}
        if self.files is not None:
            headers = {"Content-Type": "multipart/form-data", **headers}
            arguments.update(body=self.body, files=self.files)
        elif self._parts is not None:
            headers.update({"Content-Type": "application/json", "Content-Length": str(len(self._parts))})
            arguments["content"] = AsyncJSONContent(self._parts) if is_async else JSONContent(self._parts)
        else:
            arguments["body"] = self.body
        # extra_body is not passed on: it is already deep-merged into the body we send.
        options = make_request_options(
            extra_headers=headers or None,
            extra_query=self.extra_query,
            timeout=self.timeout,
            security={"bearer_auth": True},
        )
        if max_retries is not None:
            options["max_retries"] = max_retries
        arguments["options"] = options
        return arguments


def given(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the parameters the caller did not give: they are not sent at all."""
    return {k: v for k, v in values.items() if not isinstance(v, (Omit, NotGiven))}


def _extra_body(extra_body: object) -> Mapping[str, Any] | None:
    if extra_body is None or isinstance(extra_body, Mapping):
        return extra_body
    raise StepFunValidationError("extra_body", extra_body, "a dict of extra JSON fields")


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``extra`` wins on conflicting leaves; nested objects are merged key by key, so an
    ``extra_body={"style_reference": {"weight": 1.2}}`` keeps the typed reference's image."""
    merged = dict(base)
    for key, value in (extra or {}).items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = value
    return merged


def prepare(
    endpoint: catalog.Endpoint,
    arguments: Mapping[str, Any],
    settings: ClientSettings,
    *,
    base_url: object = None,
) -> PreparedRequest:
    """The request for one call of ``client.images.<endpoint>``: ``arguments`` are the method's
    keyword arguments (the endpoint's :data:`PARAMETERS` and the :data:`CALL_OPTIONS`); those
    not given (``omit``) are not sent. ``fit=None`` means the client's ``settings.fit``."""
    unknown = set(arguments) - PARAMETERS[endpoint] - CALL_OPTIONS - {"self"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) for {endpoint}: {', '.join(sorted(unknown))}")
    fit = arguments.get("fit")
    if isinstance(fit, bool):
        settings = dataclasses.replace(settings, fit=fit)
    typed = given({k: v for k, v in arguments.items() if k in PARAMETERS[endpoint]})
    extra_body = arguments.get("extra_body")
    if endpoint == "image2image":
        _refuse_image2image_on_step_plan(base_url, typed.get("model"), settings)
    options: dict[str, Any] = {
        "extra_headers": arguments.get("extra_headers"),
        "extra_query": arguments.get("extra_query"),
        "timeout": arguments.get("timeout", not_given),
    }
    check_call_options(endpoint, **options)
    if endpoint == "edits":
        form, files = prepare_edit(typed, extra_body, settings)
        warn_if_undocumented(base_url, form.get("model"), endpoint)
        return PreparedRequest(endpoint, form, files, **options)
    body = prepare_json(endpoint, typed, extra_body, settings)
    warn_if_undocumented(base_url, body.get("model"), endpoint)
    parts = _JSONParts(body) if has_inline_images(body) else None
    return PreparedRequest(endpoint, body, None, _parts=parts, **options)


def _refuse_image2image_on_step_plan(base_url: object, model: object, settings: ClientSettings) -> None:
    """The step_plan base URL serves generations and edits but no image2image (the contract):
    refuse locally instead of letting the server answer 404."""
    if not settings.validate:
        return
    path = base_url.path if isinstance(base_url, httpx2.URL) else str(base_url or "")
    if "/step_plan/" not in path.rstrip("/") + "/":
        return
    raise StepFunValidationError(
        "model",
        model,
        f"the step_plan base URL ({base_url}) has no image2image endpoint",
        model=model if isinstance(model, str) else None,
        endpoint="image2image",
        hint=f"use DEFAULT_BASE_URL ({catalog.DEFAULT_BASE_URL}) for image2image, e.g. "
        "client.with_options(base_url=stepfun_openai.DEFAULT_BASE_URL).images.image2image(...)",
    )


def _fitter(
    endpoint: catalog.Endpoint, model: object, settings: ClientSettings
) -> Callable[[bytes, str], bytes] | None:
    """With ``fit``: a function that makes image bytes acceptable to ``model`` on ``endpoint``."""
    if not settings.fit or not isinstance(model, str):
        return None
    spec = catalog.get_model(model)
    endpoint_spec = spec.spec(endpoint) if spec is not None else None
    limits = endpoint_spec.image_limits if endpoint_spec is not None else None
    if limits is None:
        return None
    from ._fit import fit_image

    def fit(data: bytes, param: str) -> bytes:
        return fit_image(data, limits, param=param)

    return fit


def input_limit(endpoint: catalog.Endpoint, model: object, settings: ClientSettings) -> int:
    """The most bytes an input image is read or decoded to: the model's limit when validating
    (a larger image would be refused anyway), else :data:`~._inputs.MAX_INPUT_BYTES` (with
    ``validate=False``, with ``fit``, which may shrink a larger image, or for an unknown model)."""
    if not settings.validate or settings.fit or not isinstance(model, str):
        return MAX_INPUT_BYTES
    spec = catalog.get_model(model)
    endpoint_spec = spec.spec(endpoint) if spec is not None else None
    limits = endpoint_spec.image_limits if endpoint_spec is not None else None
    return limits.max_bytes if limits is not None else MAX_INPUT_BYTES


class _Encoder:
    """Encodes each image of a request once and remembers what it learned (format, pixel size,
    bytes), so validation reads that instead of inspecting the encoded image again."""

    def __init__(self, fit: Callable[[bytes, str], bytes] | None, limit: int = MAX_INPUT_BYTES) -> None:
        self.fit = fit
        self.limit = limit
        self.learned: dict[str, tuple[object, EncodedImage]] = {}
        """``param -> (the wire value, what encoding learned)``: used while the body still holds it."""

    def encode(self, value: Any, param: str, data_url: bool = True, *, key: str | None = None) -> object:
        """A wire value: the user's string (URL, or base64 that cannot go as is) or an ``InlineImage``.
        ``param`` names the argument in errors; ``key`` is where the value goes in the body."""
        fit = self.fit
        fit_one = (lambda data: fit(data, param)) if fit is not None else None
        encoded = encode_inline(value, param=param, data_url=data_url, fit=fit_one, limit=self.limit)
        if isinstance(encoded, EncodedImage):
            self.learned[key or param] = (encoded.text, encoded)
            return encoded.text
        self.learned[key or param] = (encoded, encoded.encoded())
        return encoded

    def known(self, body: Mapping[str, Any]) -> dict[str, EncodedImage]:
        """What encoding learned about the images still in ``body`` after the merge (an
        ``extra_body`` value that replaced one is inspected by validation instead)."""
        style = body.get("style_reference")
        current = {
            "source_url": body.get("source_url"),
            "source_image": body.get("source_image"),
            "style_reference.source_url": style.get("source_url") if isinstance(style, Mapping) else None,
        }
        return {param: info for param, (wire, info) in self.learned.items() if current.get(param, _MISSING) is wire}


_MISSING = object()


def _style_reference(value: Any, encoder: _Encoder) -> dict[str, Any]:
    if isinstance(value, StyleReference):
        image, weight = value.image, value.weight
        extra: dict[str, Any] = {}
    elif isinstance(value, Mapping):
        extra = {k: v for k, v in value.items() if k not in ("image", "source_url", "weight")}
        image = value.get("source_url", value.get("image"))
        weight = value.get("weight")
    else:
        raise StepFunValidationError(
            "style_reference",
            value,
            "a StyleReference(image=..., weight=...) or a dict with image/source_url and weight",
        )
    encoded: dict[str, Any] = {
        **extra,
        "source_url": encoder.encode(image, "style_reference.image", key="style_reference.source_url"),
    }
    if weight is not None:
        encoded["weight"] = weight
    return encoded


_INTEGER_FIELDS = ("seed", "steps", "n")


def _whole_numbers_as_int(body: dict[str, Any]) -> None:
    """``steps=8.0`` means 8, but StepFun refuses ``8.0`` on the wire: send the integer."""
    for key in _INTEGER_FIELDS:
        value = body.get(key)
        if isinstance(value, float) and value.is_integer():
            body[key] = int(value)


_SEEDS = random.Random(secrets.randbits(128))
"""Seeds need to differ, not to be secret: one generator seeded from the OS once, instead of a
system call per request (``secrets`` reads ``os.urandom`` every time). Reseeded in a forked
child, so worker processes never draw the same seeds."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _SEEDS.seed(secrets.randbits(128)))


def next_seed() -> int:
    """A fresh random seed (1..SEED_MAX: 0 would ask the server to pick)."""
    return _SEEDS.randrange(catalog.SEED_MAX) + 1


def _stable_seed(body: dict[str, Any], settings: ClientSettings) -> None:
    """Pick the seed before the first attempt, so every retry asks for the same image."""
    seed = body.get("seed")
    # Only "no seed" (missing, None, 0) is replaced; a wrong one such as False is left to validation.
    if settings.stable_seed and (seed is None or (type(seed) in (int, float) and seed == 0)):
        body["seed"] = next_seed()


def _finish_body(body: dict[str, Any], settings: ClientSettings, endpoint: catalog.Endpoint) -> None:
    _whole_numbers_as_int(body)
    _stable_seed(body, settings)
    _size_from_aspect(body, endpoint)
    if isinstance(body.get("model"), str):
        warn_if_retired(body["model"])


def _size_from_aspect(body: dict[str, Any], endpoint: catalog.Endpoint) -> None:
    """``size="16:9"`` (or ``"landscape"``...) becomes the model's own closest size, in its own
    order. An aspect is never a valid size on the wire, so this holds with ``validate=False`` too."""
    size, model = body.get("size"), body.get("model")
    if not catalog.is_aspect(size):
        return
    assert isinstance(size, str)
    if not isinstance(model, str) or catalog.get_model(model) is None:
        raise StepFunValidationError(
            "size", size, "an aspect ratio needs a model from the catalog, to pick that model's size", endpoint=endpoint
        )
    try:
        body["size"] = catalog.resolve_size(model, endpoint, size)
    except ValueError as exc:
        raise StepFunValidationError("size", size, str(exc), model=model, endpoint=endpoint) from None


def prepare_json(
    endpoint: catalog.Endpoint,
    typed: Mapping[str, Any],
    extra_body: object,
    settings: ClientSettings,
) -> dict[str, Any]:
    """The JSON body for ``generations`` or ``image2image``."""
    body = given(typed)
    model = body.get("model")
    encoder = _Encoder(_fitter(endpoint, model, settings), input_limit(endpoint, model, settings))
    if "source_url" in body:
        body["source_url"] = encoder.encode(body["source_url"], "source_url")
    if "source_image" in body:
        # The seed guide sends bare base64 here, and that is what StepFun was seen to accept.
        body["source_image"] = encoder.encode(body["source_image"], "source_image", data_url=False)
    if "style_reference" in body:
        body["style_reference"] = _style_reference(body["style_reference"], encoder)
    body = deep_merge(body, _extra_body(extra_body))
    _finish_body(body, settings, endpoint)
    if settings.validate:
        validate_request(endpoint, body, images=encoder.known(body))
    check_wire_values(body, endpoint)
    return body


def _inline_images(body: Mapping[str, Any]) -> Iterator[tuple[str, InlineImage]]:
    for key, value in body.items():
        if isinstance(value, InlineImage):
            yield key, value
    style = body.get("style_reference")
    if isinstance(style, Mapping):
        for key, value in style.items():
            if isinstance(value, InlineImage):
                yield f"style_reference.{key}", value


class _JSONParts:
    """A JSON body as a few ``bytes`` parts, inline images' base64 among them untouched."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        from ._compat import openapi_dumps

        self.sent = body
        images = {str(id(image)): image for _, image in _inline_images(body)}
        text = openapi_dumps(_replace_inline(body))
        parts: list[bytes] = []
        pos = 0
        for match in _MARKER_RE.finditer(text):
            image = images[match.group(1).decode("ascii")]
            parts += [text[pos : match.start()], b'"' + image.prefix, *image.chunks, b'"']
            pos = match.end()
        parts.append(text[pos:])
        self.parts = [part for part in parts if part]
        self.length = sum(len(part) for part in self.parts)

    def __len__(self) -> int:
        return self.length


_MARKER_RE = re.compile(rb'"@@stepfun-inline-(\d+)@@"')


def _replace_inline(value: Any) -> Any:
    if isinstance(value, InlineImage):
        return f"@@stepfun-inline-{id(value)}@@"
    if isinstance(value, Mapping):
        return {k: _replace_inline(v) for k, v in value.items()}
    return value


class JSONContent:
    """A JSON request body for the sync client: iterable (and re-iterable, for retries) parts.
    ``sent`` is the body as a mapping, for provenance."""

    def __init__(self, parts: _JSONParts) -> None:
        self._parts = parts
        self.sent = parts.sent

    def __len__(self) -> int:
        return len(self._parts)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._parts.parts)


class AsyncJSONContent(JSONContent):
    """The async client's :class:`JSONContent`."""

    __iter__ = None  # type: ignore[assignment]  # httpx2 must take the async path

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self._parts.parts:
            yield part


def has_inline_images(body: Mapping[str, Any]) -> bool:
    return any(True for _ in _inline_images(body))


def _form_value(value: Any) -> Any:
    """A form field. Numbers and booleans stay typed: the SDK writes them exactly as StepFun
    expects (``5``, ``1.5``, ``true``/``false``), and provenance then records them typed."""
    if isinstance(value, (str, int, float)):
        return value
    return str(value)


def prepare_edit(
    typed: Mapping[str, Any], extra_body: object, settings: ClientSettings
) -> tuple[dict[str, Any], list[tuple[str, tuple[str, bytes, str]]]]:
    """The multipart form fields and the file for ``edits``; form fields go as strings (numbers
    and booleans are written by the SDK: ``5``, ``1.5``, ``true``)."""
    body = given(typed)
    if "image" not in body:
        raise StepFunValidationError("image", None, "required: the image to edit", endpoint="edits")
    image = image_bytes(body.pop("image"), param="image", limit=input_limit("edits", body.get("model"), settings))
    fit = _fitter("edits", body.get("model"), settings)
    if fit is not None:
        image = fit(image, "image")
    filename = body.pop("filename", None)
    info = sniff(image[:HEADER_BYTES])
    body = deep_merge(body, _extra_body(extra_body))
    _finish_body(body, settings, "edits")
    if settings.validate:
        validate_request("edits", body, edit_image=info, edit_bytes=len(image))
    check_wire_values(body, "edits")
    form = {key: _form_value(value) for key, value in body.items()}
    name = filename or f"image.{info.format or 'png'}"
    return form, [("image", (name, image, info.mime_type))]


_EDGE = 4096
"""Base64 characters decoded strictly at each end of a result (a multiple of 4)."""
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_HEAD_CHARS = 88
"""Base64 characters whose 66 bytes tell any image format (``_sniff``) apart."""


def is_base64(text: str) -> bool:
    """Whether ``text`` is strict, padded base64: ASCII (a flag: no scan), a length that is a
    multiple of 4, its first and last few thousand characters strictly decoded (padding only at
    the end), and every character between them in the alphabet (one C-speed pass, no decoding:
    the image is decoded once, by ``read()``/``save()``, so a response keeps one copy of it). A
    truncated or non-base64 answer fails here, where it is retried."""
    if len(text) % 4 or not text.isascii():
        return False
    try:
        if len(text) <= 2 * _EDGE:
            base64.b64decode(text, validate=True)
            return True
        base64.b64decode(text[:_EDGE], validate=True)
        base64.b64decode(text[-_EDGE:], validate=True)
    except (binascii.Error, ValueError):
        return False
    return not text[_EDGE:-_EDGE].encode("ascii").translate(None, _BASE64_ALPHABET)


DECODE_RESULTS: contextvars.ContextVar[bool] = contextvars.ContextVar("stepfun_decode_results", default=False)
"""Set by a caller that reads every image at once (the batch): the check then decodes each result
strictly, once, and keeps the bytes (``read()`` is free), instead of scanning the base64 and leaving
the decoding to ``read()``: one pass over the data instead of two."""


def _check_b64_image(text: str, where: str, response: httpx2.Response) -> bytes | None:
    """An inline result is usable: not empty, strict base64, at most ``DEFAULT_MAX_BYTES`` (50 MiB)
    decoded, and an image (PNG, JPEG, WebP or GIF by its first bytes); else ``MalformedResponseError``.
    The decoded bytes when :data:`DECODE_RESULTS` is set, else ``None``."""
    if not text:
        raise malformed(f"{where}.b64_json is empty", response)
    size = len(text) // 4 * 3 - len(text[-2:]) + len(text[-2:].rstrip("="))
    if size > DEFAULT_MAX_BYTES:
        raise malformed(
            f"{where}.b64_json decodes to {size:,} bytes, more than the {DEFAULT_MAX_BYTES:,} a result may be",
            response,
        )
    data: bytes | None = None
    if DECODE_RESULTS.get():
        try:
            data = base64.b64decode(text, validate=True) if len(text) % 4 == 0 and text.isascii() else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            raise malformed(f"{where}.b64_json is not valid base64", response)
        head = data[:HEADER_BYTES]
    elif not is_base64(text):
        raise malformed(f"{where}.b64_json is not valid base64", response)
    else:
        head = base64.b64decode(text[:_HEAD_CHARS])
    if sniff(head).format is None:
        raise malformed(f"{where}.b64_json is not a PNG, JPEG, WebP or GIF image (it starts {head[:12]!r})", response)
    return data


def _excerpt(response: httpx2.Response, secrets: Sequence[str]) -> str:
    try:
        text = response.content[: _EXCERPT * 8].decode("utf-8", "replace")
    except httpx2.ResponseNotRead:
        return ""
    return redact_secrets(text, secrets)[:_EXCERPT]  # redacted whole, then cut: no key prefix left


def malformed(reason: str, response: httpx2.Response, body: object | None = None) -> MalformedResponseError:
    secrets = request_secrets(response.request)
    return MalformedResponseError(
        reason,
        request=response.request,
        status_code=response.status_code,
        trace_id=response.headers.get("x-trace-id"),
        excerpt=_excerpt(response, secrets),
        body=redact_secrets(body, secrets),
    )


def finish_images_response(
    result: object, response: httpx2.Response, sent: Mapping[str, Any] | None, region: catalog.Region | None = None
) -> Any:
    """Check that an image response is usable and give it its trace id and provenance.

    Anything unusable becomes a ``MalformedResponseError`` (which the retry policy treats as
    transient), never an ``AttributeError`` or ``KeyError`` later in the user's code.
    """
    from .types import StepFunImage, StepFunImagesResponse, ensure_private  # with the first response

    if not isinstance(result, StepFunImagesResponse):
        kind = response.headers.get("content-type", "unknown content type")
        raise malformed(f"expected a JSON image response, got {kind}", response)
    ensure_private(result)
    extra = result.model_extra or {}
    if "error" in extra:
        raise malformed("HTTP 200 carrying an error envelope", response, extra.get("error"))
    if not result.data:
        raise malformed("no images in 'data'", response)
    if not isinstance(result.data, list):
        raise malformed(f"'data' is a {type(result.data).__name__}, not a list", response)
    if result.created is not None and (isinstance(result.created, bool) or not isinstance(result.created, int)):
        raise malformed(f"'created' is not an integer timestamp: {result.created!r:.40}", response)
    trace_id = response.headers.get("x-trace-id")
    result._trace_id = trace_id
    request_info = _provenance(sent, response)
    cost = image_cost((sent or {}).get("model"), catalog.host_of(response.request.url), region)
    for index, image in enumerate(result.data):
        if not isinstance(image, StepFunImage):
            raise malformed(f"data[{index}] is not an image object", response)
        ensure_private(image)
        for name in ("b64_json", "image", "url"):
            if not isinstance(getattr(image, name), (str, type(None))):
                raise malformed(f"data[{index}].{name} is not a string", response)
        if image.seed is not None and (isinstance(image.seed, bool) or not isinstance(image.seed, int)):
            raise malformed(f"data[{index}].seed is not an integer", response)
        if not isinstance(image.finish_reason, (str, type(None))):
            raise malformed(f"data[{index}].finish_reason is not a string", response)
        if image.b64_json is None and image.image is not None:
            image.b64_json = image.image
        if image.content_filtered:
            # Unusable whatever it carries (read() refuses it), but still base64 if not empty.
            if image.b64_json and not is_base64(image.b64_json):
                raise malformed(f"data[{index}].b64_json is not valid base64", response)
        elif image.b64_json is not None:
            image._data = _check_b64_image(image.b64_json, f"data[{index}]", response)
        elif image.url is None:
            raise malformed(f"data[{index}] has neither url nor b64_json", response)
        image._context = {**request_info, "index": index, "created": result.created, "trace_id": trace_id}
        image._cost = cost
    return result


def _provenance(sent: Mapping[str, Any] | None, response: httpx2.Response) -> dict[str, Any]:
    """What was asked for, without image payloads (they can be megabytes)."""
    info: dict[str, Any] = {"endpoint": response.request.url.path.rsplit("/", 1)[-1]}
    for key, value in (sent or {}).items():
        if key in ("source_url", "source_image", "image"):
            info[key] = _describe_image(value)
        elif key == "style_reference" and isinstance(value, Mapping):
            info[key] = {k: (_describe_image(v) if k in ("source_url", "image") else v) for k, v in value.items()}
        else:
            info[key] = value
    return info


def _describe_image(value: object) -> object:
    if isinstance(value, InlineImage):
        return f"<inline image, {len(value)} base64 chars>"
    if is_http_url(value):
        assert isinstance(value, str)
        return redact_url(value)  # a presigned source URL's signature is not stored
    if isinstance(value, str):
        return f"<inline image, {len(value)} base64 chars>"
    return "<image>"
