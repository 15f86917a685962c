"""Sizes by aspect ratio (each model's own order), n > 1 as n requests, undocumented-host warnings."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from decimal import Decimal

import pytest

from stepfun_openai import (
    AsyncStepFun,
    Cost,
    InsufficientBalanceError,
    PartialImagesError,
    StepFun,
    StepFunValidationError,
    catalog,
)
from stepfun_openai._requests import ClientSettings, prepare
from stepfun_openai.emulator import Emulator

KEY = "sk-sizes-test"
Factory = Callable[..., Emulator]


@pytest.mark.parametrize(
    ("model", "aspect", "size", "pixels"),
    [
        ("step-2x-large", "16:9", "1280x800", (1280, 800)),
        ("step-2x-large", "9:16", "800x1280", (800, 1280)),
        ("step-2x-large", "square", "1024x1024", (1024, 1024)),
        ("step-2x-large", "portrait", "800x1280", (800, 1280)),
        # step-image-edit-2 writes HEIGHTxWIDTH: 16:9 is "768x1360" and comes out landscape.
        ("step-image-edit-2", "16:9", "768x1360", (1360, 768)),
        ("step-image-edit-2", "9:16", "1360x768", (768, 1360)),
        ("step-image-edit-2", "4:3", "896x1184", (1184, 896)),
        ("step-image-edit-2", "3:4", "1184x896", (896, 1184)),
        ("step-image-edit-2", "landscape", "768x1360", (1360, 768)),
        ("step-image-edit-2", "1:1", "1024x1024", (1024, 1024)),
    ],
)
def test_an_aspect_becomes_the_models_own_size_in_its_own_order(
    model: str, aspect: str, size: str, pixels: tuple[int, int], stepfun_emulator: Emulator
) -> None:
    assert catalog.resolve_size(model, "generations", aspect) == size
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    response = client.images.generate(prompt="a fox", model=model, size=aspect, response_format="b64_json")
    image = response.images[0]
    assert stepfun_emulator.requests()[-1]["fields"]["size"] == size  # the resolved size on the wire
    assert image._context["size"] == size  # and in the provenance
    assert image.to_pil().size == pixels


def test_an_aspect_that_cannot_apply_names_what_the_model_offers() -> None:
    settings = ClientSettings()
    with pytest.raises(StepFunValidationError, match="no size choice") as caught:
        prepare("edits", {"prompt": "x", "model": "step-image-edit-2", "image": b"\x89PNG", "size": "16:9"}, settings)
    assert caught.value.param == "size"
    with pytest.raises(StepFunValidationError, match="needs a model"):
        prepare("generations", {"prompt": "x", "model": "my-model", "size": "16:9"}, settings)
    # Even with validation off: "16:9" is never a size StepFun accepts.
    off = ClientSettings(validate=False)
    body = prepare("generations", {"prompt": "x", "model": "step-2x-large", "size": "landscape"}, off).body
    assert body["size"] == "1280x800"


def test_n_images_are_n_requests_with_consecutive_seeds_and_a_total_cost(stepfun_emulator: Emulator) -> None:
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url, region="mainland")
    response = client.images.generate(prompt="a fox", model="step-image-edit-2", n=3, seed=41)
    assert [image.seed for image in response.images] == [41, 42, 43]
    assert response.cost == Cost(Decimal("0.06"), "CNY", images=3)
    sent = stepfun_emulator.requests()
    assert len(sent) == 3 and all("n" not in entry["fields"] for entry in sent)
    # Without a seed, each request still gets its own (stable across retries) seed.
    again = asyncio.run(
        AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url).images.generate(
            prompt="a fox", model="step-image-edit-2", n=2
        )
    )
    seeds = [image.seed for image in again.images]
    assert len(set(seeds)) == 2 and all(seeds)


def test_a_partial_failure_keeps_the_images_that_succeeded(stepfun_emulator_factory: Factory) -> None:
    emu = stepfun_emulator_factory(balance="0.05")  # two step-image-edit-2 images, not three
    client = StepFun(api_key=KEY, base_url=emu.base_url, region="mainland")
    with pytest.raises(PartialImagesError) as caught:
        client.images.generate(prompt="a fox", model="step-image-edit-2", n=3, seed=7)
    partial = caught.value
    assert len(partial.response.images) == 2 and partial.response.cost.amount == Decimal("0.04")
    ((_, error),) = partial.errors
    assert isinstance(error, InsufficientBalanceError)
    # All failed: the error itself.
    with pytest.raises(InsufficientBalanceError):
        client.images.generate(prompt="a fox", model="step-image-edit-2", n=2)


def test_fan_out_off_refuses_n_before_sending(stepfun_emulator: Emulator) -> None:
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url, fan_out=False)
    assert client.to_async().fan_out is False
    with pytest.raises(StepFunValidationError) as caught:
        client.images.generate(prompt="a fox", model="step-image-edit-2", n=2)
    assert caught.value.param == "n"
    # StepFun itself refuses n != 1: the way to n images is fanning out, never validate=False.
    assert "fan_out=True" in str(caught.value) and "validate=False" not in str(caught.value)
    with pytest.raises(StepFunValidationError, match=r"1\.\.10"):
        StepFun(api_key=KEY, base_url=stepfun_emulator.base_url).images.generate(
            prompt="a fox", model="step-image-edit-2", n=11
        )
    assert stepfun_emulator.stats()["requests"] == 0


def test_an_undocumented_model_for_the_host_warns_once_and_is_still_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    from stepfun_openai import _validation

    monkeypatch.setattr(_validation, "_warned_hosts", set())
    settings = ClientSettings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            prepare(
                "generations",
                {"prompt": "x", "model": "step-2x-large"},
                settings,
                base_url=catalog.INTERNATIONAL_BASE_URL,
            )
        prepare(
            "generations", {"prompt": "x", "model": "step-image-edit-2"}, settings, base_url=catalog.STEP_PLAN_BASE_URL
        )
        prepare("generations", {"prompt": "x", "model": "step-2x-large"}, settings, base_url=catalog.DEFAULT_BASE_URL)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "step-2x-large on generations" in messages[0] and "international" in messages[0]
    assert caught[0].filename == __file__  # points at the caller's line


def test_the_agent_tool_takes_an_aspect_and_gets_the_models_own_size(stepfun_emulator: Emulator) -> None:
    from stepfun_openai.tools import image_tool_schema, run_image_tool

    enum = image_tool_schema()["function"]["parameters"]["properties"]["size"]["anyOf"][0]["enum"]
    assert {"16:9", "portrait"} <= set(enum)
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    result = run_image_tool(client, {"prompt": "a fox", "model": "step-image-edit-2", "size": "16:9"})
    assert result.error is None and result.image is not None
    assert stepfun_emulator.requests()[-1]["fields"]["size"] == "768x1360"


def test_the_per_endpoint_tools_offer_aspects_where_a_model_has_sizes() -> None:
    from stepfun_openai._tool_args import endpoint_tool_args

    def size_enum(endpoint: catalog.Endpoint) -> list[str]:
        schema = endpoint_tool_args(endpoint).model_json_schema()
        return list(schema["properties"]["size"]["anyOf"][0]["enum"])

    assert {"16:9", "landscape"} <= set(size_enum("generations")) and "768x1360" in size_enum("generations")
    assert "16:9" in size_enum("image2image")
    assert endpoint_tool_args("generations")(prompt="a fox", size="9:16").size == "9:16"  # type: ignore[attr-defined]
