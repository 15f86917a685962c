"""``stepfun-openai mcp``: the MCP server, driven by the official SDK's own client.

The server runs as a subprocess over stdio (what agent hosts do) or Streamable HTTP on
127.0.0.1, against an emulator: ``--emulator`` in the server's process, or one in this process
whose key is a secret that must never reach any message the client receives."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from stepfun_openai import catalog
from stepfun_openai.emulator import Emulator
from stepfun_openai.mcp_server import PREVIEW_MAX_BYTES, PREVIEW_MAX_SIDE

from ._hostile import answer, hostile_server, within

SECRET = "sk-mcp-test-SECRET-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[1]
SERVER = [sys.executable, "-c", "import sys; from stepfun_openai.cli import main; sys.exit(main())", "mcp"]


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("STEPFUN_", "STEP_"))}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _png(width: int = 64, height: int = 64) -> bytes:
    from PIL import Image

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(api_key=SECRET, block_words=("forbidden",), filter_words=("filtered",)) as emu:
        yield emu


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    out, allowed, outside = tmp_path / "out", tmp_path / "allowed", tmp_path / "outside"
    for folder in (allowed, outside):
        folder.mkdir()
    (allowed / "cat.png").write_bytes(_png())
    (allowed / "notes.txt").write_text("not an image, and secret notes")
    (outside / "dog.png").write_bytes(_png())
    return {"out": out, "allowed": allowed, "outside": outside}


class Session:
    """One connected client, and every message it received (to look for the key in)."""

    def __init__(self, client: Client, seen: list[str]) -> None:
        self.client, self.seen = client, seen

    async def call(self, name: str, arguments: dict[str, Any], **kwargs: Any) -> types.CallToolResult:
        result = await self.client.call_tool(name, arguments, **kwargs)
        self.seen.append(result.model_dump_json())
        return result


def run(
    body: Callable[[Session], Awaitable[None]],
    *args: str,
    env: dict[str, str],
    seconds: float = 30,
    **client: Any,
) -> str:
    """``body`` against the server started with ``args``; returns the server's stderr."""
    seen: list[str] = []

    async def on_message(message: Any) -> None:
        seen.append(repr(message))

    async def main() -> None:
        params = StdioServerParameters(command=SERVER[0], args=[*SERVER[1:], *args], env=env, cwd=str(ROOT))
        with open(errlog_path, "w") as errlog:
            async with Client(stdio_client(params, errlog=errlog), message_handler=on_message, **client) as connected:
                session = Session(connected, seen)
                listed = await connected.list_tools()
                seen.append(listed.model_dump_json())
                await body(session)

    errlog_path = Path(tempfile.mkstemp(prefix="mcp-stderr-")[1])
    try:
        within(seconds, lambda: anyio.run(main))
        stderr = errlog_path.read_text()
    finally:
        errlog_path.unlink()
    assert SECRET not in stderr
    for message in seen:
        assert SECRET not in message
    return stderr


def _server_args(dirs: dict[str, Path]) -> list[str]:
    return ["--out", str(dirs["out"]), "--allow-dir", str(dirs["allowed"]), "--no-roots", "--region", "mainland"]


def _text(result: types.CallToolResult) -> str:
    return " ".join(block.text for block in result.content if isinstance(block, types.TextContent))


# --- listing --------------------------------------------------------------------------------------


def test_the_tools_and_their_schemas_come_from_the_catalog(tmp_path: Path) -> None:
    async def body(session: Session) -> None:
        tools = {tool.name: tool for tool in (await session.client.list_tools()).tools}
        assert set(tools) == {"generate_image", "image_to_image", "edit_image", "list_models", "account_balance"}
        generate = tools["generate_image"].input_schema
        assert generate["required"] == ["prompt"]
        assert generate["additionalProperties"] is False
        assert {"prompt", "model", "size", "seed", "steps", "cfg_scale", "negative_prompt", "text_mode"} <= set(
            generate["properties"]
        )
        assert "style_reference" in generate["properties"]
        enum = generate["properties"]["model"]["anyOf"][0]["enum"]
        assert enum == catalog.models_for("generations")
        i2i = tools["image_to_image"].input_schema
        assert i2i["required"] == ["prompt", "source_image"]
        assert i2i["properties"]["model"]["anyOf"][0]["enum"] == catalog.models_for("image2image")
        assert "source_weight" in i2i["properties"]
        edit = tools["edit_image"].input_schema
        assert edit["required"] == ["prompt", "image"]
        assert edit["properties"]["model"]["anyOf"][0]["enum"] == catalog.models_for("edits")
        assert "source_weight" not in edit["properties"]
        for name in ("generate_image", "image_to_image", "edit_image"):
            output = tools[name].output_schema
            assert output is not None
            assert {"path", "seed", "model", "size", "finish_reason", "trace_id", "cost"} <= set(output["properties"])

    run(body, "--emulator", "--out", str(tmp_path), env=_env())


