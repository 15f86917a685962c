"""StepFunImageTool: StepFun image generation as a LangChain tool."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from stepfun_openai import AsyncStepFun, StepFun, StepFunImage, StepFunValidationError
from stepfun_openai.emulator import Emulator
from stepfun_openai.langchain import StepFunImageTool
from stepfun_openai.tools import ImageToolArgs
from tests._mock import Recorder, error_response, tiny_png
from tests.test_tools import last_request, strict_mode_violations
from tests.test_tools_hostile import API_KEY, KNOWN_BREAKERS, json_arguments, make_client, text_arguments


def call(args: dict[str, Any], call_id: str = "call_1") -> dict[str, Any]:
    """A tool call as a chat model emits it."""
    return {"name": "generate_image", "args": args, "id": call_id, "type": "tool_call"}


def _deep_list(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60, check=False
    )


# --- packaging ----------------------------------------------------------------------------------


def test_import_stepfun_openai_does_not_load_langchain() -> None:
    result = run_python(
        """
        import sys
        import stepfun_openai, stepfun_openai.tools
        assert "langchain_core" not in sys.modules, "langchain_core was imported"
        assert "stepfun_openai.langchain" not in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


def test_without_the_extra_the_error_names_it() -> None:
    result = run_python(
        """
        import sys
        class NoLangChain:
            def find_spec(self, name, path=None, target=None):
                if name == "langchain_core" or name.startswith("langchain_core."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, NoLangChain())
        import stepfun_openai.langchain
        """
    )
    assert result.returncode != 0
    assert "pip install 'stepfun-openai[langchain]'" in result.stderr


# --- the tool ----------------------------------------------------------------------------------


def test_tool_describes_itself_with_the_catalog_schema() -> None:
    tool = StepFunImageTool(client=None)

    assert tool.name == "generate_image"
    assert tool.args_schema is ImageToolArgs
    assert tool.response_format == "content_and_artifact"
    properties = tool.tool_call_schema.model_json_schema()["properties"]  # type: ignore[union-attr]
    assert {"prompt", "model", "size", "seed", "steps", "cfg_scale", "source_image", "style_reference"} <= set(
        properties
    )


def test_bind_tools_strict_differs_from_strict_mode_only_by_null_defaults() -> None:
    # LangChain keeps pydantic's "default": null in strict mode; api.openai.com accepts it, Azure
    # OpenAI does not (README: agent tool section). Everything else about the schema is strict-mode clean.
    parameters = convert_to_openai_tool(StepFunImageTool(client=None), strict=True)["function"]["parameters"]
    null_defaults = [name for name, prop in parameters["properties"].items() if prop.pop("default", 0) is None]

    assert strict_mode_violations(parameters) == []
    assert sorted(null_defaults) == sorted(set(parameters["properties"]) - {"prompt"})


