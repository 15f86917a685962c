"""``client.images``: openai's image resource with StepFun's parameters, plus ``image2image``.

Each endpoint is written once, as a function whose signature and docstring are the method's and
whose body builds the :class:`~stepfun_openai._requests.PreparedRequest`; the sync and async
resources send it (the only twinned part is the ``await``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec

import httpx2
from openai import NotGiven, Omit, not_given, omit
from openai.resources import images as _openai_images
from openai.resources.images import AsyncImages as _AsyncImages
from openai.resources.images import Images as _Images

from . import _fanout, catalog
from ._compat import (
    Body,
    Headers,
    Query,
    async_to_streamed_response_wrapper,
    cached_property,
    legacy_response,
    to_streamed_response_wrapper,
)
from ._input_types import ImageInput, StyleReference
from ._requests import ClientSettings, PreparedRequest, prepare

if TYPE_CHECKING:
    from ._client import AsyncStepFun, StepFun
    from .types import StepFunImagesResponse

__all__ = ["AsyncImages", "Images"]

ResponseFormat = Literal["url", "b64_json"]

_P = ParamSpec("_P")
_Resource = Any  # Images or AsyncImages: an endpoint function only reads ``_client``


def _prepare(endpoint: catalog.Endpoint, resource: _Resource, arguments: dict[str, Any]) -> PreparedRequest:
    client = resource._client
    settings: ClientSettings = getattr(client, "_stepfun_settings", ClientSettings())
    return prepare(endpoint, arguments, settings, base_url=getattr(client, "base_url", None))


def _signature(endpoint: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(endpoint).replace(return_annotation="StepFunImagesResponse")


def _sync(
    endpoint: Callable[Concatenate[_Resource, _P], PreparedRequest],
) -> Callable[Concatenate[Images, _P], StepFunImagesResponse]:
    @functools.wraps(endpoint)
    def method(self: Images, *args: _P.args, **kwargs: _P.kwargs) -> StepFunImagesResponse:
        fan_out = _fanout.plan(self._client, kwargs)
        request = endpoint(self, *args, **kwargs)
        if fan_out is None:
            return self._send(request)
        return fan_out.combine(_fanout.send_all(fan_out.requests(request), self._send))

    method.__signature__ = _signature(endpoint)  # type: ignore[attr-defined]
    return method  # type: ignore[return-value]


def _async(
    endpoint: Callable[Concatenate[_Resource, _P], PreparedRequest],
) -> Callable[Concatenate[AsyncImages, _P], Coroutine[Any, Any, StepFunImagesResponse]]:
    @functools.wraps(endpoint)
    async def method(self: AsyncImages, *args: _P.args, **kwargs: _P.kwargs) -> StepFunImagesResponse:
        fan_out = _fanout.plan(self._client, kwargs)
        request = endpoint(self, *args, **kwargs)
        if fan_out is None:
            return await self._send(request)
        return fan_out.combine(await _fanout.asend_all(fan_out.requests(request), self._send))

    method.__signature__ = _signature(endpoint)  # type: ignore[attr-defined]
    return method  # type: ignore[return-value]


def _generate(
    self: _Resource,
    /,
    *,
    model: str,
    prompt: str,
    size: str | Omit = omit,
    n: int | Omit = omit,
    response_format: ResponseFormat | Omit = omit,
    seed: int | Omit = omit,
    steps: int | Omit = omit,
    cfg_scale: float | Omit = omit,
    negative_prompt: str | Omit = omit,
    text_mode: bool | Omit = omit,
    style_reference: StyleReference | dict[str, Any] | Omit = omit,
    source_image: ImageInput | Omit = omit,
    source_weight: float | Omit = omit,
    fit: bool | None = None,
    extra_headers: Headers | None = None,
    extra_query: Query | None = None,
    extra_body: Body | None = None,
    timeout: float | httpx2.Timeout | NotGiven | None = not_given,
) -> PreparedRequest:
    """Text to image (``POST /images/generations``).

    Args:
      model: ``step-image-edit-2`` (fast, 8 steps), ``step-2x-large``, or the retired ``step-1x-medium``.
      prompt: what to draw, at most 512 characters.
      size: one of the model's sizes (``step-image-edit-2`` writes HEIGHTxWIDTH), default 1024x1024.
      n: only 1 is supported.
      response_format: ``url`` (default; a signed URL valid about an hour) or ``b64_json``.
      seed: 1..2147483647 to reproduce an image; omitted or 0 = random (the client then picks
        one before the first attempt so retries ask for the same image; ``data[].seed`` has it).
      steps: denoising steps (1..50; default 8 for step-image-edit-2, 50 otherwise).
      cfg_scale: prompt adherence, 1..10 (default 1.0 / 6 / 7.5 by model).
      negative_prompt: what to avoid (step-image-edit-2; ignored when cfg_scale is 1.0).
      text_mode: better text rendering (step-image-edit-2).
      style_reference: borrow an image's style (step-1x-medium): ``StyleReference(image, weight)``.
      source_image: an image to start from (the seed guide's "垫图"); prefer ``image2image``.
      source_weight: with ``source_image``: (0, 1], smaller = closer to the source.
      extra_body: merged into the JSON body key by key; its values win on conflicts.
      fit: with Pillow, convert an unsupported input format to PNG/JPEG and scale an
        over-limit image down (a warning says what changed); default: the client's ``fit``.
    """
    return _prepare("generations", self, locals())


def _image2image(
    self: _Resource,
    /,
    *,
    model: str,
    prompt: str,
    source_url: ImageInput,
    source_weight: float,
    size: str | Omit = omit,
    n: int | Omit = omit,
    response_format: ResponseFormat | Omit = omit,
    seed: int | Omit = omit,
    steps: int | Omit = omit,
    cfg_scale: float | Omit = omit,
    fit: bool | None = None,
    extra_headers: Headers | None = None,
    extra_query: Query | None = None,
    extra_body: Body | None = None,
    timeout: float | httpx2.Timeout | NotGiven | None = not_given,
) -> PreparedRequest:
    """Image to image (``POST /images/image2image``; not in the OpenAI SDK).

    Args:
      model: ``step-2x-large`` or the retired ``step-1x-medium``.
      prompt: at most 1024 characters.
      source_url: the source image: a URL (sent as is), a data URL, base64, a path, bytes or a
        binary file (png/jpeg, at most 10 MB and 2048x2048); local images go as a data URL.
      source_weight: (0, 1]; smaller = closer to the source, 1 = ignore it. Guide: 0.8-1.0
        variations, 0-0.5 detail enhancement, 0.3-0.8 small edits.
      size: 256x256, 512x512, 768x768, 1024x1024 (default), 1280x800, 800x1280.
      steps: 1..100, default 50. cfg_scale: 1..10 (default 6, or 7.5 for step-1x-medium).
      fit: convert/scale a source the model would reject (needs Pillow); see ``generate``.
    """
    return _prepare("image2image", self, locals())


def _edit(
    self: _Resource,
    /,
    *,
    image: ImageInput,
    prompt: str,
    model: str,
    size: str | Omit = omit,
    n: int | Omit = omit,
    response_format: ResponseFormat | Omit = omit,
    seed: int | Omit = omit,
    steps: int | Omit = omit,
    cfg_scale: float | Omit = omit,
    negative_prompt: str | Omit = omit,
    text_mode: bool | Omit = omit,
    fit: bool | None = None,
    extra_headers: Headers | None = None,
    extra_query: Query | None = None,
    extra_body: Body | None = None,
    timeout: float | httpx2.Timeout | NotGiven | None = not_given,
) -> PreparedRequest:
    """Edit an image by instruction (``POST /images/edits``, multipart).

    Args:
      image: the image to edit: a path, bytes, a binary file, base64 or a data URL.
      prompt: the instruction, at most 512 characters.
      model: ``step-image-edit-2`` (output size = input size) or ``step-1x-edit``.
      size: step-1x-edit only: 512x512 (default), 768x768, 1024x1024.
      steps: 1..50 (default 8 / 28). cfg_scale: 1..10 (default 1.0 / 6).
      negative_prompt: step-image-edit-2. text_mode: better text rendering.
      fit: convert/scale an image the model would reject (needs Pillow); see ``generate``.
    """
    return _prepare("edits", self, locals())


ENDPOINT_FUNCTIONS: dict[catalog.Endpoint, Callable[..., PreparedRequest]] = {
    "generations": _generate,
    "image2image": _image2image,
    "edits": _edit,
}
"""Each endpoint's one definition (the batch and tests read the parameters from ``PARAMETERS``)."""


# Built outside the classes: inside, mypy would infer their types from the SDK methods they override.
_sync_generate, _sync_image2image, _sync_edit = _sync(_generate), _sync(_image2image), _sync(_edit)
_async_generate, _async_image2image, _async_edit = _async(_generate), _async(_image2image), _async(_edit)


class Images(_Images):
    """Sync image endpoints. Parameters you don't give are not sent; StepFun applies its defaults
    (see the catalog: ``stepfun_openai.catalog.MODELS``)."""

    _client: StepFun

    @cached_property
    def with_raw_response(self) -> ImagesWithRawResponse:
        return ImagesWithRawResponse(self)

    @cached_property
    def with_streaming_response(self) -> ImagesWithStreamingResponse:
        return ImagesWithStreamingResponse(self)

    generate = _sync_generate  # type: ignore[assignment]
    image2image = _sync_image2image
    edit = _sync_edit  # type: ignore[assignment]

    def _send(self, request: PreparedRequest, *, max_retries: int | None = None) -> StepFunImagesResponse:
        """Send a prepared request (under the client's retry policy, or ``max_retries``)."""
        from .types import StepFunImagesResponse  # with the first request: `client.images` stays cheap

        response: StepFunImagesResponse = self._post(
            request.path,
            cast_to=StepFunImagesResponse,
            **request.post_arguments(is_async=False, max_retries=max_retries),
        )
        return response


class AsyncImages(_AsyncImages):
    """Async twin of :class:`Images`: the same methods and parameters, awaited."""

    _client: AsyncStepFun

    @cached_property
    def with_raw_response(self) -> AsyncImagesWithRawResponse:
        return AsyncImagesWithRawResponse(self)

    @cached_property
    def with_streaming_response(self) -> AsyncImagesWithStreamingResponse:
        return AsyncImagesWithStreamingResponse(self)

    generate = _async_generate  # type: ignore[assignment]
    image2image = _async_image2image
    edit = _async_edit  # type: ignore[assignment]

    async def _send(self, request: PreparedRequest, *, max_retries: int | None = None) -> StepFunImagesResponse:
        """Send a prepared request (under the client's retry policy, or ``max_retries``)."""
        from .types import StepFunImagesResponse

        response: StepFunImagesResponse = await self._post(
            request.path,
            cast_to=StepFunImagesResponse,
            **request.post_arguments(is_async=True, max_retries=max_retries),
        )
        return response


class ImagesWithRawResponse(_openai_images.ImagesWithRawResponse):
    def __init__(self, images: Images) -> None:
        super().__init__(images)
        self.image2image = legacy_response.to_raw_response_wrapper(images.image2image)


class AsyncImagesWithRawResponse(_openai_images.AsyncImagesWithRawResponse):
    def __init__(self, images: AsyncImages) -> None:
        super().__init__(images)
        self.image2image = legacy_response.async_to_raw_response_wrapper(images.image2image)


class ImagesWithStreamingResponse(_openai_images.ImagesWithStreamingResponse):
    def __init__(self, images: Images) -> None:
        super().__init__(images)
        self.image2image = to_streamed_response_wrapper(images.image2image)


class AsyncImagesWithStreamingResponse(_openai_images.AsyncImagesWithStreamingResponse):
    def __init__(self, images: AsyncImages) -> None:
        super().__init__(images)
        self.image2image = async_to_streamed_response_wrapper(images.image2image)
