"""From typed keyword arguments to the request StepFun receives (shared by sync and async).

Data flows one way: typed arguments -> images encoded -> merged with ``extra_body`` -> stable
seed -> validated against the catalog -> the SDK sends it.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from openai import NotGiven, Omit

from . import catalog
from ._exceptions import MalformedResponseError, StepFunValidationError
from ._inputs import EncodedImage, InlineImage, encode_inline, image_bytes
from ._sniff import HEADER_BYTES, sniff
from ._validation import check_image, validate_request, warn_if_retired
from .types import StepFunImage, StepFunImagesResponse, StyleReference, ensure_private

__all__ = ["ClientSettings", "deep_merge", "finish_images_response", "prepare_edit", "prepare_json"]

_EXCERPT = 300


@dataclass(frozen=True)
class ClientSettings:
    validate: bool = True
    stable_seed: bool = True
    fit: bool = False
    """Convert/scale input images that the model would reject (needs Pillow); see ``_fit``."""


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


def _bind(fit: Callable[[bytes, str], bytes], param: str) -> Callable[[bytes], bytes]:
    return lambda data: fit(data, param)


def _encode(value: Any, param: str, fit: Callable[[bytes, str], bytes] | None, data_url: bool = True) -> object:
    """A wire value: the user's string (URL, or base64 that cannot go as is) or an ``InlineImage``."""
    fit_one = _bind(fit, param) if fit is not None else None
    encoded = encode_inline(value, param=param, data_url=data_url, fit=fit_one)
    return encoded.text if isinstance(encoded, EncodedImage) else encoded


def _style_reference(value: Any, fit: Callable[[bytes, str], bytes] | None = None) -> dict[str, Any]:
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
    encoded: dict[str, Any] = {**extra, "source_url": _encode(image, "style_reference.image", fit)}
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


def _stable_seed(body: dict[str, Any], settings: ClientSettings) -> None:
    """Pick the seed before the first attempt, so every retry asks for the same image."""
    seed = body.get("seed")
    # Only "no seed" (missing, None, 0) is replaced; a wrong one such as False is left to validation.
    if settings.stable_seed and (seed is None or (seed == 0 and not isinstance(seed, bool))):
        body["seed"] = secrets.randbelow(catalog.SEED_MAX) + 1


def prepare_json(
    endpoint: catalog.Endpoint,
    typed: Mapping[str, Any],
    extra_body: object,
    settings: ClientSettings,
) -> dict[str, Any]:
    """The JSON body for ``generations`` or ``image2image``."""
    body = given(typed)
    fit = _fitter(endpoint, body.get("model"), settings)
    if "source_url" in body:
        body["source_url"] = _encode(body["source_url"], "source_url", fit)
    if "source_image" in body:
        # The seed guide sends bare base64 here, and that is what StepFun was seen to accept.
        body["source_image"] = _encode(body["source_image"], "source_image", fit, data_url=False)
    if "style_reference" in body:
        body["style_reference"] = _style_reference(body["style_reference"], fit)
    body = deep_merge(body, _extra_body(extra_body))
    _whole_numbers_as_int(body)
    _stable_seed(body, settings)
    if isinstance(body.get("model"), str):
        warn_if_retired(body["model"])
    if settings.validate:
        _validate_with_inline_images(endpoint, body)
    return body


def _inline_images(body: Mapping[str, Any]) -> list[tuple[str, InlineImage]]:
    found = [(key, value) for key, value in body.items() if isinstance(value, InlineImage)]
    style = body.get("style_reference")
    if isinstance(style, Mapping):
        found += [(f"style_reference.{k}", v) for k, v in style.items() if isinstance(v, InlineImage)]
    return found


def _validate_with_inline_images(endpoint: catalog.Endpoint, body: Mapping[str, Any]) -> None:
    """``validate_request`` on the body, inline images checked from their header and byte count
    (never turned into a string)."""
    inline = _inline_images(body)
    if not inline:
        validate_request(endpoint, body)
        return
    view = {key: (value.head_text() if isinstance(value, InlineImage) else value) for key, value in body.items()}
    if isinstance(body.get("style_reference"), Mapping):
        view["style_reference"] = {
            k: (v.head_text() if isinstance(v, InlineImage) else v) for k, v in body["style_reference"].items()
        }
    spec = validate_request(endpoint, view)
    if spec.image_limits is None:
        return
    for param, image in inline:
        check_image(param, image.encoded(), image.nbytes, spec.image_limits, str(body.get("model")), endpoint)


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


class JSONContent(_JSONParts):
    """A JSON request body for the sync client: iterable (and re-iterable, for retries) parts.
    ``sent`` is the body as a mapping, for provenance."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.parts)


class AsyncJSONContent(_JSONParts):
    """The async client's :class:`JSONContent`."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


def has_inline_images(body: Mapping[str, Any]) -> bool:
    return bool(_inline_images(body))


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
    image = image_bytes(body.pop("image"), param="image")
    fit = _fitter("edits", body.get("model"), settings)
    if fit is not None:
        image = fit(image, "image")
    filename = body.pop("filename", None)
    info = sniff(image[:HEADER_BYTES])
    body = deep_merge(body, _extra_body(extra_body))
    _whole_numbers_as_int(body)
    _stable_seed(body, settings)
    if isinstance(body.get("model"), str):
        warn_if_retired(body["model"])
    if settings.validate:
        validate_request("edits", body, edit_image=info, edit_bytes=len(image))
    form = {key: _form_value(value) for key, value in body.items()}
    name = filename or f"image.{info.format or 'png'}"
    return form, [("image", (name, image, info.mime_type))]


def _excerpt(response: httpx2.Response) -> str:
    try:
        text = response.content[: _EXCERPT * 4].decode("utf-8", "replace")
    except httpx2.ResponseNotRead:
        return ""
    return text[:_EXCERPT]


def malformed(reason: str, response: httpx2.Response, body: object | None = None) -> MalformedResponseError:
    return MalformedResponseError(
        reason,
        request=response.request,
        status_code=response.status_code,
        trace_id=response.headers.get("x-trace-id"),
        excerpt=_excerpt(response),
        body=body,
    )


def finish_images_response(result: object, response: httpx2.Response, sent: Mapping[str, Any] | None) -> Any:
    """Check that an image response is usable and give it its trace id and provenance.

    Anything unusable becomes a ``MalformedResponseError`` (which the retry policy treats as
    transient), never an ``AttributeError`` or ``KeyError`` later in the user's code.
    """
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
        if image.b64_json is not None:
            try:
                # Decoded once: the check's result is what read() and save() hand out later.
                image._data = base64.b64decode(image.b64_json, validate=True)
            except (binascii.Error, ValueError):
                raise malformed(f"data[{index}].b64_json is not valid base64", response) from None
        elif image.url is None and not image.content_filtered:
            raise malformed(f"data[{index}] has neither url nor b64_json", response)
        image._context = {**request_info, "index": index, "created": result.created, "trace_id": trace_id}
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
    if isinstance(value, str) and value[:8].lower().startswith(("http://", "https://")):
        from ._download import redact_url

        return redact_url(value)  # a presigned source URL's signature is not stored
    if isinstance(value, str):
        return f"<inline image, {len(value)} base64 chars>"
    return "<image>"
