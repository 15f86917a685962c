"""From typed keyword arguments to the request StepFun receives (shared by sync and async).

Data flows one way: typed arguments -> images encoded -> merged with ``extra_body`` -> stable
seed -> validated against the catalog -> the SDK sends it.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx2
from openai import NotGiven, Omit

from . import catalog
from ._exceptions import MalformedResponseError, StepFunValidationError
from ._inputs import encode_image, image_bytes
from ._sniff import HEADER_BYTES, sniff
from ._validation import validate_request, warn_if_retired
from .types import StepFunImage, StepFunImagesResponse, StyleReference, ensure_private

__all__ = ["ClientSettings", "deep_merge", "finish_images_response", "prepare_edit", "prepare_json"]

_EXCERPT = 300


@dataclass(frozen=True)
class ClientSettings:
    validate: bool = True
    stable_seed: bool = True


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


def _style_reference(value: Any) -> dict[str, Any]:
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
    encoded: dict[str, Any] = {**extra, "source_url": encode_image(image, param="style_reference.image").text}
    if weight is not None:
        encoded["weight"] = weight
    return encoded


def _stable_seed(body: dict[str, Any], settings: ClientSettings) -> None:
    """Pick the seed before the first attempt, so every retry asks for the same image."""
    if settings.stable_seed and not body.get("seed"):
        body["seed"] = secrets.randbelow(catalog.SEED_MAX) + 1


def prepare_json(
    endpoint: catalog.Endpoint,
    typed: Mapping[str, Any],
    extra_body: object,
    settings: ClientSettings,
) -> dict[str, Any]:
    """The JSON body for ``generations`` or ``image2image``."""
    body = given(typed)
    if "source_url" in body:
        body["source_url"] = encode_image(body["source_url"], param="source_url").text
    if "source_image" in body:
        # The seed guide sends bare base64 here, and that is what StepFun was seen to accept.
        body["source_image"] = encode_image(body["source_image"], param="source_image", data_url=False).text
    if "style_reference" in body:
        body["style_reference"] = _style_reference(body["style_reference"])
    body = deep_merge(body, _extra_body(extra_body))
    _stable_seed(body, settings)
    if isinstance(body.get("model"), str):
        warn_if_retired(body["model"])
    if settings.validate:
        validate_request(endpoint, body)
    return body


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def prepare_edit(
    typed: Mapping[str, Any], extra_body: object, settings: ClientSettings
) -> tuple[dict[str, str], list[tuple[str, tuple[str, bytes, str]]]]:
    """The multipart form fields and the file for ``edits``; form fields go as strings."""
    body = given(typed)
    image = image_bytes(body.pop("image"), param="image")
    filename = body.pop("filename", None)
    info = sniff(image[:HEADER_BYTES])
    body = deep_merge(body, _extra_body(extra_body))
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
    trace_id = response.headers.get("x-trace-id")
    result._trace_id = trace_id
    request_info = _provenance(sent, response)
    result._request = request_info
    for index, image in enumerate(result.data):
        if not isinstance(image, StepFunImage):
            raise malformed(f"data[{index}] is not an image object", response)
        ensure_private(image)
        if image.b64_json is None and image.image is not None:
            image.b64_json = image.image
        if image.b64_json is not None:
            import base64
            import binascii

            try:
                base64.b64decode(image.b64_json, validate=True)
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
    if isinstance(value, str) and value[:8].lower().startswith(("http://", "https://")):
        return value
    if isinstance(value, str):
        return f"<inline image, {len(value)} base64 chars>"
    return "<image>"
