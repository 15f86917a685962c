"""``client.images``: openai's image resource with StepFun's parameters, plus ``image2image``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx2
from openai import NotGiven, Omit, not_given, omit
from openai.resources import images as _openai_images
from openai.resources.images import AsyncImages as _AsyncImages
from openai.resources.images import Images as _Images

from ._compat import (
    Body,
    Headers,
    Query,
    async_to_streamed_response_wrapper,
    cached_property,
    legacy_response,
    make_request_options,
    to_streamed_response_wrapper,
)
from ._requests import AsyncJSONContent, ClientSettings, JSONContent, has_inline_images, prepare_edit, prepare_json
from .types import ImageInput, StepFunImagesResponse, StyleReference

if TYPE_CHECKING:
    from ._client import AsyncStepFun, StepFun

__all__ = ["AsyncImages", "Images"]

ResponseFormat = Literal["url", "b64_json"]


def _settings(client: Any, fit: bool | None = None) -> ClientSettings:
    settings: ClientSettings = getattr(client, "_stepfun_settings", ClientSettings())
    return settings if fit is None else dataclasses.replace(settings, fit=fit)


def _refuse_image2image_on_step_plan(client: Any, model: object, settings: ClientSettings) -> None:
    """The step_plan base URL serves generations and edits but no image2image (the contract):
    refuse locally instead of letting the server answer 404."""
    if not settings.validate:
        return
    base_url = getattr(client, "base_url", None)
    path = base_url.path if isinstance(base_url, httpx2.URL) else str(base_url or "")
    if "/step_plan/" not in path.rstrip("/") + "/":
        return
    from ._exceptions import StepFunValidationError
    from .catalog import DEFAULT_BASE_URL

    raise StepFunValidationError(
        "model",
        model,
        f"the step_plan base URL ({base_url}) has no image2image endpoint",
        model=model if isinstance(model, str) else None,
        endpoint="image2image",
        hint=f"use DEFAULT_BASE_URL ({DEFAULT_BASE_URL}) for image2image, e.g. "
        "client.with_options(base_url=stepfun_openai.DEFAULT_BASE_URL).images.image2image(...)",
    )


_Content = TypeVar("_Content", JSONContent, AsyncJSONContent)


def _json_post(
    body: dict[str, Any],
    extra_headers: Headers | None,
    extra_query: Query | None,
    timeout: float | httpx2.Timeout | NotGiven | None,
    content_type: type[_Content],
) -> tuple[dict[str, Any] | None, _Content | None, Any]:
    """``(body, content, options)`` for ``_post``. A body with inline images goes as raw content written
    around their base64 bytes (no ``json.dumps`` copies of megabytes of base64), built once, with
    its length known: sent as Content-Length, never chunked (which StepFun may not take)."""
    if not has_inline_images(body):
        return body, None, _options(extra_headers, extra_query, timeout)
    content = content_type(body)
    headers = {**(extra_headers or {}), "Content-Type": "application/json", "Content-Length": str(len(content))}
    return None, content, _options(headers, extra_query, timeout)


def _options(
    extra_headers: Headers | None,
    extra_query: Query | None,
    timeout: float | httpx2.Timeout | NotGiven | None,
    multipart: bool = False,
) -> Any:
    headers = {"Content-Type": "multipart/form-data", **(extra_headers or {})} if multipart else extra_headers
    # extra_body is not passed on: it is already deep-merged into the body we send.
    return make_request_options(
        extra_headers=headers, extra_query=extra_query, timeout=timeout, security={"bearer_auth": True}
    )


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

    def generate(  # type: ignore[override]
        self,
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
    ) -> StepFunImagesResponse:
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
        body = prepare_json(
            "generations",
            {
                "model": model,
                "prompt": prompt,
                "size": size,
                "n": n,
                "response_format": response_format,
                "seed": seed,
                "steps": steps,
                "cfg_scale": cfg_scale,
                "negative_prompt": negative_prompt,
                "text_mode": text_mode,
                "style_reference": style_reference,
                "source_image": source_image,
                "source_weight": source_weight,
            },
            extra_body,
            _settings(self._client, fit),
        )
        json_body, content, options = _json_post(body, extra_headers, extra_query, timeout, JSONContent)
        return self._post(
            "/images/generations",
            body=json_body,
            content=content,
            options=options,
            cast_to=StepFunImagesResponse,
        )

    def image2image(
        self,
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
    ) -> StepFunImagesResponse:
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
        settings = _settings(self._client, fit)
        _refuse_image2image_on_step_plan(self._client, model, settings)
        body = prepare_json(
            "image2image",
            {
                "model": model,
                "prompt": prompt,
                "source_url": source_url,
                "source_weight": source_weight,
                "size": size,
                "n": n,
                "response_format": response_format,
                "seed": seed,
                "steps": steps,
                "cfg_scale": cfg_scale,
            },
            extra_body,
            settings,
        )
        json_body, content, options = _json_post(body, extra_headers, extra_query, timeout, JSONContent)
        return self._post(
            "/images/image2image",
            body=json_body,
            content=content,
            options=options,
            cast_to=StepFunImagesResponse,
        )

    def edit(  # type: ignore[override]
        self,
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
    ) -> StepFunImagesResponse:
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
        form, files = prepare_edit(
            {
                "image": image,
                "prompt": prompt,
                "model": model,
                "size": size,
                "n": n,
                "response_format": response_format,
                "seed": seed,
                "steps": steps,
                "cfg_scale": cfg_scale,
                "negative_prompt": negative_prompt,
                "text_mode": text_mode,
            },
            extra_body,
            _settings(self._client, fit),
        )
        return self._post(
            "/images/edits",
            body=form,
            files=files,
            options=_options(extra_headers, extra_query, timeout, multipart=True),
            cast_to=StepFunImagesResponse,
        )


class AsyncImages(_AsyncImages):
    """Async twin of :class:`Images`: the same methods and parameters, awaited."""

    _client: AsyncStepFun

    @cached_property
    def with_raw_response(self) -> AsyncImagesWithRawResponse:
        return AsyncImagesWithRawResponse(self)

    @cached_property
    def with_streaming_response(self) -> AsyncImagesWithStreamingResponse:
        return AsyncImagesWithStreamingResponse(self)

    async def generate(  # type: ignore[override]
        self,
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
    ) -> StepFunImagesResponse:
        """Text to image; see :meth:`Images.generate`."""
        body = prepare_json(
            "generations",
            {
                "model": model,
                "prompt": prompt,
                "size": size,
                "n": n,
                "response_format": response_format,
                "seed": seed,
                "steps": steps,
                "cfg_scale": cfg_scale,
                "negative_prompt": negative_prompt,
                "text_mode": text_mode,
                "style_reference": style_reference,
                "source_image": source_image,
                "source_weight": source_weight,
            },
            extra_body,
            _settings(self._client, fit),
        )
        json_body, content, options = _json_post(body, extra_headers, extra_query, timeout, AsyncJSONContent)
        return await self._post(
            "/images/generations",
            body=json_body,
            content=content,
            options=options,
            cast_to=StepFunImagesResponse,
        )

    async def image2image(
        self,
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
    ) -> StepFunImagesResponse:
        """Image to image; see :meth:`Images.image2image`."""
        settings = _settings(self._client, fit)
        _refuse_image2image_on_step_plan(self._client, model, settings)
        body = prepare_json(
            "image2image",
            {
                "model": model,
                "prompt": prompt,
                "source_url": source_url,
                "source_weight": source_weight,
                "size": size,
                "n": n,
                "response_format": response_format,
                "seed": seed,
                "steps": steps,
                "cfg_scale": cfg_scale,
            },
            extra_body,
            settings,
        )
        json_body, content, options = _json_post(body, extra_headers, extra_query, timeout, AsyncJSONContent)
        return await self._post(
            "/images/image2image",
            body=json_body,
            content=content,
            options=options,
            cast_to=StepFunImagesResponse,
        )

    async def edit(  # type: ignore[override]
        self,
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
    ) -> StepFunImagesResponse:
        """Edit an image by instruction; see :meth:`Images.edit`."""
        form, files = prepare_edit(
            {
                "image": image,
                "prompt": prompt,
                "model": model,
                "size": size,
                "n": n,
                "response_format": response_format,
                "seed": seed,
                "steps": steps,
                "cfg_scale": cfg_scale,
                "negative_prompt": negative_prompt,
                "text_mode": text_mode,
            },
            extra_body,
            _settings(self._client, fit),
        )
        return await self._post(
            "/images/edits",
            body=form,
            files=files,
            options=_options(extra_headers, extra_query, timeout, multipart=True),
            cast_to=StepFunImagesResponse,
        )


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
