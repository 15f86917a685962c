"""StepFun image generation as an MCP server (``pip install 'stepfun-openai[mcp]'``).

``stepfun-openai mcp`` serves five tools to any MCP host (Claude Desktop / Code, Cursor, Codex,
LangChain through ``langchain-mcp-adapters``): ``generate_image``, ``image_to_image``,
``edit_image``, ``list_models`` and ``account_balance``. It runs on the agent-tool layer
(:mod:`stepfun_openai.tools`): the three image tools are one endpoint each, their arguments the
catalog-driven subsets of :class:`~stepfun_openai.tools.ImageToolArgs`
(:func:`~stepfun_openai._tool_args.endpoint_tool_args`), validated, planned, sent and explained
by :func:`~stepfun_openai.tools.arun_image_tool`, which also keeps the API key out of every text.

A result carries the text the tool layer writes, a preview the model can look at (at most
``PREVIEW_MAX_SIDE`` pixels a side and ``PREVIEW_MAX_BYTES`` bytes), a ``resource_link`` to the
full image saved in the output directory (readable through ``resources/read`` too), and
structured content (``ImageToolOutput``: path, model, size, seed, finish_reason, trace id, cost).
A ``content_filtered`` image is reported in text, never shown or saved. Invalid arguments,
the catalog's limits and StepFun's 400/451 come back as tool errors (``isError``) that say what
to change; 429s and server errors after the client's retries too, saying to wait.

Local files: an image argument may be an http(s) URL, a data: URL, or the path of an image
inside a root the client grants (MCP roots) or a directory given with ``--allow-dir``; nothing
else is read, and only bytes that sniff as PNG/JPEG/WebP/GIF are sent.

While StepFun works, the server reports progress every ``PROGRESS_INTERVAL`` seconds to a client
that asked for it; a client's cancellation cancels the request (the async client's HTTP call).
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

try:
    import anyio
    import mcp_types as types
    from mcp.server.lowlevel import Server
    from mcp.shared.exceptions import MCPDeprecationWarning
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("the StepFun MCP server needs the MCP SDK: pip install 'stepfun-openai[mcp]'") from exc

import openai
from pydantic import BaseModel, Field

from . import __version__, catalog
from ._exceptions import StepFunValidationError
from ._tool_args import endpoint_tool_args, strict_json_schema
from ._urls import is_data_url, is_http_url
from .tools import ImageToolResult, arun_image_tool, redact, resolve_input_dirs

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from ._client import AsyncStepFun
    from .types import StepFunImage

__all__ = [
    "PREVIEW_MAX_BYTES",
    "PREVIEW_MAX_SIDE",
    "PROGRESS_INTERVAL",
    "ImageToolOutput",
    "StepFunMCP",
    "default_output_dir",
]

SERVER_NAME = "stepfun-images"
PREVIEW_MAX_SIDE = 512
"""The preview's longest side in pixels: enough for a model to judge the image, a fraction of its tokens."""
PREVIEW_MAX_BYTES = 1024 * 1024
"""The most bytes of preview one tool result carries (before base64); a larger one is shrunk or left out."""
PROGRESS_INTERVAL = 1.0
"""Seconds between progress notifications while StepFun works."""
ROOTS_TIMEOUT = 5.0
"""How long to wait for the client's ``roots/list`` answer before using ``--allow-dir`` alone."""
RESOURCE_MAX_BYTES = 4 * catalog.MAX_IMAGE_BYTES
"""The largest saved image ``resources/read`` returns (StepFun's images are far smaller)."""

_ENDPOINTS: dict[str, catalog.Endpoint] = {
    "generate_image": "generations",
    "image_to_image": "image2image",
    "edit_image": "edits",
}
_DESCRIPTIONS = {
    "generate_image": "Generate an image with StepFun from a text prompt (text to image).",
    "image_to_image": (
        "Transform an existing image with StepFun (image to image): a new image that keeps the source's "
        "composition, closer to it the smaller source_weight is."
    ),
    "edit_image": "Edit an image with StepFun by instruction (e.g. 'make the sky stormy'); the rest stays as it is.",
}
_RESULT_NOTE = (
    " The result shows a small preview of the image, links the full-size file, and reports its path, "
    "size, seed (reuse it to reproduce the image), model and cost."
)
_IMAGE_ARGUMENTS = ("source_image", "image", "style_reference")


