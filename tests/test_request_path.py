"""The one request path: each call is prepared once (encoded, merged, validated, seeded) and the
sync and async methods share that one definition."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import pytest

from stepfun_openai import AsyncStepFun, StepFun, _inputs, _validation
from stepfun_openai._images import ENDPOINT_FUNCTIONS, AsyncImages, Images
from stepfun_openai._requests import CALL_OPTIONS, PARAMETERS, ClientSettings, prepare

from .conftest import tiny_png


def test_each_endpoint_is_defined_once_for_the_sync_and_the_async_client() -> None:
    for name, endpoint in (("generate", "generations"), ("image2image", "image2image"), ("edit", "edits")):
        sync, async_ = getattr(Images, name), getattr(AsyncImages, name)
        assert sync.__wrapped__ is async_.__wrapped__ is ENDPOINT_FUNCTIONS[endpoint]  # type: ignore[attr-defined]
        assert inspect.iscoroutinefunction(async_) and not inspect.iscoroutinefunction(sync)
        # help() and IDEs see the real parameters and the response type, not *args/**kwargs
        parameters = inspect.signature(sync).parameters
        assert set(parameters) - {"self"} == PARAMETERS[endpoint] | CALL_OPTIONS  # type: ignore[index]
        assert inspect.signature(async_).return_annotation == "StepFunImagesResponse"
        assert sync.__doc__ and "Args:" in sync.__doc__


def test_validation_reads_what_encoding_learned_instead_of_inspecting_the_image_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(tiny_png(512, 512))
    inspected: list[str] = []
    original = _validation.inspect_image_string

    def counting(text: str, *, param: str) -> Any:
        inspected.append(param)
        return original(text, param=param)

    monkeypatch.setattr(_validation, "inspect_image_string", counting)
    settings = ClientSettings(stable_seed=False)
    arguments = {"model": "step-2x-large", "prompt": "a cat", "source_url": source, "source_weight": 0.5}
    request = prepare("image2image", arguments, settings)
    assert inspected == []
    assert request.body["source_url"].info.width == 512  # encoded once, as inline pieces
    # A source given as a string inside extra_body was not encoded by us: validation inspects it.
    with_extra = {**arguments, "extra_body": {"source_url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUg"}}
    with pytest.raises(_validation.StepFunValidationError):
        prepare("image2image", with_extra, settings)
    assert inspected == ["source_url"]


def test_a_local_source_is_read_and_encoded_once_per_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stepfun_client: StepFun
) -> None:
    source = tmp_path / "cat.png"
    source.write_bytes(tiny_png(512, 512))
    calls: list[str] = []
    original = _inputs.encode_inline

    def counting(value: Any, **kwargs: Any) -> Any:
        calls.append(kwargs["param"])
        return original(value, **kwargs)

    monkeypatch.setattr("stepfun_openai._requests.encode_inline", counting)
    response = stepfun_client.images.image2image(
        model="step-2x-large", prompt="a cat", source_url=source, source_weight=0.5, size="256x256"
    )
    assert response.images[0].seed is not None
    assert calls == ["source_url"]


def test_unknown_arguments_to_prepare_name_the_endpoint() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*for generations: colour"):
        prepare("generations", {"model": "step-2x-large", "prompt": "x", "colour": "red"}, ClientSettings())


def test_the_retired_model_warning_points_at_the_callers_line(
    stepfun_client: StepFun, async_stepfun_client: AsyncStepFun
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stepfun_client.images.generate(model="step-1x-medium", prompt="a cat", size="256x256")
    (warning,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert warning.filename == __file__


async def test_the_retired_model_warning_points_at_the_callers_line_async(async_stepfun_client: AsyncStepFun) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await async_stepfun_client.images.generate(model="step-1x-medium", prompt="a cat", size="256x256")
    (warning,) = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert warning.filename == __file__


def test_an_answer_is_validated_by_pydantic_core_and_an_odd_one_constructed_as_the_sdk_would(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK builds the response through ``StepFunImagesResponse.build`` (its ModelBuilderProtocol):
    a well-formed answer is validated in strict mode (fast), an odd one constructed as before, so the
    response checks still name what is wrong."""
    import httpx2
    from openai._models import construct_type

    from stepfun_openai import MalformedResponseError
    from stepfun_openai.types import StepFunImagesResponse

    from ._mock import Recorder, ok_body

    built: list[str] = []
    original = StepFunImagesResponse.model_validate

    def counting(data: Any, **kwargs: Any) -> Any:
        built.append("validated" if kwargs.get("strict") else "other")
        return original(data, **kwargs)

    monkeypatch.setattr(StepFunImagesResponse, "model_validate", counting)
    recorder = Recorder()
    client = StepFun(
        api_key="k", base_url="http://stepfun.test/v1", http_client=httpx2.Client(transport=recorder.transport)
    )
    response = client.images.generate(model="step-image-edit-2", prompt="a cat", response_format="b64_json")
    assert built == ["validated"]
    assert response.data is not None and response.data[0].seed == 42 and response.trace_id == "t-1"
    assert response.data[0].read()[:8] == b"\x89PNG\r\n\x1a\n"

    # Not strictly valid (a seed as a word): constructed, then refused by name, as before.
    odd = ok_body(seed="seven")
    assert isinstance(StepFunImagesResponse.build(response=None, data=odd).data[0].seed, str)  # type: ignore[index]
    assert StepFunImagesResponse.build(response=None, data=odd) == construct_type(
        type_=StepFunImagesResponse, value=odd
    )
    recorder.answer = lambda request: httpx2.Response(200, json=odd)
    with pytest.raises(MalformedResponseError, match=r"data\[0\]\.seed is not an integer"):
        client.with_options(max_retries=0).images.generate(model="step-image-edit-2", prompt="a cat")
