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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

try:
    from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
    from langchain_core.tools import BaseTool, ToolException
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("stepfun_openai.langchain needs langchain-core: pip install 'stepfun-openai[langchain]'") from exc

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from typing_extensions import Self

from .tools import (
    _INVALID,
    IMAGE_TOOL_DESCRIPTION,
    IMAGE_TOOL_NAME,
    ImageToolArgs,
    ImageToolResult,
    arun_image_tool,
    check_default_model,
    explain_invalid,
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
      local_files: ``False`` accepts only URLs as ``source_image``/``style_reference``.
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
    local_files: bool = True

    _made_sync: Any = PrivateAttr(default=None)
    _made_async: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _setup(self) -> Self:
        check_default_model(self.default_model)
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
            # Invalid arguments raise out of run_image_tool: _invalid applies the user's handler.
            "handle_validation_error": False,
            "local_files": self.local_files,
            "tool_name": self.name,
        }

    def _run(
        self, run_manager: CallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str | list[dict[str, Any]], StepFunImage | None]:
        with self._explaining_invalid():
            result = run_image_tool(self._sync_client(), arguments, **self._options())
        return self._output(result)

    async def _arun(
        self, run_manager: AsyncCallbackManagerForToolRun | None = None, **arguments: Any
    ) -> tuple[str | list[dict[str, Any]], StepFunImage | None]:
        with self._explaining_invalid():
            result = await arun_image_tool(self._async_client(), arguments, **self._options())
        return self._output(result)

    @contextlib.contextmanager
    def _explaining_invalid(self) -> Iterator[None]:
        try:
            yield
        except _INVALID as exc:
            self._invalid(exc)

    def _invalid(self, exc: Exception) -> NoReturn:
        """Arguments the catalog (or StepFun) rejected, handled like LangChain handles schema
        errors: ``handle_validation_error`` False raises, a string or a callable gives the
        content. The result is an error ``ToolMessage`` (``status="error"``)."""
        handler = self.handle_validation_error
        if not handler:
            raise exc
        if isinstance(handler, str):
            content = handler
        elif callable(handler):
            content = handler(exc)
        else:
            content = explain_invalid(exc, tool_name=self.name)
        raise ToolException(content) from exc

    def _output(self, result: ImageToolResult) -> tuple[str | list[dict[str, Any]], StepFunImage | None]:
        if not result.ok:
            # With handle_tool_error (the default) LangChain turns this into a ToolMessage with
            # status="error" and our explanation as its content.
            raise ToolException(result.content)
        assert result.image is not None
        if not self.return_image_block:
            return result.content, result.image
        return [{"type": "text", "text": result.content}, _image_block(result.image)], result.image


def _image_block(image: StepFunImage) -> dict[str, Any]:
    """A LangChain standard image content block, inline when we have the bytes."""
    if image.b64_json:
        return {"type": "image", "base64": image.b64_json, "mime_type": image._head_info().mime_type}
    return {"type": "image", "url": image.url}