class Cost(BaseModel):
    amount: str | None = Field(description="The price as a decimal string, or null when unknown.")
    currency: str | None = Field(description="CNY or USD, or null when unknown.")
    note: str = Field(default="", description="Why the cost is unknown, when it is.")


class ImageToolOutput(BaseModel):
    """The structured content of an image tool's result."""

    ok: bool = Field(description="true when an image was generated and saved.")
    finish_reason: str | None = Field(description="success, or content_filtered (blocked by moderation, not saved).")
    path: str | None = Field(description="Where the full image was saved.")
    uri: str | None = Field(description="The saved file as a file:// URI (also readable with resources/read).")
    model: str | None = Field(description="The StepFun model used.")
    size: str | None = Field(description="WIDTHxHEIGHT of the saved image.")
    seed: int | None = Field(description="The seed used; pass it again to reproduce the image.")
    trace_id: str | None = Field(description="StepFun's trace id, for support requests.")
    cost: Cost | None = Field(description="What the image cost at the catalog's price.")
    preview: str | None = Field(description="What the preview shows (or why there is none).")


def default_output_dir() -> Path:
    """``$XDG_DATA_HOME/stepfun-openai/mcp`` (``~/.local/share/...``; ``%LOCALAPPDATA%`` on Windows),
    or a folder in the temp dir when there is no home."""
    base = os.environ.get("XDG_DATA_HOME") or os.environ.get("LOCALAPPDATA")
    if not base:
        with contextlib.suppress(RuntimeError):
            base = str(Path.home() / ".local" / "share")
    return Path(base or tempfile.gettempdir()) / "stepfun-openai" / "mcp"


# --- previews --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    data: bytes | None
    mime_type: str | None
    note: str


def make_preview(data: bytes, mime_type: str, *, max_side: int = PREVIEW_MAX_SIDE) -> Preview:
    """The image downscaled to at most ``max_side`` pixels a side, as PNG (JPEG when the PNG
    would pass ``PREVIEW_MAX_BYTES``). Without Pillow: the image itself when it fits the cap."""
    try:
        from PIL import Image
    except ImportError:
        if len(data) <= PREVIEW_MAX_BYTES:
            return Preview(data, mime_type, "the full image (Pillow is not installed to shrink it)")
        return Preview(None, None, "no preview: the image is too large to show and Pillow is not installed")
    from ._fit import open_image

    def refused(*_: object) -> Exception:
        return ValueError("not decodable")

    try:
        image = open_image(data, too_large=refused, undecodable=refused)
    except ValueError:
        return Preview(None, None, "no preview: the image could not be decoded")
    with image:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        width, height = image.size
        for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
            buffer = io.BytesIO()
            converted = image if fmt == "PNG" or image.mode == "RGB" else image.convert("RGB")
            converted.save(buffer, fmt, optimize=True, **({"quality": 85} if fmt == "JPEG" else {}))
            if buffer.tell() <= PREVIEW_MAX_BYTES:
                return Preview(buffer.getvalue(), mime, f"a {width}x{height} preview; the full image is at the link")
    return Preview(None, None, "no preview: it would be larger than the cap")


# --- the server ------------------------------------------------------------------------------------


