"""StepFun image generation as a tool for OpenAI-style function calling, with any chat model.

``image_tool_schema()`` is the tool definition to send; ``run_tool_call(client, tool_call)``
validates the arguments the model chose, generates the image and returns the text to send back
as the tool message. Mistakes the model can fix (a size the model does not take, a bad seed) and
moderation blocks come back as tool results that say what to change, so the agent loop goes on.

The LangChain tool (``stepfun_openai.langchain``) runs on the same functions.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, cast

import openai
from pydantic import ValidationError

from . import catalog
from ._exceptions import ContentBlockedError, StepFunValidationError
from ._tool_args import (
    DEFAULT_SOURCE_WEIGHT,
    IMAGE2IMAGE_MODELS,
    IMAGE_TOOL_MODELS,
    TEXT_TO_IMAGE_MODELS,
    ImageToolArgs,
    strict_json_schema,
)
from ._urls import is_data_url, is_http_url
from .types import StepFunImage, StepFunImagesResponse, StyleReference

if TYPE_CHECKING:
    from ._client import AsyncStepFun, StepFun

__all__ = [
    "IMAGE_TOOL_DESCRIPTION",
    "IMAGE_TOOL_NAME",
    "ImageToolArgs",
    "ImageToolResult",
    "arun_image_tool",
    "arun_tool_call",
    "image_tool_schema",
    "run_image_tool",
    "run_tool_call",
]

IMAGE_TOOL_NAME = "generate_image"
IMAGE_TOOL_DESCRIPTION = (
    "Generate an image with StepFun from a text prompt (text-to-image), or transform an existing image "
    "(image-to-image) when source_image is given. Returns where the image was saved or its URL, "
    "its size, the seed (reuse it to reproduce the image) and the model."
)

ErrorKind = Literal["invalid_arguments", "content_blocked", "content_filtered"]

# Wire names in StepFunValidationError.param -> the tool argument the model should fix.
_TOOL_PARAM = {
    "source_url": "source_image",
    "style_reference.source_url": "style_reference",
    "style_reference.image": "style_reference",
    "style_reference.weight": "style_weight",
}


def _current(models: tuple[str, ...]) -> str:
    return next(name for name in models if catalog.MODELS[name].status == "current")


@dataclass(frozen=True)
class ImageToolResult:
    """What one tool call produced. ``content`` is the text for the model; ``image`` the
    generated image (never put its base64 in the model's context), ``path`` where it was saved."""

    content: str
    image: StepFunImage | None = None
    path: Path | None = None
    error: ErrorKind | None = None
    """``None`` on success; otherwise why ``content`` explains a failure instead."""
    response: StepFunImagesResponse | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None


def image_tool_schema(
    *,
    name: str = IMAGE_TOOL_NAME,
    description: str = IMAGE_TOOL_DESCRIPTION,
    api: Literal["chat", "responses"] = "chat",
    strict: bool = True,
) -> dict[str, Any]:
    """The tool definition in OpenAI's format, for ``tools=[...]``.

    ``api="chat"`` gives the Chat Completions shape (``{"type": "function", "function": {...}}``),
    ``api="responses"`` the Responses API's flat shape. The parameters are valid in strict mode:
    every property is listed in ``required`` (optional ones accept ``null``),
    ``additionalProperties`` is false and no unsupported keyword (``default``, ...) appears.
    """
    function: dict[str, Any] = {
        "name": name,
        "description": description,
        "parameters": strict_json_schema(ImageToolArgs),
        "strict": strict,
    }
    if api == "responses":
        return {"type": "function", **function}
    return {"type": "function", "function": function}


# --- arguments -> request ----------------------------------------------------------------------


def parse_arguments(arguments: ImageToolArgs | Mapping[str, Any] | str | None) -> ImageToolArgs:
    """The model's arguments (a JSON string or a mapping) as validated :class:`ImageToolArgs`.

    Raises pydantic's ``ValidationError`` or :class:`StepFunValidationError` (not JSON at all).
    """
    if isinstance(arguments, ImageToolArgs):
        return arguments
    if isinstance(arguments, (str, bytes)):
        try:
            arguments = json.loads(arguments or "{}")
        except ValueError:
            raise StepFunValidationError(
                "arguments", arguments, 'a JSON object such as {"prompt": "a red fox in the snow"}'
            ) from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise StepFunValidationError(
            "arguments", arguments, 'a JSON object such as {"prompt": "a red fox in the snow"}'
        )
    return ImageToolArgs.model_validate(dict(arguments))


@dataclass(frozen=True)
class _Call:
    method: Literal["generate", "image2image"]
    kwargs: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.kwargs["model"])


