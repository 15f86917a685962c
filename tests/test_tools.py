"""The image tool for OpenAI-style function calling: the schema a model sees, and run_tool_call."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageToolCall
from openai.types.chat.chat_completion_message_function_tool_call import Function

from stepfun_openai import StepFun, StepFunValidationError, catalog
from stepfun_openai.emulator import Emulator
from stepfun_openai.tools import (
    IMAGE_TOOL_NAME,
    arun_tool_call,
    image_tool_schema,
    run_image_tool,
    run_tool_call,
)
from tests._mock import tiny_png

# --- OpenAI strict mode ---------------------------------------------------------------------------
# Structured Outputs accepts a subset of JSON Schema: the root is an object; every object lists
# all its properties in `required` and sets `additionalProperties: false`; optional values are a
# union with null; `default` and the validation keywords below are rejected (by Azure OpenAI and
# fine-tuned models even where api.openai.com tolerates some of them).

_STRICT_KEYWORDS = {
    "type",
    "description",
    "title",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
}
_STRICT_TYPES = {"string", "number", "integer", "boolean", "object", "array", "null"}


def strict_mode_violations(schema: dict[str, Any]) -> list[str]:
    """Every place where ``schema`` breaks OpenAI's strict-mode rules, as ``path: problem``."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("$: the root must be an object (not anyOf)")

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            problems.append(f"{path}: a schema must be an object, got {node!r}")
            return
        for key in node:
            if key not in _STRICT_KEYWORDS:
                problems.append(f"{path}: keyword {key!r} is not supported in strict mode")
        types = node.get("type")
        for kind in types if isinstance(types, list) else [types] if types else []:
            if kind not in _STRICT_TYPES:
                problems.append(f"{path}: type {kind!r}")
        if "type" not in node and not ({"anyOf", "$ref", "enum", "const"} & node.keys()):
            problems.append(f"{path}: no type")
        if types == "object" or "properties" in node:
            properties = node.get("properties", {})
            if node.get("additionalProperties") is not False:
                problems.append(f"{path}: additionalProperties must be false")
            if sorted(node.get("required", [])) != sorted(properties):
                problems.append(f"{path}: required must list every property")
            for name, child in properties.items():
                walk(child, f"{path}.{name}")
        if "enum" in node:
            kinds = {type(value) for value in node["enum"]}
            if types == "string" and kinds != {str}:
                problems.append(f"{path}: a string enum holds non-strings")
        if "items" in node:
            walk(node["items"], f"{path}[]")
        for index, variant in enumerate(node.get("anyOf", [])):
            walk(variant, f"{path}|{index}")
        for name, child in node.get("$defs", {}).items():
            walk(child, f"$defs.{name}")

    walk(schema, "$")
    return problems


def test_the_strict_mode_checker_catches_what_openai_rejects() -> None:
    loose = {
        "type": "object",
        "properties": {"a": {"type": "integer", "default": 3, "minimum": 1}, "b": {"type": "string"}},
        "required": ["a"],
    }
    problems = strict_mode_violations(loose)

    assert "$: additionalProperties must be false" in problems
    assert "$: required must list every property" in problems
    assert "$.a: keyword 'default' is not supported in strict mode" in problems
    assert "$.a: keyword 'minimum' is not supported in strict mode" in problems


def test_tool_schema_is_valid_in_strict_mode() -> None:
    tool = image_tool_schema()

    assert tool["type"] == "function"
    function = tool["function"]
    assert function["name"] == IMAGE_TOOL_NAME
    assert function["strict"] is True
    assert "image" in function["description"]
    assert strict_mode_violations(function["parameters"]) == []
    json.dumps(tool)  # sendable as is


def test_optional_arguments_are_nullable_and_only_prompt_must_be_a_value() -> None:
    properties = image_tool_schema()["function"]["parameters"]["properties"]

    assert properties["prompt"]["type"] == "string"
    nullable = [name for name, prop in properties.items() if {"type": "null"} in prop.get("anyOf", [])]
    assert sorted(nullable) == sorted(set(properties) - {"prompt"})


