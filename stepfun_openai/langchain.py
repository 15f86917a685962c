"""StepFun image generation as a LangChain tool (``pip install 'stepfun-openai[langchain]'``).

``StepFunImageTool`` is a ``BaseTool`` with ``response_format="content_and_artifact"``: the model
reads a short text (where the image was saved or its URL, size, seed, model, or why nothing was
generated) and the ``ToolMessage.artifact`` carries the :class:`~stepfun_openai.StepFunImage`,
so base64 never enters the model's context. ``_run`` calls ``StepFun`` and ``_arun`` calls
``AsyncStepFun`` directly (no thread pool).

``import stepfun_openai`` never imports this module; importing it without langchain-core raises
an ``ImportError`` that names the extra.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

try:
    from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
    from langchain_core.messages import ToolMessage
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool, ToolException
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("stepfun_openai.langchain needs langchain-core: pip install 'stepfun-openai[langchain]'") from exc

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from typing_extensions import Self

from ._exceptions import StepFunValidationError
from .tools import (
    _INVALID,
    IMAGE_TOOL_DESCRIPTION,
    IMAGE_TOOL_NAME,
    ImageToolArgs,
    ImageToolResult,
    arun_image_tool,
    check_default_model,
    decode_arguments,
    explain_invalid,
    redact,
    resolve_input_dirs,
    run_image_tool,
)
from .types import StepFunImage

if TYPE_CHECKING:
    from ._client import AsyncStepFun, StepFun

__all__ = ["StepFunImageTool"]


class StepFunImageTool(BaseTool):
    """Text-to-image with StepFun, and image-to-image when the model passes ``source_image``.

    Args:
      client / async_client: ``StepFun`` / ``AsyncStepFun``. Give one or both; a missing one is
        the other's twin (``to_async()`` / ``to_sync()``: every setting but the HTTP client;
        neither: both from ``STEPFUN_API_KEY``).
      output_dir: save images there (requested as ``b64_json``, so nothing expires) and tell the
        model the path; without it the model gets StepFun's URL (valid about an hour).
      default_model: the model when the call names none (``step-image-edit-2`` otherwise).
      return_image_block: for multimodal models: the tool message content is a list of a text
        block and an image block, so the model can look at what it made.
      input_dirs: the directories (one, or a list) whose image files the model may name as
        ``source_image``/``style_reference``; none by default (only http(s) and data: URLs).
        Paths are resolved (symlinks, ``..``) before the check, and only PNG/JPEG/WebP/GIF bytes
        are sent, whatever the client's ``validate`` says (see :func:`stepfun_openai.tools.run_image_tool`).
      handle_validation_error: ``True`` (default) turns arguments the model got wrong into a
        tool result naming the argument and what is allowed; ``False`` raises them; a string or
        a callable (given the exception) makes the error result's content. It covers both kinds of
        wrong arguments: those the schema rejects (pydantic ``ValidationError``) and those the
        catalog rejects for the chosen model (``StepFunValidationError``, e.g. ``steps=900``, or
        StepFun's own HTTP 400).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = IMAGE_TOOL_NAME
    description: str = IMAGE_TOOL_DESCRIPTION
    args_schema: type[ImageToolArgs] = ImageToolArgs
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_validation_error: Any = True
    handle_tool_error: Any = True

    client: Any = Field(default=None, exclude=True)
    async_client: Any = Field(default=None, exclude=True)
    output_dir: Path | None = None
    default_model: str | None = None
    return_image_block: bool = False
    input_dirs: tuple[Path, ...] = ()

    _made_sync: Any = PrivateAttr(default=None)
    _made_async: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _no_local_files(cls, data: Any) -> Any:
        # BaseTool ignores unknown options; this one used to allow every file, so say what replaced it.
        if isinstance(data, dict) and "local_files" in data:
            raise ValueError("local_files was replaced by input_dirs: the directories the model may read images from")
        return data

    @field_validator("input_dirs", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return (value,) if isinstance(value, (str, PathLike)) else () if value is None else value

    @model_validator(mode="after")
    def _setup(self) -> Self:
        check_default_model(self.default_model)
        self.input_dirs = resolve_input_dirs(self.input_dirs)
        if self.handle_validation_error is True:
            # LangChain's own handler says only "Tool input validation error"; the model needs
            # to know which argument to fix and what is allowed.
            self.handle_validation_error = self._explain_validation_error
        return self

    def _explain_validation_error(self, error: ValidationError | Exception) -> str:
        return explain_invalid(error, tool_name=self.name)

    # --- clients ---------------------------------------------------------------------------

    def _sync_client(self) -> StepFun:
        from ._client import StepFun

        if self.client is None and self._made_sync is None:
            self._made_sync = StepFun() if self.async_client is None else self.async_client.to_sync()
        return self.client if self.client is not None else self._made_sync  # type: ignore[no-any-return]

    def _async_client(self) -> AsyncStepFun:
        from ._client import AsyncStepFun

        if self.async_client is None and self._made_async is None:
            self._made_async = AsyncStepFun() if self.client is None else self.client.to_async()
        return self.async_client if self.async_client is not None else self._made_async  # type: ignore[no-any-return]

    # --- running ---------------------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        return {
            "output_dir": self.output_dir,
            "default_model": self.default_model,
            # Invalid arguments raise out of run_image_tool: _explaining_invalid applies the user's handler.
            "handle_validation_error": False,
            "input_dirs": self.input_dirs,
            "tool_name": self.name,
        }

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        checked, answer = self._checked_tool_call(input)
        return answer if answer is not None else super().invoke(checked, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        checked, answer = self._checked_tool_call(input)
        return answer if answer is not None else await super().ainvoke(checked, config, **kwargs)

    def _checked_tool_call(self, input: Any) -> tuple[Any, str | ToolMessage | None]:
        """``(input, None)``: the input as LangChain can run it; ``(input, answer)``: the error
        result (a ``ToolMessage`` for a tool call) when LangChain itself would fail on it: a tool
        call whose ``args`` are not an object (JSON text of an object is decoded), or arguments
        LangChain's callbacks cannot print (nested thousands deep, an integer of more than 4300
        digits); no argument takes those."""
        is_call = isinstance(input, dict) and input.get("type") == "tool_call"
        arguments = input.get("args") if is_call else input
        try:
            if is_call and not isinstance(arguments, dict):
                arguments = decode_arguments(arguments)
                input = {**input, "args": arguments}
            if isinstance(arguments, dict) and any(map(_unprintable, arguments.items())):
                ImageToolArgs.model_validate(arguments)  # refuses them, naming the argument
        except (StepFunValidationError, ValidationError) as exc:
            content = self._error_content(exc)
            if not is_call:
                return input, content
            return input, ToolMessage(content, tool_call_id=str(input.get("id")), name=self.name, status="error")
        return input, None

    def _run(
        self, *text: str, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str | list[dict[str, Any]], StepFunImage | None]:
        client = self._sync_client()
        with self._explaining_invalid(client.api_key):
            result = run_image_tool(client, _with_prompt(text, arguments), **self._options())
        return self._output(result)

    async def _arun(
        self, *text: str, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str | list[dict[str, Any]], StepFunImage | None]:
        client = self._async_client()
        with self._explaining_invalid(client.api_key):
            result = await arun_image_tool(client, _with_prompt(text, arguments), **self._options())
        return self._output(result)

    @contextlib.contextmanager
    def _explaining_invalid(self, secret: str | None) -> Iterator[None]:
        """Arguments the catalog (or StepFun) rejected, handled like LangChain handles schema
        errors: ``handle_validation_error`` False raises, a string or a callable gives the
        content. The result is an error ``ToolMessage`` (``status="error"``); ``secret`` (the API
        key) never appears in it, even when StepFun's message echoes it."""
        try:
            yield
        except _INVALID as exc:
            raise ToolException(redact(self._error_content(exc), secret)) from exc

    def _error_content(self, exc: Exception) -> str:
        handler = self.handle_validation_error
        if not handler:
            raise exc
        if isinstance(handler, str):
            return handler
        if callable(handler):
            return str(handler(exc))
        return explain_invalid(exc, tool_name=self.name)

    def _output(self, result: ImageToolResult) -> tuple[str | list[dict[str, Any]], StepFunImage | None]:
        if not result.ok:
            # With handle_tool_error (the default) LangChain turns this into a ToolMessage with
            # status="error" and our explanation as its content.
            raise ToolException(result.content)
        assert result.image is not None
        if not self.return_image_block:
            return result.content, result.image
        return [{"type": "text", "text": result.content}, _image_block(result.image)], result.image


def _unprintable(item: tuple[Any, Any]) -> bool:
    """A key or value no argument takes and ``str()`` may fail on: a container (possibly nested
    beyond the recursion limit), a non-string key, or an integer too long to print."""
    key, value = item
    if not isinstance(key, str) or isinstance(value, (dict, list, tuple, set)):
        return True
    return isinstance(value, int) and value.bit_length() > 64


def _with_prompt(text: tuple[str, ...], arguments: dict[str, Any]) -> dict[str, Any]:
    """LangChain passes a plain string input (``tool.invoke("a red fox")``) positionally: the prompt."""
    return {"prompt": text[0], **arguments} if text else arguments


def _image_block(image: StepFunImage) -> dict[str, Any]:
    """A LangChain standard image content block, inline when we have the bytes."""
    if image.b64_json:
        return {"type": "image", "base64": image.b64_json, "mime_type": image._head_info().mime_type}
    return {"type": "image", "url": image.url}