def _check_source(param: str, value: str, local_files: bool) -> str:
    if not local_files and not (is_http_url(value) or is_data_url(value)):
        raise StepFunValidationError(param, value, "an http(s) URL (this tool is not allowed to read local files)")
    return value


def _plan(args: ImageToolArgs, *, default_model: str | None, output_dir: Path | None, local_files: bool) -> _Call:
    """Which endpoint and which keyword arguments; the client validates them against the catalog."""
    if args.source_weight is not None and args.source_image is None:
        raise StepFunValidationError("source_weight", args.source_weight, "only together with source_image")
    if args.style_weight is not None and args.style_reference is None:
        raise StepFunValidationError("style_weight", args.style_weight, "only together with style_reference")
    kwargs: dict[str, Any] = {"prompt": args.prompt}
    for name in ("size", "seed", "steps", "cfg_scale", "negative_prompt", "text_mode"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    kwargs["response_format"] = "b64_json" if output_dir is not None else "url"

    if args.source_image is not None:
        if args.style_reference is not None:
            raise StepFunValidationError(
                "style_reference", args.style_reference, "not together with source_image; use one or the other"
            )
        model = args.model
        if model is None:
            model = default_model if default_model in IMAGE2IMAGE_MODELS else _current(IMAGE2IMAGE_MODELS)
        kwargs["model"] = model
        kwargs["source_url"] = _check_source("source_image", args.source_image, local_files)
        kwargs["source_weight"] = DEFAULT_SOURCE_WEIGHT if args.source_weight is None else args.source_weight
        return _Call("image2image", kwargs)

    kwargs["model"] = args.model or default_model or _current(TEXT_TO_IMAGE_MODELS)
    if args.style_reference is not None:
        image = _check_source("style_reference", args.style_reference, local_files)
        kwargs["style_reference"] = StyleReference(image=image, weight=args.style_weight)
    return _Call("generate", kwargs)


# --- errors -> text the model can act on -------------------------------------------------------


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def explain_invalid(exc: Exception, *, tool_name: str = IMAGE_TOOL_NAME) -> str:
    """A tool result for arguments that were rejected: which argument to fix, what is allowed."""
    tail = f"Nothing was generated. Fix the argument and call {tool_name} again."
    if isinstance(exc, StepFunValidationError) and exc.param == "arguments":
        return f"The arguments were not valid: expected {exc.allowed}. {tail}"
    if isinstance(exc, StepFunValidationError):
        param = _TOOL_PARAM.get(exc.param, exc.param)
        where = f" for model {exc.model!r}" if exc.model else ""
        return f"Invalid argument {param}={_short(exc.value)}{where}. Allowed: {exc.allowed}. {tail}"
    if isinstance(exc, ValidationError):
        allowed_names = ", ".join(ImageToolArgs.model_fields)
        problems: list[str] = []
        for error in exc.errors(include_url=False):
            param = ".".join(str(part) for part in error["loc"]) or "arguments"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown argument {param!r} (the arguments are: {allowed_names})")
            elif error["type"] == "missing":
                problems.append(f"{param} is required")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{param}={_short(error.get('input'))}: {message}")
        return f"Invalid arguments for {tool_name}: {'; '.join(problems)}. {tail}"
    if isinstance(exc, openai.BadRequestError):
        return f"StepFun rejected the request: {_api_message(exc)}. {tail}"
    return f"Invalid arguments for {tool_name}: {exc}. {tail}"


def _api_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, Mapping) else None
    return message if isinstance(message, str) else exc.message


def _explain_blocked(exc: ContentBlockedError) -> str:
    return (
        "StepFun's moderation blocked this request (HTTP 451: the prompt or the generated image was not "
        "allowed); nothing was generated. Do not retry the same prompt: rephrase it without the "
        "sensitive content, or tell the user it cannot be drawn."
    )


_FILTERED = (
    "StepFun generated an image but its moderation marked it content_filtered, so it is unusable and was "
    "not saved. Rephrase the prompt without the sensitive content and call the tool again, or tell the "
    "user it cannot be drawn."
)


# --- response -> result ------------------------------------------------------------------------


def _pixel_size(image: StepFunImage, call: _Call) -> str:
    """``"1360x768 (width x height)"``: read from the image when it came inline, else from the
    size asked for (``step-image-edit-2`` writes its sizes HEIGHTxWIDTH; this is always WxH)."""
    if image.b64_json:
        info = image._head_info()  # from the first base64 characters: nothing decoded for this
        if info.width and info.height:
            return f"{info.width}x{info.height} (width x height)"
    model = catalog.get_model(call.model)
    spec = model.spec("image2image" if call.method == "image2image" else "generations") if model else None
    size = call.kwargs.get("size") or (spec.default_size if spec else None)
    pixels = catalog.pixel_size(size, spec.size_order if spec else "WxH") if size else None
    return f"{pixels[0]}x{pixels[1]} (width x height)" if pixels else "default-size"