def test_tool_schema_enums_and_descriptions_come_from_the_catalog() -> None:
    properties = image_tool_schema()["function"]["parameters"]["properties"]
    models = properties["model"]["anyOf"][0]["enum"]
    sizes = properties["size"]["anyOf"][0]["enum"]

    assert set(models) == set(catalog.models_for("generations")) | set(catalog.models_for("image2image"))
    for name in models:
        for endpoint in ("generations", "image2image"):
            spec = catalog.MODELS[name].spec(endpoint)
            if spec is not None and spec.sizes:
                assert set(spec.sizes) <= set(sizes)
    assert "HEIGHTxWIDTH" in properties["size"]["description"]  # step-image-edit-2's quirk is spelled out
    assert "default 8" in properties["steps"]["description"]
    assert "(0, 1]" in properties["source_weight"]["description"]


def test_responses_api_shape_is_flat() -> None:
    tool = image_tool_schema(api="responses", name="draw")

    assert tool["type"] == "function"
    assert tool["name"] == "draw"
    assert strict_mode_violations(tool["parameters"]) == []


# --- running tool calls ---------------------------------------------------------------------------


def last_request(emulator: Emulator) -> dict[str, Any]:
    """The emulator's log entry of the last request it answered."""
    return emulator.requests()[-1]


def strict_arguments(**given: Any) -> str:
    """Arguments as a strict-mode model writes them: every property present, null when unused."""
    properties = image_tool_schema()["function"]["parameters"]["properties"]
    return json.dumps({name: given.get(name) for name in properties})


def tool_call(arguments: str, name: str = IMAGE_TOOL_NAME) -> ChatCompletionMessageToolCall:
    return ChatCompletionMessageToolCall(
        id="call_1", type="function", function=Function(name=name, arguments=arguments)
    )


def test_round_trip_from_schema_to_a_saved_image(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    call = tool_call(strict_arguments(prompt="a red fox in the snow", size="768x1360", seed=1234))

    content = run_tool_call(stepfun_client, call, output_dir=tmp_path / "out")

    saved = list((tmp_path / "out").iterdir())
    assert len(saved) == 1 and saved[0].read_bytes().startswith(b"\x89PNG")
    assert str(saved[0]) in content
    assert "seed 1234" in content and "step-image-edit-2" in content
    assert "1360x768 (width x height)" in content  # step-image-edit-2 sizes are HEIGHTxWIDTH
    sent = last_request(stepfun_emulator)["fields"]
    assert sent["response_format"] == "b64_json"  # saved images never depend on an expiring URL
    assert sent["size"] == "768x1360" and sent["seed"] == 1234
    assert "model" in sent and "negative_prompt" not in sent  # nulls are not sent


def test_without_output_dir_the_model_gets_the_url(stepfun_client: StepFun, stepfun_emulator: Emulator) -> None:
    content = run_tool_call(
        stepfun_client,
        {"id": "call_1", "type": "function", "function": {"name": IMAGE_TOOL_NAME, "arguments": '{"prompt": "a fox"}'}},
    )

    assert last_request(stepfun_emulator)["fields"]["response_format"] == "url"
    url = content.split("URL (valid for about an hour, download it to keep it): ")[1]
    assert stepfun_emulator.download(url).startswith(b"\x89PNG")
    assert "1024x1024 (width x height)" in content


def test_a_source_image_turns_the_call_into_image2image(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(tiny_png(64, 64))

    content = run_tool_call(
        stepfun_client,
        tool_call(strict_arguments(prompt="the same cat as a watercolour", source_image=str(source))),
        input_dirs=[tmp_path],
    )

    request = last_request(stepfun_emulator)
    assert request["endpoint"] == "image2image"
    assert request["fields"]["model"] == "step-2x-large"  # the default model has no image2image
    assert request["fields"]["source_weight"] == 0.5
    assert content.startswith("Transformed the source image")


def test_a_size_the_model_does_not_take_comes_back_as_a_fixable_result(
    stepfun_client: StepFun, stepfun_emulator: Emulator
) -> None:
    content = run_tool_call(
        stepfun_client, tool_call(strict_arguments(prompt="a fox", model="step-2x-large", size="768x1360"))
    )

    assert content.startswith("Invalid argument size='768x1360' for model 'step-2x-large'")
    assert "256x256, 512x512, 768x768, 1024x1024, 1280x800, 800x1280" in content
    assert "call generate_image again" in content
    assert stepfun_emulator.requests() == []  # nothing was sent


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"prompt": "a fox", "steps": 80}', "Invalid argument steps=80 for model 'step-image-edit-2'"),
        ('{"prompt": "a fox", "colour": "red"}', "unknown argument 'colour' (the arguments are: prompt, model"),
        ('{"size": "1024x1024"}', "prompt is required"),
        ('{"prompt": "a fox", "size": "999x999"}', "size='999x999': not a known size; use one of 1024x1024"),
        ('{"prompt": "a fox"', "The arguments were not valid: expected a JSON object"),
        ('{"prompt": "a fox", "source_weight": 0.3}', "source_weight=0.3. Allowed: only together with source_image"),
        ('{"prompt": "a fox", "source_image": "cat.png"}', "Invalid argument source_image='cat.png'"),
        ('{"prompt": "a fox", "cfg_scale": NaN}', "cfg_scale=nan: Input should be a finite number"),
        ('{"prompt": "a fox", "steps": true}', "steps=True: a number, not true or false"),
    ],
)
def test_bad_arguments_say_what_to_fix(stepfun_client: StepFun, arguments: str, expected: str) -> None:
    content = run_tool_call(stepfun_client, tool_call(arguments))

    assert expected in content
    assert "Nothing was generated" in content