# --- calling --------------------------------------------------------------------------------------


def test_generate_image_shows_a_preview_links_the_file_and_reports_structured_content(
    emulator: Emulator, dirs: dict[str, Path]
) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def body(session: Session) -> None:
        result = await session.call(
            "generate_image", {"prompt": "a red fox in the snow", "seed": 42, "size": "1024x1024"},
            progress_callback=on_progress,
        )  # fmt: skip
        assert not result.is_error, _text(result)
        kinds = [block.type for block in result.content]
        assert kinds == ["text", "image", "resource_link"]
        data = result.structured_content
        assert data is not None
        path = Path(data["path"])
        assert path.parent == dirs["out"].resolve() and path.name == "a-red-fox-in-the-snow-42.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert data["seed"] == 42 and data["model"] == "step-image-edit-2" and data["size"] == "1024x1024"
        assert data["finish_reason"] == "success" and data["trace_id"]
        assert data["cost"] == {"amount": "0.02", "currency": "CNY", "note": ""}
        preview = result.content[1]
        assert isinstance(preview, types.ImageContent) and preview.mime_type == "image/png"
        raw = base64.b64decode(preview.data)
        assert len(raw) <= PREVIEW_MAX_BYTES
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as shown:
            assert max(shown.size) == PREVIEW_MAX_SIDE
        link = result.content[2]
        assert isinstance(link, types.ResourceLink)
        assert str(link.uri) == path.as_uri() and link.size == path.stat().st_size
        contents = (await session.client.read_resource(str(link.uri))).contents[0]
        assert isinstance(contents, types.BlobResourceContents)
        assert base64.b64decode(contents.blob) == path.read_bytes()
        assert "seed 42" in _text(result) and str(path) in _text(result)

    run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=emulator.base_url))
    assert progress and progress[0] == 0


def test_image_to_image_and_edit_read_files_only_inside_the_allowed_directory(
    emulator: Emulator, dirs: dict[str, Path]
) -> None:
    cat = str(dirs["allowed"] / "cat.png")

    async def body(session: Session) -> None:
        moved = await session.call("image_to_image", {"prompt": "a watercolour", "source_image": cat, "seed": 3})
        assert not moved.is_error, _text(moved)
        assert moved.structured_content is not None and moved.structured_content["model"] == "step-2x-large"
        assert "Transformed the source image" in _text(moved)
        edited = await session.call("edit_image", {"prompt": "make it blue", "image": cat})
        assert not edited.is_error, _text(edited)
        assert edited.structured_content is not None
        assert edited.structured_content["model"] == "step-image-edit-2"
        assert edited.structured_content["size"] == "64x64"  # an edit keeps the input's size
        assert "Edited the image" in _text(edited)

    run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=emulator.base_url))


MISTAKES = [
    ("generate_image", {"prompt": "x", "steps": 900}, "steps=900"),  # the catalog's limit for the model
    ("generate_image", {"prompt": "x", "colour": "red"}, "unknown argument 'colour'"),
    ("generate_image", {"seed": 1}, "prompt is required"),
    ("generate_image", {"prompt": "x", "seed": 10**40}, "seed="),
    ("edit_image", {"prompt": "x", "image": "{outside}/dog.png"}, "outside them"),  # not in --allow-dir
    ("edit_image", {"prompt": "x", "image": "/etc/passwd"}, "outside them"),
    ("image_to_image", {"prompt": "x", "source_image": "{allowed}/notes.txt"}, "not a PNG"),  # not an image
    ("image_to_image", {"prompt": "x", "source_image": "{allowed}/../outside/dog.png"}, "outside them"),
    ("generate_image", {"prompt": "something forbidden"}, "HTTP 451"),  # StepFun's moderation
    ("list_models", {"x": 1}, "takes no arguments"),
]


