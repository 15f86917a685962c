"""StepFun image generation as a tool for OpenAI-style function calling, with any chat model.

``image_tool_schema()`` is the tool definition to send; ``run_tool_call(client, tool_call)``
validates the arguments the model chose, generates the image and returns the text to send back
as the tool message. Mistakes the model can fix (a size the model does not take, a bad seed) and
moderation blocks come back as tool results that say what to change, so the agent loop goes on.

The arguments come from a model, which a prompt injection may steer, so they are treated as
hostile whatever the client's ``validate`` says: any JSON at all (malformed, nested, huge numbers,
NaN, lone surrogates, enormous strings) gives an error result, never an exception; the tool reads
local files only inside the directories the application passed as ``input_dirs`` (none by
default), after resolving symlinks and ``..``; and only bytes that sniff as an image (a local file
or a data: URL) are ever sent. http(s) URLs go as they are: StepFun fetches them, not this machine.

The LangChain tool (``stepfun_openai.langchain``) runs on the same functions.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import reprlib
import stat
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, Union, cast

import openai
from pydantic import BaseModel, ValidationError

from . import catalog
from ._exceptions import ContentBlockedError, StepFunValidationError
from ._inputs import inspect_image_string
from ._sniff import HEADER_BYTES, sniff
from ._tool_args import (
    DEFAULT_SOURCE_WEIGHT,
    EDIT_MODELS,
    IMAGE2IMAGE_MODELS,
    IMAGE_TEXT_MAX_CHARS,
    IMAGE_TOOL_MODELS,
    TEXT_TO_IMAGE_MODELS,
    ImageToolArgs,
    endpoint_tool_args,
    strict_json_schema,
)
from ._urls import REDACTED, is_data_url, is_http_url
from .types import StepFunImage, StepFunImagesResponse, StyleReference

if TYPE_CHECKING:
    from ._client import AsyncStepFun, StepFun

__all__ = [
    "IMAGE_TOOL_DESCRIPTION",
    "IMAGE_TOOL_NAME",
    "ImageToolArgs",
    "ImageToolResult",
    "InputDirs",
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
    model: str | None = None
    """The model the request named (``None`` when nothing was sent)."""

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


ARGUMENTS_MAX_CHARS = 2 * IMAGE_TEXT_MAX_CHARS + 64 * 1024
"""The longest arguments JSON the tool parses: two inline images of the largest size StepFun takes
and the rest; longer JSON is refused before it is parsed."""

_OBJECT = 'a JSON object such as {"prompt": "a red fox in the snow"}'


def _parse_int(text: str) -> int | float:
    # Python refuses to convert more than 4300 digits (a bare ValueError); as a float such a
    # number is infinite, which the argument's validation refuses by name.
    return int(text) if len(text) <= 4000 else float(text)


def decode_arguments(arguments: Mapping[str, Any] | str | bytes | None) -> dict[str, Any]:
    """The model's arguments (JSON text or a mapping) as a dict, or a
    :class:`StepFunValidationError` for ``arguments`` saying why not: not UTF-8, longer than
    ``ARGUMENTS_MAX_CHARS``, not JSON, nested too deeply to parse, or not an object."""
    if arguments is None:
        return {}
    if isinstance(arguments, (bytes, bytearray)):
        try:
            arguments = bytes(arguments).decode("utf-8")
        except UnicodeDecodeError:
            raise StepFunValidationError("arguments", f"<{len(arguments)} bytes>", f"UTF-8 text of {_OBJECT}") from None
    if isinstance(arguments, str):
        if len(arguments) > ARGUMENTS_MAX_CHARS:
            raise StepFunValidationError(
                "arguments",
                f"<{len(arguments)} characters>",
                f"{_OBJECT} of at most {ARGUMENTS_MAX_CHARS} characters; pass images as URLs or file paths",
            )
        try:
            arguments = json.loads(arguments or "{}", parse_int=_parse_int)
        except RecursionError:
            raise StepFunValidationError(
                "arguments", "<deeply nested JSON>", f"{_OBJECT} whose values are strings, numbers, true/false or null"
            ) from None
        except ValueError as exc:
            raise StepFunValidationError("arguments", arguments, f"{_OBJECT} (this is not valid JSON: {exc})") from None
    if not isinstance(arguments, Mapping):
        raise StepFunValidationError("arguments", arguments, f"{_OBJECT}, not a JSON {_json_kind(arguments)}")
    return dict(arguments)


def _json_kind(value: object) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    return "number" if isinstance(value, (int, float)) else type(value).__name__


def parse_arguments(
    arguments: BaseModel | Mapping[str, Any] | str | bytes | None, model: type[BaseModel] = ImageToolArgs
) -> BaseModel:
    """The model's arguments (a JSON string or a mapping) as a validated ``model``
    (:class:`ImageToolArgs`, or one endpoint's subset of it: ``endpoint_tool_args``).

    Raises pydantic's ``ValidationError`` (naming the argument) or :class:`StepFunValidationError`
    (``arguments``: not a JSON object at all).
    """
    if isinstance(arguments, model):
        return arguments
    if isinstance(arguments, BaseModel):  # another tool's arguments: checked again as this one's
        arguments = arguments.model_dump(exclude_none=True)
    return model.model_validate(decode_arguments(arguments))


# --- where images may come from -------------------------------------------------------------------

InputDirs = Union[str, "os.PathLike[str]", Iterable[Union[str, "os.PathLike[str]"]], None]
"""``input_dirs``: a directory (``str`` or ``PathLike``), several, or ``None`` / ``()`` for none."""

_PATH_MAX_CHARS = 4096
_URL_MAX_CHARS = 8192
_IMAGE_KINDS = "PNG, JPEG, WebP or GIF"


def resolve_input_dirs(input_dirs: InputDirs) -> tuple[Path, ...]:
    """``input_dirs`` as resolved directories (symlinks followed, so a file's resolved path can be
    compared with them), or :class:`StepFunValidationError` naming one that is not a directory."""
    if input_dirs is None:
        return ()
    if isinstance(input_dirs, (str, os.PathLike)):
        input_dirs = (input_dirs,)
    if not isinstance(input_dirs, Iterable):
        raise StepFunValidationError("input_dirs", input_dirs, "a directory path or a list of them")
    resolved: dict[Path, None] = {}
    for directory in input_dirs:
        try:
            path = Path(directory).resolve(strict=True)
        except (OSError, RuntimeError, TypeError, ValueError):
            path = None
        if path is None or not path.is_dir():
            raise StepFunValidationError("input_dirs", directory, "existing directories")
        resolved[path] = None
    return tuple(resolved)


def _forms(input_dirs: tuple[Path, ...]) -> str:
    """What the model may pass as an image, for an error result."""
    inline = "an http(s) URL or a data: URL (data:image/png;base64,...)"
    if not input_dirs:
        return f"{inline}; this tool may not read local files"
    listed = ", ".join(str(directory) for directory in input_dirs)
    return f"{inline}, or the path of a {_IMAGE_KINDS} file inside {listed}"


def _source(param: str, value: str, input_dirs: tuple[Path, ...]) -> str | bytes:
    """What to send for an image argument: an http(s) URL as is, a data: URL once its bytes sniff
    as an image, or the bytes of an image file inside ``input_dirs`` (read here, once, so what was
    checked is what is sent)."""
    forms = _forms(input_dirs)
    if is_http_url(value):
        if len(value) > _URL_MAX_CHARS:
            raise StepFunValidationError(param, value, f"{forms}; this URL is longer than {_URL_MAX_CHARS} characters")
        return value
    if is_data_url(value):
        if inspect_image_string(value, param=param).info.format is None:
            raise StepFunValidationError(param, value, f"{forms}; this data: URL holds no {_IMAGE_KINDS} image")
        return value
    if not input_dirs:
        raise StepFunValidationError(param, value, forms)
    try:
        # realpath, not resolve(strict=True) first: a path outside is refused the same way whether
        # or not it exists, so the model cannot probe the rest of the disk.
        if len(value) > _PATH_MAX_CHARS:
            raise ValueError("too long for a path")
        real = Path(os.path.realpath(value))
    except (OSError, ValueError):
        raise StepFunValidationError(param, value, f"{forms}; this is neither a URL nor a usable path") from None
    if not any(real.is_relative_to(directory) for directory in input_dirs):
        raise StepFunValidationError(param, value, f"{forms}; this path is outside them")
    return _read_image_file(real, param, value, forms)


_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)  # the resolved path has no symlink; one appearing now is refused
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in after the check does not block the open
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)


def _read_image_file(real: Path, param: str, value: str, forms: str) -> bytes:
    """The bytes of the regular file ``real``, at most ``catalog.MAX_IMAGE_BYTES``, if they are an image."""
    limit = catalog.MAX_IMAGE_BYTES
    try:
        before = os.stat(real, follow_symlinks=False)
    except OSError:
        raise StepFunValidationError(param, value, f"{forms}; there is no such file") from None
    if not stat.S_ISREG(before.st_mode):
        raise StepFunValidationError(param, value, f"{forms}; this is not a regular file")
    if before.st_size > limit:
        raise StepFunValidationError(param, value, f"{forms}; this file is larger than {limit // 2**20} MB")
    try:
        descriptor = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        raise StepFunValidationError(param, value, f"{forms}; it could not be read ({exc.strerror})") from None
    with open(descriptor, "rb") as handle:
        after = os.fstat(descriptor)
        if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise StepFunValidationError(param, value, f"{forms}; the file changed while it was opened")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise StepFunValidationError(param, value, f"{forms}; this file is larger than {limit // 2**20} MB")
    if sniff(data[:HEADER_BYTES]).format is None:
        raise StepFunValidationError(param, value, f"{forms}; this file is not a {_IMAGE_KINDS} image")
    return data


@dataclass(frozen=True)
class _Call:
    method: Literal["generate", "image2image", "edit"]
    kwargs: dict[str, Any]
    args: BaseModel

    @property
    def model(self) -> str:
        return str(self.kwargs["model"])


_TEXT_TO_IMAGE_ONLY = ("negative_prompt", "text_mode")


def _plan(
    args: BaseModel, *, default_model: str | None, output_dir: Path | None, input_dirs: tuple[Path, ...]
) -> _Call:
    """Which endpoint and which keyword arguments; the client validates them against the catalog.

    ``args`` is :class:`ImageToolArgs` or one endpoint's subset of it (an argument the subset
    lacks counts as null); only the edit tool's subset has ``image``."""
    values = {name: getattr(args, name, None) for name in (*ImageToolArgs.model_fields, "image")}
    if values["source_weight"] is not None and values["source_image"] is None:
        raise StepFunValidationError("source_weight", values["source_weight"], "only together with source_image")
    if values["style_weight"] is not None and values["style_reference"] is None:
        raise StepFunValidationError("style_weight", values["style_weight"], "only together with style_reference")
    kwargs: dict[str, Any] = {"prompt": values["prompt"]}
    for name in ("size", "seed", "steps", "cfg_scale", "negative_prompt", "text_mode"):
        if values[name] is not None:
            kwargs[name] = values[name]
    kwargs["response_format"] = "b64_json" if output_dir is not None else "url"

    if values["image"] is not None:  # the edit tool: its model is an edit model, its image the subject
        kwargs["model"] = values["model"] or (default_model if default_model in EDIT_MODELS else _current(EDIT_MODELS))
        kwargs["image"] = _source("image", values["image"], input_dirs)
        return _Call("edit", kwargs, args)

    if values["source_image"] is not None:
        if values["style_reference"] is not None:
            raise StepFunValidationError(
                "style_reference", values["style_reference"], "not together with source_image; use one or the other"
            )
        for name in _TEXT_TO_IMAGE_ONLY:  # the image-to-image endpoint has no such parameter
            if values[name] is not None:
                raise StepFunValidationError(name, values[name], "null together with source_image")
        model = values["model"]
        if model is None:
            model = default_model if default_model in IMAGE2IMAGE_MODELS else _current(IMAGE2IMAGE_MODELS)
        kwargs["model"] = model
        kwargs["source_url"] = _source("source_image", values["source_image"], input_dirs)
        kwargs["source_weight"] = DEFAULT_SOURCE_WEIGHT if values["source_weight"] is None else values["source_weight"]
        return _Call("image2image", kwargs, args)

    kwargs["model"] = values["model"] or default_model or _current(TEXT_TO_IMAGE_MODELS)
    if values["style_reference"] is not None:
        image = _source("style_reference", values["style_reference"], input_dirs)
        kwargs["style_reference"] = StyleReference(image=image, weight=values["style_weight"])
    return _Call("generate", kwargs, args)


