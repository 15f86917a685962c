"""Validation of image requests against the model catalog, in StepFun's words.

Every rejection is an :class:`ApiError` carrying the status, type and message the contract
documents, so the server only has to serialise it. Limits come from ``catalog``; this module
restates none of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import catalog
from .._sniff import HEADER_BYTES, sniff
from .._urls import is_data_url, is_http_url, is_loopback_host
from ._wire import FetchError, get

__all__ = [
    "ApiError",
    "ImageInput",
    "ImageRequest",
    "fetch_loopback",
    "invalid",
    "parse_edit_request",
    "parse_json_request",
    "sanitize",
]

UrlFetcher = Callable[[str, str], bytes]
"""``fetch(field_name, url)`` -> the bytes at ``url``, or an :class:`ApiError` naming the field."""


class ApiError(Exception):
    """An error response in the contract's envelope."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type}}


def invalid(name: str, hint: str) -> ApiError:
    return ApiError(400, "input_invalid", f"Request param: {name} is invalid, recommended val is: {hint}")


@dataclass(frozen=True)
class ImageInput:
    """An input image after its transport (base64, data URL, URL, upload) has been undone."""

    field: str
    data: bytes
    width: int
    height: int

    @property
    def digest(self) -> str:
        return digest(self.data)


@dataclass
class ImageRequest:
    """A validated request with every default resolved (``seed`` 0 still means "pick one")."""

    endpoint: catalog.Endpoint
    model: str
    prompt: str
    width: int
    height: int
    seed: int
    steps: int
    cfg_scale: float
    response_format: str
    negative_prompt: str | None = None
    text_mode: bool = False
    source: ImageInput | None = None
    source_weight: float | None = None
    style: ImageInput | None = None
    style_weight: float | None = None
    received: dict[str, Any] = field(default_factory=dict)
    """What arrived, with image payloads replaced by digests (for the PNG text chunk and the log)."""


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()[:16]} ({len(data)} bytes)"


_DIGEST_OVER = 256
_IMAGE_FIELDS = frozenset({"image", "source_url", "source_image"})


_SANITIZE_DEPTH = 16
"""Deeper values are logged as ``"..."``: a client's nesting must not exhaust the handler's stack."""