def test_validation_errors_can_raise_instead(stepfun_client: StepFun) -> None:
    with pytest.raises(StepFunValidationError) as caught:
        run_tool_call(stepfun_client, tool_call('{"prompt": "a fox", "steps": 80}'), handle_validation_error=False)

    assert caught.value.param == "steps"


def test_local_files_are_refused_unless_their_directory_is_allowed(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(tiny_png(64, 64))

    content = run_tool_call(stepfun_client, tool_call(json.dumps({"prompt": "a cat", "source_image": str(source)})))

    assert content.startswith(f"Invalid argument source_image={str(source)!r}. Allowed: an http(s) URL or a data: URL")
    assert "this tool may not read local files" in content
    assert stepfun_emulator.requests() == []


def test_input_dirs_must_exist(stepfun_client: StepFun, tmp_path: Path) -> None:
    with pytest.raises(StepFunValidationError, match="input_dirs"):
        run_tool_call(stepfun_client, tool_call('{"prompt": "x"}'), input_dirs=[tmp_path / "missing"])


@pytest.mark.stepfun_emulator(block_words=["forbidden"])
def test_a_moderation_block_is_explained_not_raised(stepfun_client: StepFun) -> None:
    result = run_image_tool(stepfun_client, {"prompt": "a forbidden thing"})

    assert result.error == "content_blocked"
    assert "blocked" in result.content and "rephrase" in result.content
    assert result.image is None


@pytest.mark.stepfun_emulator(filter_words=["smudge"])
def test_a_content_filtered_image_is_explained_and_not_saved(stepfun_client: StepFun, tmp_path: Path) -> None:
    result = run_image_tool(stepfun_client, {"prompt": "a smudge"}, output_dir=tmp_path)

    assert result.error == "content_filtered"
    assert "content_filtered" in result.content and "not saved" in result.content
    assert list(tmp_path.iterdir()) == []


def test_other_tool_shapes_are_accepted(stepfun_client: StepFun) -> None:
    responses_item = {"type": "function_call", "call_id": "c1", "name": IMAGE_TOOL_NAME, "arguments": '{"prompt": "x"}'}
    langchain_call = {"name": IMAGE_TOOL_NAME, "args": {"prompt": "x"}, "id": "c2", "type": "tool_call"}

    assert run_tool_call(stepfun_client, responses_item).startswith("Generated")
    assert run_tool_call(stepfun_client, langchain_call).startswith("Generated")


def test_a_call_for_another_tool_is_a_programming_error(stepfun_client: StepFun) -> None:
    with pytest.raises(ValueError, match="'get_weather', not 'generate_image'"):
        run_tool_call(stepfun_client, tool_call("{}", name="get_weather"))


def test_an_unknown_default_model_is_rejected_up_front(stepfun_client: StepFun) -> None:
    with pytest.raises(StepFunValidationError, match="default_model"):
        run_tool_call(stepfun_client, tool_call('{"prompt": "x"}'), default_model="dall-e-3")


async def test_async_tool_call(async_stepfun_client: Any, stepfun_emulator: Emulator, tmp_path: Path) -> None:
    content = await arun_tool_call(
        async_stepfun_client, tool_call(strict_arguments(prompt="a fox", seed=7)), output_dir=tmp_path
    )

    (saved,) = tmp_path.iterdir()
    assert f"Saved to {saved}" in content and "seed 7" in content
    assert last_request(stepfun_emulator)["fields"]["seed"] == 7


def test_saving_twice_into_one_folder_keeps_both_images_and_no_partial_file(
    stepfun_client: StepFun, tmp_path: Path
) -> None:
    # The same prompt and seed: the same file name is wanted twice; the second never replaces the first.
    call = tool_call(strict_arguments(prompt="a fox", seed=5))
    first = run_tool_call(stepfun_client, call, output_dir=tmp_path)
    second = run_tool_call(stepfun_client, call, output_dir=tmp_path)

    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and not any(name.startswith(".") for name in names)
    assert all(f"Saved to {tmp_path / name}." in first + second for name in names)


def test_without_local_validation_stepfuns_own_400_is_explained(stepfun_emulator: Emulator) -> None:
    client = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url, validate=False)

    content = run_tool_call(client, tool_call('{"prompt": "a fox", "model": "step-2x-large", "size": "768x1360"}'))

    assert content.startswith("StepFun rejected the request: Request param: size is invalid")
    assert "Fix the argument" in content