# --- errors -> text the model can act on -------------------------------------------------------


class _Shown(reprlib.Repr):
    """``repr`` bounded in length and depth: what the model sent may be nested thousands deep or be
    an integer Python cannot print."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 2, 4, 4, 4
        self.maxstring = self.maxother = self.maxlong = limit

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 64:
            return f"<an integer of about {int(x.bit_length() * 0.30103) + 1} digits>"
        return repr(x)

    def repr_bytes(self, x: bytes, level: int) -> str:
        return f"<{len(x)} bytes>"


_SHOWN = _Shown(160)


def _short(value: object) -> str:
    return _clean(_SHOWN.repr(value))


def _clean(text: str, limit: int = 2000) -> str:
    """``text`` fit for a tool message: lone surrogates escaped (a UTF-8 message cannot carry
    them) and at most ``limit`` characters."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_MAX_PROBLEMS = 5


def explain_invalid(
    exc: Exception,
    *,
    tool_name: str = IMAGE_TOOL_NAME,
    values: Mapping[str, object] | None = None,
    secret: str | None = None,
    arguments_model: type[BaseModel] = ImageToolArgs,
) -> str:
    """A tool result for arguments that were rejected: which argument to fix, what is allowed.

    ``values`` (tool argument -> what the model sent) replaces the value the client checked when it
    is not what the model wrote (an image file's bytes for its path). ``secret`` (the API key) is
    replaced by ``REDACTED`` should StepFun's message echo it."""
    return redact(_clean(_explain(exc, tool_name, values or {}, arguments_model)), secret)


def redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret`` (an API key; keys shorter than 8 characters are not real ones,
    and replacing them would garble the text)."""
    return text.replace(secret, REDACTED) if secret and len(secret) >= 8 else text


def _explain(
    exc: Exception, tool_name: str, values: Mapping[str, object], arguments_model: type[BaseModel] = ImageToolArgs
) -> str:
    tail = f"Nothing was generated. Fix the argument and call {tool_name} again."
    if isinstance(exc, StepFunValidationError) and exc.param == "arguments":
        return f"The arguments were not valid: expected {exc.allowed}. {tail}"
    if isinstance(exc, StepFunValidationError):
        param = _TOOL_PARAM.get(exc.param, exc.param)
        value = values.get(param, exc.value)
        where = f" for model {exc.model!r}" if exc.model else ""
        return f"Invalid argument {param}={_short(value)}{where}. Allowed: {exc.allowed}. {tail}"
    if isinstance(exc, ValidationError):
        allowed_names = ", ".join(arguments_model.model_fields)
        problems: list[str] = []
        errors = exc.errors(include_url=False)
        for error in errors[:_MAX_PROBLEMS]:
            param = ".".join(str(part) for part in error["loc"]) or "arguments"
            if error["type"] == "extra_forbidden":
                problems.append(f"unknown argument {_short(param)} (the arguments are: {allowed_names})")
            elif error["type"] == "missing":
                problems.append(f"{param} is required")
            else:
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{param}={_short(error.get('input'))}: {message}")
        if len(errors) > _MAX_PROBLEMS:
            problems.append(f"and {len(errors) - _MAX_PROBLEMS} more")
        return f"Invalid arguments for {tool_name}: {'; '.join(problems)}. {tail}"
    if isinstance(exc, openai.BadRequestError):
        return f"StepFun rejected the request: {_api_message(exc)}. {tail}"
    return f"Invalid arguments for {tool_name}: {exc}. {tail}"


def _api_message(exc: openai.APIStatusError) -> str:
    """StepFun's message, bounded (the caller redacts the key)."""
    body = exc.body
    message = body.get("message") if isinstance(body, Mapping) else None
    return _clean(message if isinstance(message, str) else exc.message, 500)


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