@dataclass
class StepFunMCP:
    """The MCP server over one ``AsyncStepFun`` client.

    ``output_dir``: where images are saved (created on first use). ``allow_dirs``: directories whose
    image files the tools may read, besides the roots the client grants (``use_roots=False``: only
    these). ``server`` is the SDK's lowlevel ``Server``: ``run_stdio()`` / ``run_http()`` serve it,
    and ``mcp.Client(server)`` connects to it in-process (tests).
    """

    client: AsyncStepFun
    output_dir: Path = field(default_factory=default_output_dir)
    allow_dirs: Sequence[str | os.PathLike[str]] = ()
    use_roots: bool = True
    progress_interval: float = PROGRESS_INTERVAL
    server: Server[Any] = field(init=False, repr=False)
    _allowed: tuple[Path, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        self._allowed = resolve_input_dirs(list(self.allow_dirs))
        self.output_dir = Path(self.output_dir).expanduser()
        self.server = Server(
            SERVER_NAME,
            version=__version__,
            title="StepFun images",
            instructions=(
                "Generate and edit images with StepFun. Images are saved to disk; each result shows a preview. "
                "Image inputs: http(s) URLs, data: URLs, or paths inside the directories this server may read."
            ),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_read_resource=self._read_resource,
        )

    # --- listing ---------------------------------------------------------------------------------

    def tools(self) -> list[types.Tool]:
        output = ImageToolOutput.model_json_schema()
        listed = [
            types.Tool(
                name=name,
                title=name.replace("_", " ").capitalize(),
                description=_DESCRIPTIONS[name] + _RESULT_NOTE,
                input_schema=_input_schema(endpoint_tool_args(endpoint)),
                output_schema=output,
                annotations=types.ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
            )
            for name, endpoint in _ENDPOINTS.items()
        ]
        listed.append(
            types.Tool(
                name="list_models",
                title="List StepFun image models",
                description="StepFun's image models: which tools each serves, sizes, step and cfg_scale ranges, price.",
                input_schema={"type": "object", "properties": {}, "additionalProperties": False},
                output_schema=_MODELS_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
            )
        )
        listed.append(
            types.Tool(
                name="account_balance",
                title="StepFun account balance",
                description="The balance of the StepFun account behind the server's API key (before a costly batch).",
                input_schema={"type": "object", "properties": {}, "additionalProperties": False},
                output_schema=_BALANCE_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=True),
            )
        )
        return listed

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=self.tools())

    # --- calling ---------------------------------------------------------------------------------

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name, arguments = params.name, params.arguments or {}
        try:
            if name in _ENDPOINTS:
                return await self._image(ctx, name, arguments)
            if arguments:
                return _error(f"{name} takes no arguments; call it with {{}}.")
            if name == "list_models":
                return _structured(_models())
            if name == "account_balance":
                return await self._balance()
            return _error(
                f"Unknown tool {name!r}; the tools are: {', '.join([*_ENDPOINTS, 'list_models', 'account_balance'])}."
            )
        except openai.APIError as exc:
            return _error(self._clean(_api_failure(exc)))

    def _clean(self, text: str) -> str:
        return redact(text, self.client.api_key)

    async def _image(
        self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any]
    ) -> types.CallToolResult:
        input_dirs = self._allowed
        if any(_is_path(arguments.get(key)) for key in _IMAGE_ARGUMENTS):
            input_dirs = tuple(dict.fromkeys((*input_dirs, *await self._roots(ctx))))
        async with _progress(ctx, self.progress_interval):
            result = await arun_image_tool(
                self.client,
                arguments,
                output_dir=self.output_dir,
                input_dirs=input_dirs,
                tool_name=name,
                endpoint=_ENDPOINTS[name],
            )
        return await anyio.to_thread.run_sync(self._result, result)

    def _result(self, result: ImageToolResult) -> types.CallToolResult:
        if result.error in ("invalid_arguments", "content_blocked"):
            return _error(result.content)
        image = result.image
        response = result.response
        filtered = result.error == "content_filtered"
        output = ImageToolOutput(
            ok=not filtered,
            finish_reason=image.finish_reason if image else None,
            path=str(result.path) if result.path else None,
            uri=result.path.as_uri() if result.path else None,
            model=result.model,
            size=None,
            seed=image.seed if image else None,
            trace_id=response.trace_id if response else None,
            cost=_cost(image) if image else None,
            preview=None,
        )
        content: list[Any] = [types.TextContent(type="text", text=result.content)]
        if not filtered and result.path is not None:
            # The bytes StepFun sent (held since the save; bounded by the client's download cap),
            # not a second read of the file.
            data = image.read() if image else b""
            info = image._head_info() if image else None
            mime = f"image/{info.format}" if info and info.format else "image/png"
            if info and info.width and info.height:
                output.size = f"{info.width}x{info.height}"
            preview = make_preview(data, mime)
            output.preview = preview.note
            if preview.data is not None and preview.mime_type is not None:
                encoded = base64.b64encode(preview.data).decode("ascii")
                content.append(types.ImageContent(type="image", data=encoded, mime_type=preview.mime_type))
            content.append(
                types.ResourceLink(
                    type="resource_link",
                    name=result.path.name,
                    uri=result.path.as_uri(),
                    mime_type=mime,
                    size=result.path.stat().st_size,
                    description="The full-size image",
                )
            )
        return types.CallToolResult(content=content, structured_content=output.model_dump(mode="json"))

    async def _balance(self) -> types.CallToolResult:
        account = await self.client.account.retrieve()
        region = catalog.host_of(self.client.base_url).region or self.client.region
        currency = {"mainland": "CNY", "international": "USD"}.get(region or "")
        unit = {"CNY": "yuan", "USD": "dollars"}.get(currency or "", "(currency unknown: set a region)")
        data = {
            "balance": account.balance,
            "currency": currency,
            "type": account.type,
            "total_cash_balance": account.total_cash_balance,
            "total_voucher_balance": account.total_voucher_balance,
        }
        kind = "postpaid (billed afterwards)" if not account.prepaid else "prepaid"
        text = f"Balance: {account.balance} {unit} ({kind} account)."
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=data)

    async def _roots(self, ctx: ServerRequestContext[Any]) -> tuple[Path, ...]:
        """The client's roots as directories (``file://`` URIs that exist), or none when it has none,
        does not answer within ``ROOTS_TIMEOUT`` or cannot be asked on this connection."""
        if not self.use_roots:
            return ()
        try:
            capabilities = ctx.session.client_capabilities
            if capabilities is None or capabilities.roots is None:
                return ()
            with anyio.fail_after(ROOTS_TIMEOUT), warnings.catch_warnings():
                # Deprecated in the 2026-07-28 revision; today's hosts speak the earlier ones.
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                answer = await ctx.session.list_roots()
        except Exception:  # no back channel, a timeout, a client error: the --allow-dir list alone
            return ()
        found: list[Path] = []
        for root in answer.roots:
            parsed = urlparse(str(root.uri))
            if parsed.scheme == "file" and parsed.netloc in ("", "localhost"):
                with contextlib.suppress(StepFunValidationError):
                    found.extend(resolve_input_dirs(unquote(parsed.path)))
        return tuple(found)

    # --- resources -------------------------------------------------------------------------------

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        """A saved image, by the ``file://`` URI of its resource link (only inside the output directory)."""
        from mcp.shared.exceptions import MCPError

        uri = str(params.uri)
        parsed = urlparse(uri)
        path = Path(os.path.realpath(unquote(parsed.path))) if parsed.scheme == "file" else None
        folder = Path(os.path.realpath(self.output_dir))
        if path is None or not path.is_relative_to(folder) or not path.is_file():
            raise MCPError(code=-32002, message=f"Resource not found: {uri} (only images this server saved)")
        if path.stat().st_size > RESOURCE_MAX_BYTES:
            raise MCPError(code=-32002, message=f"Resource too large: {uri}")
        data = await anyio.Path(path).read_bytes()
        from ._sniff import HEADER_BYTES, sniff

        fmt = sniff(data[:HEADER_BYTES]).format
        return types.ReadResourceResult(
            contents=[
                types.BlobResourceContents(
                    uri=uri, mime_type=f"image/{fmt or 'png'}", blob=base64.b64encode(data).decode("ascii")
                )
            ]
        )

    # --- running ---------------------------------------------------------------------------------

    async def run_stdio(self) -> None:
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self.server.create_initialization_options())

    async def run_http(self, *, port: int = 8000, ready: Callable[[int], None] | None = None) -> None:
        """Streamable HTTP on ``http://127.0.0.1:PORT/mcp`` (loopback only; DNS-rebinding checks on)."""
        import uvicorn

        app = self.server.streamable_http_app(host="127.0.0.1")
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        if ready is None:
            await server.serve()
            return
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve)
            while not server.started:
                await anyio.sleep(0.02)
            ready(server.servers[0].sockets[0].getsockname()[1])