def test_style_reference_goes_to_the_model_that_has_it(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    style = tmp_path / "style.png"
    style.write_bytes(tiny_png(32, 32))
    arguments = {"prompt": "a fox", "model": "step-1x-medium", "style_reference": str(style), "style_weight": 0.8}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # step-1x-medium is retired (warned once a process)
        content = run_tool_call(stepfun_client, tool_call(json.dumps(arguments)), input_dirs=tmp_path)

    sent = last_request(stepfun_emulator)["fields"]["style_reference"]
    assert sent["weight"] == 0.8
    assert content.startswith("Generated") and "step-1x-medium" in content


@pytest.mark.parametrize("argument", ['"negative_prompt": "blur"', '"text_mode": false'])
def test_text_to_image_only_arguments_with_a_source_image_say_so(stepfun_client: StepFun, argument: str) -> None:
    arguments = f'{{"prompt": "a fox", "source_image": "https://example.com/cat.png", {argument}}}'

    content = run_tool_call(stepfun_client, tool_call(arguments))

    assert f"Invalid argument {argument.split(':')[0].strip(chr(34))}=" in content
    assert "Allowed: null together with source_image" in content


# --- one tool per endpoint (the MCP server's three image tools) ---------------------------------


def test_each_endpoint_tool_takes_its_subset_with_its_models_from_the_catalog() -> None:
    from stepfun_openai._tool_args import ImageToolArgs, endpoint_tool_args

    for endpoint, required in (
        ("generations", ["prompt"]),
        ("image2image", ["prompt", "source_image"]),
        ("edits", ["prompt", "image"]),
    ):
        model = endpoint_tool_args(endpoint)
        schema = model.model_json_schema()
        assert schema["required"] == required
        assert schema["properties"]["model"]["anyOf"][0]["enum"] == catalog.models_for(endpoint)
        shared = set(model.model_fields) - {"image"}
        assert shared <= set(ImageToolArgs.model_fields)  # a subset, not a second argument model
        for name in shared - {"model", "size", "steps", "cfg_scale", "source_image"}:
            assert model.model_fields[name].description == ImageToolArgs.model_fields[name].description
    assert "source_weight" not in endpoint_tool_args("edits").model_fields
    assert "style_reference" not in endpoint_tool_args("image2image").model_fields


def test_the_edit_tool_sends_an_edit_and_refuses_what_an_edit_model_lacks(
    stepfun_client: StepFun, stepfun_emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "cat.png").write_bytes(tiny_png(96, 64))
    image = str(tmp_path / "in" / "cat.png")
    options = {"output_dir": tmp_path / "out", "input_dirs": tmp_path / "in", "endpoint": "edits", "tool_name": "edit"}

    result = run_image_tool(stepfun_client, {"prompt": "make it blue", "image": image, "seed": 8}, **options)

    assert result.ok and result.model == "step-image-edit-2" and result.path is not None
    assert result.content.startswith("Edited the image into a 96x64 (width x height) image")
    assert last_request(stepfun_emulator)["path"].endswith("/images/edits")
    wrong = {"prompt": "x", "image": image, "model": "step-1x-edit", "negative_prompt": "blur"}
    refused = run_image_tool(stepfun_client, wrong, **options)
    assert refused.error == "invalid_arguments"
    assert "negative_prompt='blur' for model 'step-1x-edit'" in refused.content
    unknown = run_image_tool(stepfun_client, {"prompt": "x", "image": image, "source_weight": 0.3}, **options)
    assert "unknown argument 'source_weight'" in unknown.content and "prompt, image, model" in unknown.content