def _describe(image: StepFunImage, call: _Call, path: Path | None) -> str:
    seed = image.seed if image.seed is not None else call.kwargs.get("seed")
    kind = "Transformed the source image into" if call.method == "image2image" else "Generated"
    text = f"{kind} a {_pixel_size(image, call)} image with {call.model}"
    text += f" (seed {seed})." if seed is not None else "."
    if path is not None:
        text += f" Saved to {path}."
    elif image.url:
        text += f" URL (valid for about an hour, download it to keep it): {image.url}"
    return text


# --- running -----------------------------------------------------------------------------------

_INVALID = (ValidationError, StepFunValidationError, openai.BadRequestError)
_EXPLAINED = (*_INVALID, ContentBlockedError)
"""What the model can act on: it comes back as a tool result instead of raising."""

_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class _ToolRun(Generic[_T]):
    """One tool call: everything but the request and the save, which the sync and the async
    runner each do their own way."""

    arguments: Any
    directory: Path | None
    default_model: str | None
    handle_validation_error: bool
    local_files: bool
    tool_name: str
    output: Callable[[ImageToolResult], _T]
    """What the caller gets: the whole result (``run_image_tool``) or its text (``run_tool_call``)."""

    def plan(self) -> _Call:
        args = parse_arguments(self.arguments)
        return _plan(args, default_model=self.default_model, output_dir=self.directory, local_files=self.local_files)

    def failed(self, exc: Exception) -> _T:
        """A failure the model can act on, explained (invalid arguments raise again if asked to)."""
        if isinstance(exc, ContentBlockedError):
            return self.output(ImageToolResult(_explain_blocked(exc), error="content_blocked"))
        if not self.handle_validation_error:
            raise exc
        return self.output(ImageToolResult(explain_invalid(exc, tool_name=self.tool_name), error="invalid_arguments"))

    def save_to(self, response: StepFunImagesResponse) -> str | None:
        """Where to save the image (a folder: ``save()`` picks a free name), or ``None``: no
        folder, or moderation filtered the image."""
        if self.directory is None or response.images[0].content_filtered:
            return None
        return f"{self.directory}{os.sep}"

    def finish(self, response: StepFunImagesResponse, call: _Call, path: Path | None) -> _T:
        image = response.images[0]
        if image.content_filtered:
            return self.output(ImageToolResult(_FILTERED, image=image, error="content_filtered", response=response))
        content = _describe(image, call, path)
        return self.output(ImageToolResult(content, image=image, path=path, response=response))