def test_invoked_with_a_tool_call_it_returns_text_for_the_model_and_the_image_as_artifact(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    tool = StepFunImageTool(client=stepfun_client, output_dir=tmp_path)

    message = tool.invoke(call({"prompt": "a lighthouse at dusk", "size": "1360x768", "seed": 99}))

    assert isinstance(message, ToolMessage)
    assert message.tool_call_id == "call_1" and message.status == "success"
    (saved,) = tmp_path.iterdir()
    assert message.content == (
        f"Generated a 768x1360 (width x height) image with step-image-edit-2 (seed 99). Saved to {saved}."
    )
    image = message.artifact
    assert isinstance(image, StepFunImage) and image.seed == 99
    assert image.b64_json is not None and image.b64_json not in str(message.content)
    assert last_request(stepfun_emulator)["fields"]["response_format"] == "b64_json"


def test_without_output_dir_the_model_gets_the_url(stepfun_client: StepFun, stepfun_emulator: Emulator) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = tool.invoke(call({"prompt": "a lighthouse"}))

    assert isinstance(message.artifact, StepFunImage)
    assert message.artifact.url is not None and message.artifact.url in message.content
    assert last_request(stepfun_emulator)["fields"]["response_format"] == "url"


def test_default_model_option(stepfun_client: StepFun, stepfun_emulator: Emulator) -> None:
    tool = StepFunImageTool(client=stepfun_client, default_model="step-2x-large")

    message = tool.invoke(call({"prompt": "a lighthouse", "size": "1280x800"}))

    assert "with step-2x-large" in message.content
    assert last_request(stepfun_emulator)["fields"]["model"] == "step-2x-large"


def test_an_unknown_default_model_fails_when_building_the_tool() -> None:
    with pytest.raises((StepFunValidationError, ValidationError), match="default_model"):
        StepFunImageTool(client=None, default_model="dall-e-3")


async def test_arun_uses_the_async_client(
    async_stepfun_client: AsyncStepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    class SyncClientMustNotBeUsed:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError("the async path used the sync client")

    tool = StepFunImageTool(client=SyncClientMustNotBeUsed(), async_client=async_stepfun_client, output_dir=tmp_path)

    message = await tool.ainvoke(call({"prompt": "a lighthouse", "seed": 3}))

    (saved,) = tmp_path.iterdir()
    assert message.content.endswith(f"Saved to {saved}.")
    assert isinstance(message.artifact, StepFunImage) and message.artifact.seed == 3


async def test_with_only_a_sync_client_arun_gets_an_async_twin(
    stepfun_client: StepFun, stepfun_emulator: Emulator
) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = await tool.ainvoke(call({"prompt": "a lighthouse"}))

    assert message.status == "success"
    assert isinstance(tool._async_client(), AsyncStepFun)
    assert str(tool._async_client().base_url) == str(stepfun_client.base_url)


def test_return_image_block_lets_a_multimodal_model_see_the_image(stepfun_client: StepFun, tmp_path: Path) -> None:
    tool = StepFunImageTool(client=stepfun_client, output_dir=tmp_path, return_image_block=True)

    message = tool.invoke(call({"prompt": "a lighthouse"}))

    text, image = message.content
    assert text["type"] == "text" and "Saved to" in text["text"]
    assert image == {"type": "image", "base64": message.artifact.b64_json, "mime_type": "image/png"}


# --- errors the model can act on ----------------------------------------------------------------


def test_a_size_the_model_does_not_take_becomes_an_error_result(stepfun_client: StepFun) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = tool.invoke(call({"prompt": "a fox", "model": "step-2x-large", "size": "768x1360"}))

    assert message.status == "error"
    assert message.content.startswith("Invalid argument size='768x1360' for model 'step-2x-large'")
    assert "1280x800" in message.content
    assert message.artifact is None


def test_a_schema_violation_names_the_argument(stepfun_client: StepFun) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = tool.invoke(call({"prompt": "a fox", "steps": "many", "colour": "red"}))

    assert message.status == "error"
    assert "steps='many'" in message.content
    assert "unknown argument 'colour'" in message.content


def test_handle_validation_error_false_raises(stepfun_client: StepFun) -> None:
    tool = StepFunImageTool(client=stepfun_client, handle_validation_error=False)

    with pytest.raises(StepFunValidationError):
        tool.invoke(call({"prompt": "a fox", "steps": 500}))
    with pytest.raises(ValidationError):
        tool.invoke(call({"prompt": "a fox", "size": "3x3"}))


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        pytest.param("Bad arguments, try again.", "Bad arguments, try again.", id="string"),
        pytest.param(lambda exc: f"custom: {type(exc).__name__}", None, id="callable"),
    ],
)
async def test_a_custom_handle_validation_error_covers_catalog_errors_too(
    stepfun_client: StepFun, stepfun_emulator: Emulator, handler: Any, expected: str | None
) -> None:
    tool = StepFunImageTool(client=stepfun_client, handle_validation_error=handler)
    before = len(stepfun_emulator.requests())

    schema_error = tool.invoke(call({"prompt": "a fox", "size": "3x3"}))  # pydantic: not a size at all
    catalog_error = tool.invoke(call({"prompt": "a fox", "steps": 900}))  # the catalog: out of range
    async_error = await tool.ainvoke(call({"prompt": "a fox", "steps": 900}))

    assert schema_error.status == catalog_error.status == async_error.status == "error"
    assert schema_error.content == (expected or "custom: ValidationError")
    assert catalog_error.content == async_error.content == (expected or "custom: StepFunValidationError")
    assert len(stepfun_emulator.requests()) == before, "nothing was sent"


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "false"])
def test_text_mode_takes_only_real_booleans(stepfun_client: StepFun, stepfun_emulator: Emulator, value: Any) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = tool.invoke(call({"prompt": "a sign saying hello", "text_mode": value}))

    assert message.status == "error" and "text_mode" in message.content
    assert stepfun_emulator.requests() == []
    assert tool.invoke(call({"prompt": "a sign saying hello", "text_mode": True})).status == "success"
    assert stepfun_emulator.requests()[-1]["fields"]["text_mode"] is True