_ENDPOINT_OF: dict[str, catalog.Endpoint] = {"generate": "generations", "image2image": "image2image", "edit": "edits"}


def _pixel_size(image: StepFunImage, call: _Call) -> str:
    """``"1360x768 (width x height)"``: read from the image when it came inline, else from the
    size asked for (``step-image-edit-2`` writes its sizes HEIGHTxWIDTH; this is always WxH)."""
    if image.b64_json:
        info = image._head_info()  # from the first base64 characters: nothing decoded for this
        if info.width and info.height:
            return f"{info.width}x{info.height} (width x height)"
    model = catalog.get_model(call.model)
    spec = model.spec(_ENDPOINT_OF[call.method]) if model else None
    size = call.kwargs.get("size") or (spec.default_size if spec else None)
    pixels = catalog.pixel_size(size, spec.size_order if spec else "WxH") if size else None
    return f"{pixels[0]}x{pixels[1]} (width x height)" if pixels else "default-size"


def _describe(image: StepFunImage, call: _Call, path: Path | None) -> str:
    seed = image.seed if image.seed is not None else call.kwargs.get("seed")
    kind = {"image2image": "Transformed the source image into", "edit": "Edited the image into"}.get(
        call.method, "Generated"
    )
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
    input_dirs: tuple[Path, ...]
    tool_name: str
    output: Callable[[ImageToolResult], _T]
    """What the caller gets: the whole result (``run_image_tool``) or its text (``run_tool_call``)."""
    secret: str | None = None
    """The client's API key, kept out of every result (StepFun's messages may echo it)."""
    endpoint: catalog.Endpoint | None = None
    """One endpoint's tool (its subset of the arguments), or ``None``: the combined tool."""

    @property
    def arguments_model(self) -> type[BaseModel]:
        return ImageToolArgs if self.endpoint is None else endpoint_tool_args(self.endpoint)

    def plan(self) -> _Call:
        args = parse_arguments(self.arguments, self.arguments_model)
        return _plan(args, default_model=self.default_model, output_dir=self.directory, input_dirs=self.input_dirs)

    def failed(self, exc: Exception, call: _Call | None) -> _T:
        """A failure the model can act on, explained (invalid arguments raise again if asked to)."""
        if isinstance(exc, ContentBlockedError):
            return self._emit(ImageToolResult(_explain_blocked(exc), error="content_blocked"))
        if not self.handle_validation_error:
            raise exc
        # The client checked an image file's bytes; the model wrote its path.
        values = {} if call is None else call.args.model_dump(include={"source_image", "style_reference", "image"})
        content = explain_invalid(exc, tool_name=self.tool_name, values=values, arguments_model=self.arguments_model)
        return self._emit(ImageToolResult(content, error="invalid_arguments"))

    def save_to(self, response: StepFunImagesResponse) -> str | None:
        """Where to save the image (a folder: ``save()`` picks a free name), or ``None``: no
        folder, or moderation filtered the image."""
        if self.directory is None or response.images[0].content_filtered:
            return None
        return f"{self.directory}{os.sep}"

    def finish(self, response: StepFunImagesResponse, call: _Call, path: Path | None) -> _T:
        image = response.images[0]
        if image.content_filtered:
            return self._emit(
                ImageToolResult(_FILTERED, image=image, error="content_filtered", response=response, model=call.model)
            )
        content = _clean(_describe(image, call, path))
        return self._emit(ImageToolResult(content, image=image, path=path, response=response, model=call.model))

    def _emit(self, result: ImageToolResult) -> _T:
        return self.output(dataclasses.replace(result, content=redact(result.content, self.secret)))