def sanitize(value: Any, key: str | None = None, *, depth: int = 0) -> Any:
    """``value`` with image payloads (and any other long string) replaced by a short digest."""
    if isinstance(value, str):
        is_payload = key in _IMAGE_FIELDS and not is_http_url(value)
        return digest(value.encode("utf-8", "surrogatepass")) if is_payload or len(value) > _DIGEST_OVER else value
    if isinstance(value, bytes):
        return digest(value)
    if isinstance(value, (Mapping, list)) and depth >= _SANITIZE_DEPTH:
        return "..."
    if isinstance(value, Mapping):
        return {str(k): sanitize(v, str(k), depth=depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [sanitize(v, depth=depth + 1) for v in value]
    return value


# Fields the contract defines for some model on an endpoint. One of them sent to a model that
# lacks it is rejected: the live service would ignore it silently, which hides client bugs.
_OPTIONAL_FEATURES: dict[str, Callable[[catalog.EndpointSpec], bool]] = {
    "negative_prompt": lambda spec: spec.negative_prompt_max is not None,
    "text_mode": lambda spec: spec.text_mode,
    "style_reference": lambda spec: spec.style_reference,
    "source_image": lambda spec: spec.source_image,
    "source_weight": lambda spec: spec.source_image or spec.requires_source,
}


def parse_json_request(endpoint: catalog.Endpoint, body: bytes, fetch: UrlFetcher) -> ImageRequest:
    """Validate a JSON body for ``generations`` or ``image2image``."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
        raise invalid("body", "a JSON object (the body is not valid JSON)") from None
    if not isinstance(payload, dict):
        raise invalid("body", "a JSON object")
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(payload):
        raise invalid("body", "JSON whose strings are valid Unicode (a \\ud800-\\udfff escape stands alone)")
    return _validate(endpoint, payload, form=False, fetch=fetch, upload=None)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""The cheap test first: without such an escape in the bytes, no string can hold a lone surrogate."""


def _has_lone_surrogate(payload: dict[str, Any]) -> bool:
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    except RecursionError:  # nested too deep to re-encode: whatever is deep inside, no field uses it
        return False
    return False


def parse_edit_request(fields: Mapping[str, str], files: Mapping[str, bytes], fetch: UrlFetcher) -> ImageRequest:
    """Validate the multipart form of ``/images/edits`` (values arrive as strings)."""
    upload = files.get("image", files.get("image[]"))
    payload: dict[str, Any] = dict(fields)
    return _validate("edits", payload, form=True, fetch=fetch, upload=upload)


def _validate(
    endpoint: catalog.Endpoint, payload: dict[str, Any], *, form: bool, fetch: UrlFetcher, upload: bytes | None
) -> ImageRequest:
    given = {k: v for k, v in payload.items() if v is not None}
    received = sanitize(given)
    if upload is not None:
        received["image"] = digest(upload)

    model = given.get("model")
    names = catalog.models_for(endpoint)
    model_spec = catalog.get_model(model) if isinstance(model, str) else None
    spec = model_spec.spec(endpoint) if model_spec else None
    if spec is None or not isinstance(model, str):
        raise invalid("model", "must be " + ",".join(names))

    prompt = given.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > spec.prompt_max:
        raise invalid("prompt", f"a non-empty string of at most {spec.prompt_max} characters")

    for name, supported in _OPTIONAL_FEATURES.items():
        if name in given and not supported(spec):
            others = [m for m in names if (s := catalog.MODELS[m].spec(endpoint)) and supported(s)]
            where = f"only {','.join(others)}" if others else f"no model on /images/{endpoint}"
            raise invalid(name, f"not supported by {model} ({where})")

    n = given.get("n", 1)
    if isinstance(n, bool) or n not in (1, "1" if form else 1):  # DECIDED: n > 1 is rejected, not clamped
        raise invalid("n", "must be 1")
    response_format = given.get("response_format", "url")
    if response_format not in catalog.RESPONSE_FORMATS:
        raise invalid("response_format", "must be " + ",".join(catalog.RESPONSE_FORMATS))

    seed = _integer("seed", given["seed"], catalog.SEED, form) if "seed" in given else 0
    steps = _integer("steps", given.get("steps", spec.steps.default), spec.steps, form)
    cfg_scale = _number("cfg_scale", given.get("cfg_scale", spec.cfg_scale.default), spec.cfg_scale, form)

    negative_prompt = given.get("negative_prompt")
    if negative_prompt is not None:
        limit = spec.negative_prompt_max or 0
        if not isinstance(negative_prompt, str) or len(negative_prompt) > limit:
            raise invalid("negative_prompt", f"a string of at most {limit} characters")
    text_mode = _boolean("text_mode", given["text_mode"], form) if "text_mode" in given else False

    request = ImageRequest(
        endpoint=endpoint,
        model=model,
        prompt=prompt,
        width=0,
        height=0,
        seed=seed,
        steps=steps,
        cfg_scale=cfg_scale,
        response_format=str(response_format),
        negative_prompt=negative_prompt,
        text_mode=text_mode,
        received=received,
    )
    _sources(request, spec, given, fetch, upload)
    request.width, request.height = _output_size(spec, given.get("size"), request.source)
    return request


def _sources(
    request: ImageRequest,
    spec: catalog.EndpointSpec,
    given: Mapping[str, Any],
    fetch: UrlFetcher,
    upload: bytes | None,
) -> None:
    limits = spec.image_limits or catalog.SOURCE_LIMITS
    if request.endpoint == "edits":
        raw = upload
        if raw is None and isinstance(given.get("image"), str):  # "base64 accepted" as a text field
            raw = _decode_image("image", given["image"], allow_url=False, fetch=fetch)
        if raw is None:
            raise invalid("image", f"a required image file ({limits.describe()})")
        request.source = _checked("image", raw, limits)
        return

    source_name = "source_url" if spec.requires_source else "source_image"
    if source_name in given:
        raw = _decode_image(source_name, given[source_name], allow_url=True, fetch=fetch)
        request.source = _checked(source_name, raw, limits)
        if "source_weight" not in given:
            raise invalid("source_weight", f"required with {source_name}: {catalog.SOURCE_WEIGHT.describe()}")
    elif spec.requires_source:
        raise invalid(source_name, f"a required image: http(s) URL, data URL or base64; {limits.describe()}")
    if "source_weight" in given:
        if request.source is None:
            raise invalid("source_weight", f"only together with {source_name}")
        request.source_weight = _number("source_weight", given["source_weight"], catalog.SOURCE_WEIGHT, False)

    style = given.get("style_reference")
    if style is not None:
        if not isinstance(style, Mapping):
            raise invalid("style_reference", '{"source_url": <image>, "weight": <number>}')
        key = "source_url" if "source_url" in style else "image"
        if style.get(key) is None:
            raise invalid("style_reference.source_url", "a required image: http(s) URL, data URL or base64")
        name = f"style_reference.{key}"
        request.style = _checked(name, _decode_image(name, style[key], allow_url=True, fetch=fetch), limits)
        request.style_weight = _number(
            "style_reference.weight", style.get("weight", catalog.STYLE_WEIGHT.default), catalog.STYLE_WEIGHT, False
        )


def _output_size(spec: catalog.EndpointSpec, size: Any, source: ImageInput | None) -> tuple[int, int]:
    if spec.sizes is None:  # output = input; ``size`` is ignored
        assert source is not None
        return source.width, source.height
    size = spec.default_size if size is None else size
    if size not in spec.sizes:
        raise invalid("size", "must be " + ",".join(spec.sizes))
    pixels = catalog.pixel_size(size, spec.size_order)
    assert pixels is not None
    if spec.endpoint != "edits" or source is None or source.width == source.height:
        return pixels
    # A non-square edit keeps the input's aspect ratio at about size² pixels, in multiples of 8.
    area = pixels[0] * pixels[1]
    aspect = source.width / source.height
    width = max(8, round(math.sqrt(area * aspect) / 8) * 8)
    height = max(8, round(area / width / 8) * 8)
    return width, height


def _integer(name: str, value: Any, rng: catalog.NumberRange, form: bool) -> int:
    if form and isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise invalid(name, f"must be {rng.describe()}") from None
    # JSON numbers with a fraction (8.0) or booleans fail like the live service's typed decoder.
    if isinstance(value, bool) or not isinstance(value, int) or not rng.contains(value):
        raise invalid(name, f"must be {rng.describe()}")
    return value


def _number(name: str, value: Any, rng: catalog.NumberRange, form: bool) -> float:
    if form and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise invalid(name, f"must be {rng.describe()}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(name, f"must be {rng.describe()}")
    if not rng.contains(float(value)):
        raise invalid(name, f"must be {rng.describe()}")
    return float(value)


_FORM_BOOLS = {"true": True, "false": False, "1": True, "0": False}


def _boolean(name: str, value: Any, form: bool) -> bool:
    if form and isinstance(value, str) and value.strip().lower() in _FORM_BOOLS:
        return _FORM_BOOLS[value.strip().lower()]
    if not isinstance(value, bool):
        raise invalid(name, "must be true or false")
    return value


_IMAGE_HINT = "a png or jpeg image as an http(s) URL, a data URL (data:image/png;base64,...) or base64"


def _decode_image(name: str, value: Any, *, allow_url: bool, fetch: UrlFetcher) -> bytes:
    if not isinstance(value, str) or not value.strip():
        raise invalid(name, _IMAGE_HINT)
    text = value.strip()
    if is_http_url(text):
        if not allow_url:
            raise invalid(name, "base64 or a data URL (URLs are not accepted here)")
        return fetch(name, text)
    if is_data_url(text):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise invalid(name, _IMAGE_HINT)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise invalid(name, _IMAGE_HINT) from None


def _checked(name: str, data: bytes, limits: catalog.ImageLimits) -> ImageInput:
    info = sniff(data[:HEADER_BYTES])
    width, height = info.width or 0, info.height or 0
    fits = (
        info.format in limits.formats
        and len(data) <= limits.max_bytes
        and limits.min_side <= min(width, height)
        and width <= limits.max_width
        and height <= limits.max_height
        and (not limits.max_aspect or max(width, height) <= limits.max_aspect * min(width, height))
    )
    if not fits:
        raise invalid(name, limits.describe())
    return ImageInput(name, data, width, height)


_FETCH_SECONDS = 10.0
_FETCH_REDIRECTS = 3


def fetch_loopback(name: str, url: str, *, max_bytes: int = catalog.MAX_IMAGE_BYTES) -> bytes:
    """Download ``url`` if it points at this machine; the emulator has no internet.

    Bounded like everything the emulator does for a client: at most ``max_bytes`` (10 MB, the
    largest input image), 10 s in all, and at most 3 redirects, each to loopback too (a redirect
    off the machine is refused, not followed).
    """
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:  # an unclosed "[" in the host
        raise invalid(name, f"a valid URL ({url[:80]!r} is not one)") from None
    if not is_loopback_host(host):
        raise invalid(
            name,
            f"a URL the emulator can reach: it has no internet and fetches only from loopback "
            f"(127.0.0.1, localhost, ::1), not {host!r}; send a data URL or base64 instead",
        )
    try:
        return get(
            url,
            max_bytes=max_bytes,
            seconds=_FETCH_SECONDS,
            host_allowed=is_loopback_host,
            max_redirects=_FETCH_REDIRECTS,
        )
    except FetchError as exc:
        raise invalid(name, f"a loopback URL that can be downloaded (the fetch was refused: {exc})") from None
