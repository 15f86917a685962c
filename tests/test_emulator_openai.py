"""Plain ``openai.OpenAI`` against the emulator, the seed guide's notebook cell by cell, and the
pytest plugin's fixtures."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from PIL import Image

from stepfun_openai.emulator import Emulator, read_png_metadata

from ._emulator_helpers import make_png

SIZE_MESSAGE = (
    "Request param: size is invalid, recommended val is: must be 256x256,512x512,768x768,1024x1024,1280x800,800x1280"
)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=emu.base_url, max_retries=0) as plain:
        yield plain


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_openai_generate_b64_and_url(client: openai.OpenAI) -> None:
    response = client.images.generate(
        model="step-2x-large", prompt="a red fox", size="256x256", response_format="b64_json", extra_body={"seed": 12}
    )
    png = base64.b64decode(response.data[0].b64_json or "")
    assert _size(png) == (256, 256)
    assert response.created > 0
    assert response.data[0].model_extra == {"finish_reason": "success", "seed": 12}

    by_url = client.images.generate(model="step-image-edit-2", prompt="a red fox", size="768x1360")
    assert _size(requests.get(by_url.data[0].url or "", timeout=10).content) == (1360, 768)


def test_openai_edit_multipart(client: openai.OpenAI) -> None:
    response = client.images.edit(
        model="step-image-edit-2",
        image=("photo.png", make_png(200, 120), "image/png"),
        prompt="make it night",
        response_format="b64_json",
        extra_body={"steps": 4, "text_mode": True},
    )
    png = base64.b64decode(response.data[0].b64_json or "")
    assert _size(png) == (200, 120)
    received = read_png_metadata(png)["received"]  # type: ignore[index]
    assert received["steps"] == "4" and received["prompt"] == "make it night"


def test_openai_errors_carry_the_contract_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="step-2x-large", prompt="p", size="2000x2000")
    assert SIZE_MESSAGE in str(caught.value)
    assert caught.value.response.headers["X-Trace-Id"]
    with Emulator(api_key="sk-only") as strict, pytest.raises(openai.AuthenticationError) as denied:
        with openai.OpenAI(api_key="sk-wrong", base_url=strict.base_url, max_retries=0) as wrong:
            wrong.images.generate(model="step-2x-large", prompt="p", size="256x256")
    assert "Incorrect API key provided" in str(denied.value)


def test_openai_image2image_via_the_generic_post(client: openai.OpenAI) -> None:
    source = base64.b64encode(make_png(64, 64)).decode()
    body = {"model": "step-2x-large", "prompt": "p", "source_url": source, "source_weight": 0.5, "size": "256x256"}
    response: Any = client.post("/images/image2image", body=body, cast_to=openai.types.ImagesResponse)
    assert response.data[0].url.startswith("http://127.0.0.1:")


# --- the seed guide (seeds/text2image-guide-notebook.md), cell by cell --------------------------------------------


class TestSeedGuide:
    """Each cell as the notebook wrote it; only BASE_URL points at the emulator."""

    STEPFUN_MODEL = "step-1x-medium"

    @pytest.fixture(autouse=True)
    def _cell_2(self, emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        os.makedirs("media")
        self.client = openai.OpenAI(api_key="sk-guide", base_url=emu.base_url)

    def image_to_base64(self, image_path_or_url: str) -> str:
        if image_path_or_url.startswith("http"):
            image_data = requests.get(image_path_or_url, timeout=10).content
        else:
            with open(image_path_or_url, "rb") as f:
                image_data = f.read()
        return base64.b64encode(image_data).decode("utf-8")

    def generate_image_base64(self, prompt: str, seed: int = 11879934) -> Any:
        response = self.client.images.generate(
            model=self.STEPFUN_MODEL,
            prompt=prompt,
            response_format="b64_json",
            extra_body={"cfg_scale": 7.5, "seed": seed, "steps": 50},
            size="1024x1024",
            n=1,
        )
        return response.data

    def test_3_1_url(self) -> None:
        response = self.client.images.generate(
            model=self.STEPFUN_MODEL,
            prompt="采菊东篱下，悠然见南山。—— 田园风格，水墨质感，淡雅色调",
            response_format="url",
            extra_body={"cfg_scale": 7.5, "seed": 0, "steps": 50},
            size="1024x1024",
            n=1,
        )
        url = response.data[0].url or ""
        assert "/image_gen/" in url and "X-Tos-Expires=3600" in url
        assert _size(requests.get(url, timeout=10).content) == (1024, 1024)

    def test_3_2_b64_and_4_2_source_image(self) -> None:
        for idx, img in enumerate(self.generate_image_base64("一只猫在树枝上晒太阳，阳光透过树叶，卡通风格")):
            with open(f"./media/05_cat_{idx + 1}.png", "wb") as f:
                f.write(base64.b64decode(img.b64_json))
        source_image_b64 = self.image_to_base64("./media/05_cat_1.png")
        response = self.client.images.generate(
            model=self.STEPFUN_MODEL,
            prompt="一只猫在树枝上晒太阳，阳光透过树叶，卡通风格，猫旁边有一片花瓣",
            response_format="url",
            size="1024x1024",
            extra_body={
                "cfg_scale": 7.5,
                "seed": 11879934,
                "steps": 50,
                "source_image": source_image_b64,
                "source_weight": 0.3,
            },
        )
        png = requests.get(response.data[0].url or "", timeout=10).content
        assert read_png_metadata(png)["resolved"]["source_weight"] == 0.3  # type: ignore[index]

    def test_5_style_reference(self) -> None:
        Image.new("RGB", (64, 64), (30, 60, 200)).save("your_style_image.png")
        response = self.client.images.generate(
            model=self.STEPFUN_MODEL,
            prompt="a boat in the canals of venice",
            response_format="url",
            size="1024x1024",
            extra_body={
                "cfg_scale": 7.5,
                "steps": 50,
                "style_reference": {"image": self.image_to_base64("your_style_image.png"), "weight": 1.0},
            },
        )
        assert response.data[0].url

    def test_6_1_portrait_800x1280(self) -> None:
        response = self.client.images.generate(
            model=self.STEPFUN_MODEL,
            prompt="山间瀑布，飞流直下，古风插画",
            response_format="url",
            size="800x1280",
            extra_body={"steps": 50, "cfg_scale": 7.5},
        )
        assert _size(requests.get(response.data[0].url or "", timeout=10).content) == (800, 1280)

    def test_6_2_fast_small(self) -> None:
        response = self.client.images.generate(
            model=self.STEPFUN_MODEL,
            prompt="一只可爱的柯基犬，坐姿，简单背景",
            response_format="url",
            size="512x512",
            extra_body={"steps": 30, "cfg_scale": 7.0},
        )
        assert _size(requests.get(response.data[0].url or "", timeout=10).content) == (512, 512)

    def test_6_3_fixed_seed(self) -> None:
        fixed_seed = 123456
        first = self.generate_image_base64("春日樱花树下的长椅，日系漫画风格", seed=fixed_seed)[0]
        again = self.generate_image_base64("春日樱花树下的长椅，日系漫画风格", seed=fixed_seed)[0]
        other = self.generate_image_base64("秋日枫叶树下的长椅，日系漫画风格", seed=fixed_seed)[0]
        assert first.model_extra["seed"] == other.model_extra["seed"] == fixed_seed
        assert first.b64_json == again.b64_json != other.b64_json

    def test_7_error_handling(self) -> None:
        def generate_image_safe(prompt: str, size: str = "1024x1024") -> dict[str, Any]:
            try:
                response = self.client.images.generate(
                    model=self.STEPFUN_MODEL,
                    prompt=prompt,
                    response_format="url",
                    size=size,  # type: ignore[arg-type]
                    extra_body={"steps": 50, "cfg_scale": 7.5},
                )
                return {"success": True, "data": response.data}
            except Exception as e:
                return {"success": False, "error": str(e)}

        assert generate_image_safe("蓝天白云，草原骏马")["success"]
        result = generate_image_safe("测试图片", size="2000x2000")
        assert not result["success"]
        assert "Error code: 400" in result["error"] and SIZE_MESSAGE in result["error"]


# --- the pytest plugin ---------------------------------------------------------------------------------------------


def test_plugin_emulator_is_reset_between_tests(stepfun_emulator: Emulator) -> None:
    assert stepfun_emulator.stats()["requests"] == 0
    with openai.OpenAI(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url) as plain:
        plain.images.generate(model="step-2x-large", prompt="p", size="256x256")
    assert stepfun_emulator.stats()["by_path"] == {"/v1/images/generations": 1}


def test_plugin_emulator_is_reset_between_tests_again(stepfun_emulator: Emulator) -> None:
    assert stepfun_emulator.stats()["requests"] == 0


@pytest.mark.stepfun_emulator(tier="V0", api_key="sk-marked")
def test_plugin_marker_gives_a_configured_emulator(stepfun_emulator: Emulator) -> None:
    assert stepfun_emulator.api_key == "sk-marked"
    assert stepfun_emulator.config.limits() == (5, 10)


def test_plugin_client_fixture(stepfun_client: Any, stepfun_emulator: Emulator) -> None:
    result = stepfun_client.images.generate(model="step-2x-large", prompt="p", size="256x256", seed=3)
    assert result.data[0].seed == 3
    assert stepfun_emulator.requests()[-1]["seed"] == 3


async def test_plugin_async_client_fixture(async_stepfun_client: Any) -> None:
    result = await async_stepfun_client.images.generate(model="step-2x-large", prompt="p", size="256x256", seed=4)
    assert result.data[0].seed == 4