def _twins(
    tool: Callable[_P, _ToolRun[_T]], name: str, returns: str
) -> tuple[Callable[Concatenate[StepFun, _P], _T], Callable[Concatenate[AsyncStepFun, _P], Coroutine[Any, Any, _T]]]:
    """The public sync function ``name`` and its async twin ``a<name>``: ``tool``'s parameters
    after a ``client``, and its docstring. Only the request and the save are written twice."""

    def run(client: StepFun, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        planned = tool(*args, **kwargs)
        try:
            call = planned.plan()
            method = client.images.image2image if call.method == "image2image" else client.images.generate
            response: StepFunImagesResponse = method(**call.kwargs)
        except _EXPLAINED as exc:
            return planned.failed(exc)
        folder = planned.save_to(response)
        return planned.finish(response, call, None if folder is None else response.images[0].save(folder).resolve())

    async def arun(client: AsyncStepFun, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        planned = tool(*args, **kwargs)
        try:
            call = planned.plan()
            method = client.images.image2image if call.method == "image2image" else client.images.generate
            response: StepFunImagesResponse = await method(**call.kwargs)
        except _EXPLAINED as exc:
            return planned.failed(exc)
        folder = planned.save_to(response)
        path = None if folder is None else (await response.images[0].asave(folder)).resolve()
        return planned.finish(response, call, path)

    doc = f"The async twin of :func:`{name}`, on ``AsyncStepFun`` (files are written in a worker thread)."
    _present(run, tool, name, "StepFun", tool.__doc__, returns)
    _present(arun, tool, f"a{name}", "AsyncStepFun", doc, returns)
    # Typed as callers see them: ``client`` first (it may still be passed by keyword).
    return cast("Callable[Concatenate[StepFun, _P], _T]", run), cast(
        "Callable[Concatenate[AsyncStepFun, _P], Coroutine[Any, Any, _T]]", arun
    )


def _present(function: Any, tool: Callable[..., Any], name: str, client: str, doc: str | None, returns: str) -> None:
    """What ``help()`` and ``inspect.signature`` show: ``client`` and then ``tool``'s parameters."""
    signature = inspect.signature(tool)
    first = inspect.Parameter("client", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=client)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = doc
    function.__signature__ = signature.replace(
        parameters=[first, *signature.parameters.values()], return_annotation=returns
    )


def _start(
    arguments: Any,
    output_dir: str | os.PathLike[str] | None,
    default_model: str | None,
    handle_validation_error: bool,
    local_files: bool,
    tool_name: str,
    output: Callable[[ImageToolResult], _T],
) -> _ToolRun[_T]:
    check_default_model(default_model)  # the programmer's mistake, raised before anything else
    directory = Path(output_dir) if output_dir is not None else None
    return _ToolRun(arguments, directory, default_model, handle_validation_error, local_files, tool_name, output)


def _image_tool(
    arguments: ImageToolArgs | Mapping[str, Any] | str | None,
    *,
    output_dir: str | os.PathLike[str] | None = None,
    default_model: str | None = None,
    handle_validation_error: bool = True,
    local_files: bool = True,
    tool_name: str = IMAGE_TOOL_NAME,
) -> _ToolRun[ImageToolResult]:
    """Validate ``arguments`` and generate the image with ``client``.

    ``output_dir``: save the image there (requested as ``b64_json``, so nothing expires) and
    report the path; without it the result reports StepFun's URL. ``default_model``: the model
    when the arguments name none. ``handle_validation_error=False`` raises invalid arguments
    instead of explaining them. ``local_files=False`` accepts only URLs as source/style images.
    A moderation block is always returned as an explanation. Other errors (auth, rate limits after
    the retries, server errors) raise: the model cannot fix them.
    """
    return _start(arguments, output_dir, default_model, handle_validation_error, local_files, tool_name, _whole)


def _whole(result: ImageToolResult) -> ImageToolResult:
    return result


run_image_tool, arun_image_tool = _twins(_image_tool, "run_image_tool", "ImageToolResult")


# --- tool calls --------------------------------------------------------------------------------

ToolCallLike = Any
"""openai's ``ChatCompletionMessageToolCall`` (or its dict), a Responses ``function_call`` item or
a LangChain ``ToolCall``."""


def unpack_tool_call(tool_call: ToolCallLike) -> tuple[str | None, Any]:
    """``(name, arguments)`` of a tool call in any common shape: openai's
    ``ChatCompletionMessageToolCall`` or its dict, a Responses API ``function_call`` item, or a
    LangChain ``ToolCall`` dict."""
    if isinstance(tool_call, Mapping):
        function = tool_call.get("function")
        if isinstance(function, Mapping):
            return function.get("name"), function.get("arguments")
        if "args" in tool_call:
            return tool_call.get("name"), tool_call["args"]
        return tool_call.get("name"), tool_call.get("arguments")
    function = getattr(tool_call, "function", None)
    if function is not None:
        return getattr(function, "name", None), getattr(function, "arguments", None)
    return getattr(tool_call, "name", None), getattr(tool_call, "arguments", None)


def _arguments_for(tool_call: ToolCallLike, name: str) -> Any:
    called, arguments = unpack_tool_call(tool_call)
    if called is not None and called != name:
        raise ValueError(f"this tool call is for {called!r}, not {name!r}; dispatch it to that tool")
    return arguments


def _tool_call(
    tool_call: ToolCallLike,
    *,
    output_dir: str | os.PathLike[str] | None = None,
    default_model: str | None = None,
    handle_validation_error: bool = True,
    local_files: bool = True,
    name: str = IMAGE_TOOL_NAME,
) -> _ToolRun[str]:
    """Execute a model's call of the image tool and return the tool message's content.

    ``tool_call`` is openai's ``ChatCompletionMessageToolCall``, its dict form, a Responses API
    ``function_call`` item or a LangChain ``ToolCall``. Options as in :func:`run_image_tool`;
    ``name`` must match the name the schema was sent with (``ValueError`` otherwise).
    """
    arguments = _arguments_for(tool_call, name)
    return _start(arguments, output_dir, default_model, handle_validation_error, local_files, name, _content)


def _content(result: ImageToolResult) -> str:
    return result.content


run_tool_call, arun_tool_call = _twins(_tool_call, "run_tool_call", "str")


def check_default_model(model: str | None) -> str | None:
    """``model`` if the tool can use it, else ``StepFunValidationError`` naming the choices."""
    if model is not None and model not in IMAGE_TOOL_MODELS:
        raise StepFunValidationError("default_model", model, f"one of {', '.join(IMAGE_TOOL_MODELS)}")
    return model