# --- helpers ----------------------------------------------------------------------------------------


def _input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The arguments' JSON schema for ``tools/list``: required is what the model must give (not
    OpenAI's strict form, where every property is required); no titles."""
    schema = strict_json_schema(model)
    schema["required"] = [name for name, info in model.model_fields.items() if info.is_required()]
    return schema


def _is_path(value: object) -> bool:
    return isinstance(value, str) and not is_http_url(value) and not is_data_url(value)


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def _structured(data: dict[str, Any]) -> types.CallToolResult:
    import json

    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data, ensure_ascii=False))], structured_content=data
    )


def _cost(image: StepFunImage) -> Cost:
    cost = image.cost
    return Cost(amount=None if cost.amount is None else str(cost.amount), currency=cost.currency, note=cost.note)


def _api_failure(exc: openai.APIError) -> str:
    """What the model should do about an error it cannot fix by changing the arguments."""
    if isinstance(exc, openai.RateLimitError):
        return "StepFun is rate limiting this key (HTTP 429) even after retries. Wait a minute and call the tool again."
    if isinstance(exc, openai.AuthenticationError):
        return "StepFun refused the server's API key (HTTP 401). Tell the user to check STEPFUN_API_KEY."
    if isinstance(exc, openai.APIStatusError) and exc.status_code == 402:
        return "The StepFun account has no balance left (HTTP 402). Tell the user to top it up."
    if isinstance(exc, openai.APIStatusError):
        return f"StepFun failed (HTTP {exc.status_code}) after retries. Try again later."
    return f"Could not reach StepFun ({type(exc).__name__}). Try again later."