def test_mistakes_come_back_as_tool_errors_that_say_what_to_change(emulator: Emulator, dirs: dict[str, Path]) -> None:
    async def body(session: Session) -> None:
        for tool, arguments, expected in MISTAKES:
            filled = {
                key: value.format(outside=dirs["outside"], allowed=dirs["allowed"]) if isinstance(value, str) else value
                for key, value in arguments.items()
            }
            result = await session.call(tool, filled)
            assert result.is_error, (tool, arguments)
            assert expected in _text(result), (tool, _text(result))
            assert "secret notes" not in _text(result)

    run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=emulator.base_url))
    assert not dirs["out"].exists() or not any(dirs["out"].iterdir())


def test_a_filtered_image_is_reported_not_shown_and_models_and_balance_are_listed(
    emulator: Emulator, dirs: dict[str, Path]
) -> None:
    async def body(session: Session) -> None:
        result = await session.call("generate_image", {"prompt": "something filtered"})
        assert not result.is_error
        assert [block.type for block in result.content] == ["text"]
        assert "content_filtered" in _text(result)
        assert result.structured_content is not None
        assert result.structured_content["ok"] is False and result.structured_content["path"] is None

        models = await session.call("list_models", {})
        assert not models.is_error and models.structured_content is not None
        names = [model["name"] for model in models.structured_content["models"]]
        assert names == list(catalog.MODELS)
        assert json.loads(_text(models)) == models.structured_content
        balance = await session.call("account_balance", {})  # the filtered image was billed
        assert not balance.is_error and balance.structured_content is not None
        assert balance.structured_content["balance"] == pytest.approx(-0.02)
        assert balance.structured_content["currency"] == "CNY" and "yuan" in _text(balance)

    run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=emulator.base_url))


def test_a_rejected_key_is_a_tool_error_that_says_to_check_it(dirs: dict[str, Path]) -> None:
    with Emulator(api_key="sk-another-key-entirely-0000") as wrong:

        async def body(session: Session) -> None:
            result = await session.call("generate_image", {"prompt": "a fox"})
            assert result.is_error and "401" in _text(result)
            balance = await session.call("account_balance", {})
            assert balance.is_error and "STEPFUN_API_KEY" in _text(balance)

        run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=wrong.base_url))


def test_the_key_stays_out_when_stepfun_echoes_it_in_a_message(dirs: dict[str, Path]) -> None:
    echo = {"error": {"message": f"invalid request from key {SECRET}", "type": "invalid_request_error"}}
    with hostile_server(answer(400, echo)) as server:

        async def body(session: Session) -> None:
            expectations = ((400, "StepFun rejected the request: invalid request from key"), (451, "HTTP 451"))
            for status, expected in expectations:
                server.script = answer(status, echo)
                result = await session.call("generate_image", {"prompt": "a fox"})
                assert result.is_error and expected in _text(result), _text(result)
            assert server.requests == 2

        run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=f"{server.url}/v1"))


def test_roots_the_client_grants_are_readable(emulator: Emulator, dirs: dict[str, Path]) -> None:
    dog = str(dirs["outside"] / "dog.png")

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=dirs["outside"].resolve().as_uri(), name="outside")])

    async def body(session: Session) -> None:
        result = await session.call("edit_image", {"prompt": "make it blue", "image": dog})
        assert not result.is_error, _text(result)

    run(body, "--out", str(dirs["out"]), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=emulator.base_url),
        list_roots_callback=roots, mode="legacy")  # roots: handshake-era connections  # fmt: skip


def test_progress_is_reported_while_waiting_and_a_cancelled_call_stops(dirs: dict[str, Path]) -> None:
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    with Emulator(api_key=SECRET, latency=2.5) as slow:

        async def body(session: Session) -> None:
            started = time.monotonic()
            with anyio.move_on_after(1.6):
                await session.call("generate_image", {"prompt": "a slow fox"}, progress_callback=on_progress)
            assert time.monotonic() - started < 2.4
            await anyio.sleep(1.5)  # past the emulator's answer: a cancelled call saves nothing
            listed = await session.call("list_models", {})  # the server still answers
            assert not listed.is_error

        run(body, *_server_args(dirs), env=_env(STEPFUN_API_KEY=SECRET, STEPFUN_BASE_URL=slow.base_url))
    assert [value for value, _ in progress][:2] == [0, 1]
    assert any(message and "waiting for StepFun" in message for _, message in progress)
    assert not dirs["out"].exists() or not any(dirs["out"].iterdir())


# --- HTTP -----------------------------------------------------------------------------------------