def _twins(
    tool: Callable[_P, _ToolRun[_T]], name: str, returns: str
) -> tuple[Callable[Concatenate[StepFun, _P], _T], Callable[Concatenate[AsyncStepFun, _P], Coroutine[Any, Any, _T]]]:
    """The public sync function ``name`` and its async twin ``a<name>``: ``tool``'s parameters
    after a ``client``, and its docstring. Only the request and the save are written twice."""

    def run(client: StepFun, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        planned = dataclasses.replace(tool(*args, **kwargs), secret=client.api_key)
        call = None
        try:
            call = planned.plan()
            response: StepFunImagesResponse = getattr(client.images, call.method)(**call.kwargs)
        except _EXPLAINED as exc:
            return planned.failed(exc, call)
        folder = planned.save_to(response)
        return planned.finish(response, call, None if folder is None else response.images[0].save(folder).resolve())

    async def arun(client: AsyncStepFun, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        planned = dataclasses.replace(tool(*args, **kwargs), secret=client.api_key)
        call = None
        try:
            call = planned.plan()
            response: StepFunImagesResponse = await getattr(client.images, call.method)(**call.kwargs)
        except _EXPLAINED as exc:
            return planned.failed(exc, call)
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
    input_dirs: InputDirs,
    tool_name: str,
    output: Callable[[ImageToolResult], _T],
    endpoint: catalog.Endpoint | None = None,
) -> _ToolRun[_T]:
    check_default_model(default_model)  # the programmer's mistakes, raised before anything else
    if endpoint is not None and endpoint not in catalog.ENDPOINTS:
        raise StepFunValidationError("endpoint", endpoint, f"one of {', '.join(catalog.ENDPOINTS)} or None")
    readable = resolve_input_dirs(input_dirs)
    directory = Path(output_dir) if output_dir is not None else None
    return _ToolRun(
        arguments, directory, default_model, handle_validation_error, readable, tool_name, output, endpoint=endpoint
    )


def _image_tool(
    arguments: ImageToolArgs | Mapping[str, Any] | str | None,
    *,
    output_dir: str | os.PathLike[str] | None = None,
    default_model: str | None = None,
    handle_validation_error: bool = True,
    input_dirs: InputDirs = (),
    tool_name: str = IMAGE_TOOL_NAME,
    endpoint: catalog.Endpoint | None = None,
) -> _ToolRun[ImageToolResult]:
    """Validate ``arguments`` and generate the image with ``client``.

    ``output_dir``: save the image there (requested as ``b64_json``, so nothing expires) and
    report the path; without it the result reports StepFun's URL. ``default_model``: the model
    when the arguments name none. ``handle_validation_error=False`` raises invalid arguments
    instead of explaining them.

    ``input_dirs``: the directories (one, or a list) whose image files the model may name as
    ``source_image``/``style_reference``; by default none, so the model can pass only http(s)
    and data: URLs. A path is resolved (symlinks, ``..``) before it is compared with them, and a
    file is sent only when its bytes are a PNG, JPEG, WebP or GIF image (at most 10 MB), whatever
    the client's ``validate`` says; anything else comes back as an error result listing what is
    allowed. A directory that does not exist raises ``StepFunValidationError``.

    Any arguments a model can send (not JSON, nested, huge numbers, NaN, bad Unicode, enormous
    strings) come back as an error result that names the argument. A moderation block is always
    returned as an explanation. Other errors (auth, rate limits after the retries, server errors)
    raise: the model cannot fix them.

    ``endpoint`` (``"generations"``, ``"image2image"`` or ``"edits"``): the arguments are one
    endpoint's subset (:func:`stepfun_openai._tool_args.endpoint_tool_args`; the edit tool names its
    image ``image``), as the MCP server's three tools send them; ``None`` (default): the combined
    :class:`ImageToolArgs`, image-to-image when ``source_image`` is given.
    """
    return _start(
        arguments, output_dir, default_model, handle_validation_error, input_dirs, tool_name, _whole, endpoint
    )


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
    input_dirs: InputDirs = (),
    name: str = IMAGE_TOOL_NAME,
) -> _ToolRun[str]:
    """Execute a model's call of the image tool and return the tool message's content.

    ``tool_call`` is openai's ``ChatCompletionMessageToolCall``, its dict form, a Responses API
    ``function_call`` item or a LangChain ``ToolCall``. Options as in :func:`run_image_tool`;
    ``name`` must match the name the schema was sent with (``ValueError`` otherwise).
    """
    arguments = _arguments_for(tool_call, name)
    return _start(arguments, output_dir, default_model, handle_validation_error, input_dirs, name, _content)


def _content(result: ImageToolResult) -> str:
    return result.content


run_tool_call, arun_tool_call = _twins(_tool_call, "run_tool_call", "str")


def check_default_model(model: str | None) -> str | None:
    """``model`` if the tool can use it, else ``StepFunValidationError`` naming the choices."""
    if model is not None and model not in IMAGE_TOOL_MODELS:
        raise StepFunValidationError("default_model", model, f"one of {', '.join(IMAGE_TOOL_MODELS)}")
    return model