@contextlib.asynccontextmanager
async def _progress(ctx: ServerRequestContext[Any], interval: float) -> AsyncIterator[None]:
    """Report progress (elapsed seconds in the message) every ``interval`` while the body runs; a
    no-op for a client that sent no progress token."""
    start = time.monotonic()

    async def report() -> None:
        count = 0
        while True:
            await anyio.sleep(interval)
            count += 1
            with contextlib.suppress(Exception):
                await ctx.session.report_progress(
                    count, None, f"waiting for StepFun ({time.monotonic() - start:.0f} s)"
                )

    error: Exception | None = None
    async with anyio.create_task_group() as group:
        with contextlib.suppress(Exception):
            await ctx.session.report_progress(0, None, "sending the request to StepFun")
        group.start_soon(report)
        try:
            yield
        except Exception as exc:  # raised as itself below, not wrapped in the task group's ExceptionGroup
            error = exc
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error


def _models() -> dict[str, Any]:
    tools = {endpoint: name for name, endpoint in _ENDPOINTS.items()}
    models = []
    for name, spec in catalog.MODELS.items():
        endpoints = {}
        for endpoint, ep in spec.endpoints.items():
            endpoints[tools[endpoint]] = {
                "sizes": list(ep.sizes) if ep.sizes else None,
                "size_order": ep.size_order,
                "default_size": ep.default_size,
                "steps": ep.steps.describe(),
                "cfg_scale": ep.cfg_scale.describe(),
                "prompt_max": ep.prompt_max,
                "negative_prompt": ep.negative_prompt_max is not None,
                "text_mode": ep.text_mode,
            }
        prices = {
            region: f"{price.amount} {price.currency}"
            for region in ("mainland", "international")
            if (price := catalog.price_of(name, region)) is not None
        }
        models.append(
            {"name": name, "status": spec.status, "description": spec.description, "tools": endpoints, "price": prices}
        )
    return {"models": models}


_MODELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"models": {"type": "array", "items": {"type": "object"}}},
    "required": ["models"],
}
_BALANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "balance": {"type": ["number", "null"]},
        "currency": {"type": ["string", "null"]},
        "type": {"type": ["string", "null"]},
        "total_cash_balance": {"type": ["number", "null"]},
        "total_voucher_balance": {"type": ["number", "null"]},
    },
    "required": ["balance", "currency"],
}