@asynccontextmanager
async def _http_server(args: list[str], env: dict[str, str]) -> Any:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([*SERVER, "--http", "--port", str(port), *args], env=env, stderr=subprocess.PIPE)
    try:
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        assert f"http://127.0.0.1:{port}/mcp" in line, line
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def test_streamable_http_on_loopback(tmp_path: Path) -> None:
    async def main() -> None:
        async with _http_server(["--emulator", "--out", str(tmp_path)], _env()) as url:
            async with Client(url) as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                assert "generate_image" in names
                result = await client.call_tool("generate_image", {"prompt": "a fox over http", "seed": 5})
                assert not result.is_error
                assert result.structured_content is not None
                assert Path(result.structured_content["path"]).is_file()
                assert [block.type for block in result.content] == ["text", "image", "resource_link"]

    within(30, lambda: anyio.run(main))


# --- packaging ------------------------------------------------------------------------------------


def test_without_the_extra_the_error_names_it() -> None:
    code = textwrap.dedent(
        """
        import sys
        class NoMCP:
            def find_spec(self, name, path=None, target=None):
                if name == "mcp" or name.startswith("mcp."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, NoMCP())
        from stepfun_openai.cli import main
        sys.exit(main(["mcp", "--emulator"]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(), check=False
    )
    assert result.returncode == 2
    assert "pip install 'stepfun-openai[mcp]'" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param([], "STEPFUN_API_KEY (or STEP_API_KEY)", id="no-key"),
        pytest.param(["--emulator", "--allow-dir", "/no/such/dir"], "--allow-dir /no/such/dir", id="allow-dir"),
        pytest.param(["--emulator", "--http", "--port", "70000"], "--port 70000", id="port"),
    ],
)
def test_the_command_says_what_is_wrong_before_serving(args: list[str], expected: str) -> None:
    result = subprocess.run(
        [*SERVER, *args], capture_output=True, text=True, timeout=60, env=_env(), stdin=subprocess.DEVNULL, check=False
    )
    assert result.returncode == 2
    assert expected in result.stderr


def test_import_stepfun_openai_does_not_load_mcp() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import sys, stepfun_openai, stepfun_openai.tools, stepfun_openai.cli; "
         "assert 'mcp' not in sys.modules"],
        capture_output=True, text=True, timeout=60, env=_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- in process: what a subprocess cannot show cheaply ----------------------------------------------


def _in_process(server: Any, body: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Client(server) as client:
            await body(client)

    within(20, lambda: anyio.run(main))


def test_rate_limits_after_the_retries_say_to_wait_and_only_saved_images_are_resources(tmp_path: Path) -> None:
    from mcp.shared.exceptions import MCPError

    from stepfun_openai import AsyncStepFun
    from stepfun_openai.mcp_server import StepFunMCP

    limited = {"error": {"message": f"rate limited for {SECRET}", "type": "rate_limit"}}
    with hostile_server(answer(429, limited, {"Retry-After": "0"})) as server:
        client = AsyncStepFun(api_key=SECRET, base_url=f"{server.url}/v1", max_retries=0)
        mcp = StepFunMCP(client, output_dir=tmp_path)

        async def body(connected: Client) -> None:
            result = await connected.call_tool("generate_image", {"prompt": "a fox"})
            assert result.is_error and "HTTP 429" in _text(result) and "Wait" in _text(result)
            assert SECRET not in result.model_dump_json()
            (tmp_path.parent / "private.png").write_bytes(_png())
            for uri in ((tmp_path.parent / "private.png").as_uri(), "file:///etc/passwd", "https://example.com/x.png"):
                with pytest.raises(MCPError, match="only images this server saved"):
                    await connected.read_resource(uri)

        _in_process(mcp.server, body)


def test_previews_stay_under_the_cap_with_or_without_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from stepfun_openai.mcp_server import make_preview

    noise = Image.effect_noise((2048, 2048), 90).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    large = buffer.getvalue()
    assert len(large) > PREVIEW_MAX_BYTES
    preview = make_preview(large, "image/png")
    assert preview.data is not None and len(preview.data) <= PREVIEW_MAX_BYTES
    with Image.open(io.BytesIO(preview.data)) as shown:
        assert shown.size == (PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE)

    small = _png()
    monkeypatch.setitem(sys.modules, "PIL", None)  # Pillow missing: `from PIL import Image` fails
    assert make_preview(small, "image/png").data == small  # under the cap: the image itself
    missing = make_preview(large, "image/png")
    assert missing.data is None and "Pillow" in missing.note