def test_the_retired_model_is_offered_only_for_style_reference_and_says_so() -> None:
    properties = ImageToolArgs.model_json_schema()["properties"]
    models = properties["model"]["anyOf"][0]["enum"]
    assert "step-1x-medium" in models, "kept: the only model with style_reference"
    assert "step-1x-medium: retired" in properties["model"]["description"]
    assert "step-1x-medium (retired)" in properties["style_reference"]["description"]
    assert "step-1x-medium (retired)" in properties["source_image"]["description"]


@pytest.mark.stepfun_emulator(block_words=["forbidden"])
def test_a_moderation_block_becomes_an_explanation(stepfun_client: StepFun) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = tool.invoke(call({"prompt": "something forbidden"}))

    assert message.status == "error"
    assert "moderation blocked" in message.content and "rephrase" in message.content


@pytest.mark.stepfun_emulator(filter_words=["smudge"])
async def test_a_filtered_image_becomes_an_explanation(async_stepfun_client: AsyncStepFun, tmp_path: Path) -> None:
    tool = StepFunImageTool(async_client=async_stepfun_client, output_dir=tmp_path)

    message = await tool.ainvoke(call({"prompt": "a smudge"}))

    assert message.status == "error" and "content_filtered" in message.content
    assert list(tmp_path.iterdir()) == []


# --- an agent step ----------------------------------------------------------------------------


def test_agent_step_with_a_fake_chat_model(stepfun_client: StepFun, tmp_path: Path) -> None:
    tool = StepFunImageTool(client=stepfun_client, output_dir=tmp_path)
    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(content="", tool_calls=[call({"prompt": "a fox", "size": "1024x1024"}, "call_a")]),
                AIMessage(content="", tool_calls=[call({"prompt": "a fox", "size": "1280x800"}, "call_b")]),
                AIMessage(content="Here is your fox."),
            ]
        )
    )
    tools = {tool.name: tool}
    messages: list[BaseMessage] = [HumanMessage("Draw me a fox")]

    for _ in range(3):
        reply = model.invoke(messages)
        messages.append(reply)
        if not isinstance(reply, AIMessage) or not reply.tool_calls:
            break
        for tool_call in reply.tool_calls:
            messages.append(tools[tool_call["name"]].invoke(tool_call))

    first, second = (m for m in messages if isinstance(m, ToolMessage))
    # 1280x800 is not a step-image-edit-2 size: the model is told which sizes are, and the loop goes on.
    assert first.tool_call_id == "call_a" and first.status == "success"
    assert isinstance(first.artifact, StepFunImage) and "Saved to" in first.content
    assert second.tool_call_id == "call_b" and second.status == "error"
    assert "1024x1024, 768x1360, 896x1184, 1360x768, 1184x896" in second.content
    assert messages[-1].content == "Here is your fox."
    # What the chat model sees: no base64 anywhere in the conversation.
    b64 = first.artifact.b64_json
    assert b64 is not None and all(b64[:200] not in str(m.content) for m in messages)
    assert len(list(tmp_path.iterdir())) == 1


# --- local files and hostile calls (the rules of stepfun_openai.tools, through LangChain) ----------


def test_local_files_are_read_only_inside_input_dirs(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    allowed = tmp_path / "uploads"
    allowed.mkdir()
    (allowed / "cat.png").write_bytes(tiny_png(32, 32))
    (tmp_path / "secret.png").write_bytes(tiny_png(32, 32))
    default = StepFunImageTool(client=stepfun_client)
    tool = StepFunImageTool(client=stepfun_client, input_dirs=str(allowed))  # one directory, or a list

    refused = default.invoke(call({"prompt": "a cat", "source_image": str(allowed / "cat.png")}))
    outside = tool.invoke(call({"prompt": "a cat", "source_image": f"{allowed}/../secret.png"}))
    assert stepfun_emulator.requests() == []
    accepted = tool.invoke(call({"prompt": "a cat", "source_image": str(allowed / "cat.png")}))

    assert refused.status == "error" and "this tool may not read local files" in refused.content
    assert outside.status == "error" and f"inside {allowed}" in outside.content and "outside them" in outside.content
    assert accepted.status == "success" and accepted.content.startswith("Transformed the source image")
    assert tool.input_dirs == (allowed.resolve(),)
    assert last_request(stepfun_emulator)["endpoint"] == "image2image"


def test_input_dirs_that_do_not_exist_fail_when_building_the_tool(tmp_path: Path) -> None:
    with pytest.raises((StepFunValidationError, ValidationError), match="input_dirs"):
        StepFunImageTool(client=None, input_dirs=[tmp_path / "missing"])


def test_the_old_local_files_option_says_what_replaced_it() -> None:
    with pytest.raises(ValidationError, match="local_files was replaced by input_dirs"):
        StepFunImageTool(client=None, local_files=True)


def test_a_plain_string_input_is_the_prompt(stepfun_client: StepFun, stepfun_emulator: Emulator) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    content = tool.invoke("a lighthouse at dusk")

    assert content.startswith("Generated a 1024x1024")
    assert last_request(stepfun_emulator)["fields"]["prompt"] == "a lighthouse at dusk"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param('{"prompt": "a fox"', "this is not valid JSON", id="json-text"),
        pytest.param(None, "prompt is required", id="null"),
        pytest.param(5, "not a JSON number", id="number"),
        pytest.param({"prompt": "x", "seed": 10**5000}, "seed=<an integer of about 5001 digits>", id="huge-int"),
        pytest.param({"prompt": "x", "extra": _deep_list(5000)}, "unknown argument 'extra'", id="deep"),
        pytest.param({"prompt": "\ud800"}, "not valid Unicode", id="surrogate"),
        pytest.param({"prompt": "x", "cfg_scale": float("nan")}, "cfg_scale=nan: Input should be a finite", id="nan"),
    ],
)
async def test_tool_calls_langchain_itself_cannot_run_become_error_messages(
    stepfun_client: StepFun, stepfun_emulator: Emulator, args: Any, expected: str
) -> None:
    tool = StepFunImageTool(client=stepfun_client)

    message = tool.invoke(call(args))
    async_message = await tool.ainvoke(call(args))

    assert isinstance(message, ToolMessage) and message.status == "error", message
    assert expected in message.content and message.content == async_message.content
    assert message.tool_call_id == "call_1"
    assert stepfun_emulator.requests() == []


def test_the_api_key_never_appears_in_the_tool_message() -> None:
    key = "sk-langchain-test-key-0123456789"
    recorder = Recorder(lambda request: error_response(400, f"bad size for {request.headers['authorization']}", "x"))
    client = StepFun(
        api_key=key, base_url="http://127.0.0.1:9/v1", http_client=httpx2.Client(transport=recorder.transport)
    )
    tool = StepFunImageTool(client=client.with_options(validate=False, max_retries=0))

    message = tool.invoke(call({"prompt": "a fox", "model": "step-2x-large", "size": "768x1360"}))

    assert len(recorder.requests) == 1
    assert message.status == "error" and message.content.startswith("StepFun rejected the request: bad size")
    assert key not in message.content and "REDACTED" in message.content


@pytest.mark.filterwarnings("ignore:StepFun retired:DeprecationWarning")
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(args=json_arguments | text_arguments, validate=st.booleans())
@example(args=KNOWN_BREAKERS[0], validate=False)
@example(args=KNOWN_BREAKERS[2], validate=False)
@example(args=KNOWN_BREAKERS[-1], validate=False)
def test_any_tool_call_gives_a_tool_message_never_an_exception(args: Any, validate: bool) -> None:
    recorder = Recorder()
    tool = StepFunImageTool(client=make_client(recorder, validate=validate))

    message = tool.invoke(call(args))

    assert isinstance(message, ToolMessage) and message.status in ("success", "error")
    assert isinstance(message.content, str)
    message.content.encode("utf-8")
    assert (message.status == "success") == (message.artifact is not None)
    assert API_KEY not in message.content
