"""Writes the notebooks in this directory from the cells below (outputs empty, no execution counts).

    python notebooks/_build.py           # (re)write the .ipynb files
    python notebooks/_build.py --check   # exit 1 if a committed notebook differs from this script

Edit the cells here, not in Jupyter, so that the notebooks in git never carry outputs; the test
suite runs ``--check`` and executes every notebook against the emulator (tests/test_notebooks.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

Cell = tuple[str, str]


def md(text: str) -> Cell:
    return ("markdown", text.strip("\n"))


def code(text: str) -> Cell:
    return ("code", text.strip("\n"))


RUN_AGAINST = """
> **运行环境 / Where it runs.** 客户端从环境变量读取 `STEPFUN_API_KEY` 和 `STEPFUN_BASE_URL`，
> 因此本 Notebook 无需修改即可对接真实 API 或本地模拟器。
> The client reads `STEPFUN_API_KEY` and `STEPFUN_BASE_URL` from the environment, so this notebook
> runs unchanged against the live API or the local emulator:
>
> ```bash
> # 真实 API / live API (mainland key; international: STEPFUN_BASE_URL=https://api.stepfun.ai/v1)
> export STEPFUN_API_KEY=<你的密钥 / your key>
>
> # 本地模拟器，不产生费用 / local emulator, free and offline
> python -m stepfun_openai.emulator --port 8765 --api-key local-key
> export STEPFUN_BASE_URL=http://127.0.0.1:8765/v1 STEPFUN_API_KEY=local-key
> ```
>
> 每个单元格都用 `assert` 检查它展示的结果（图片尺寸、回传的 seed、预期的错误）；CI 会对模拟器执行全部单元格。
> Every cell `assert`s what it shows (image size, the echoed seed, the expected error); CI runs
> every cell against the emulator.
"""

SETUP = code(
    """
from pathlib import Path

from stepfun_openai import StepFun

# 密钥和地址都来自环境变量 / key and base URL come from the environment:
#   STEPFUN_API_KEY   必需 / required (STEP_API_KEY also works; OPENAI_API_KEY is never used)
#   STEPFUN_BASE_URL  可选 / optional, default https://api.stepfun.com/v1
client = StepFun()

# 生成的图片写入 output/（已在 .gitignore 中）/ images go to output/, which git ignores
OUTPUT = Path("output")
OUTPUT.mkdir(exist_ok=True)

print("base URL:", client.base_url)
print(client)  # repr 中不含密钥 / the key never appears in a repr
assert "api_key=<hidden>" in repr(client)
"""
)

# --- 01: the text-to-image guide ---------------------------------------------------------------

GUIDE: list[Cell] = [
    md(
        """
# 阶跃星辰文生图 API 使用指南 · StepFun text-to-image guide

本 Notebook 改写自阶跃星辰官方的《文生图 API 使用指南》，改用 `stepfun-openai`：它就是 OpenAI SDK 的客户端，
但认识 StepFun 的参数（`seed`、`steps`、`cfg_scale`、`source_image`、`style_reference` 等都是普通关键字参数，
不必再塞进 `extra_body`），会在发送前校验参数，并把错误映射成清楚的异常。

This notebook rewrites StepFun's official text-to-image guide for `stepfun-openai`: it *is* the
OpenAI SDK client, but it knows StepFun's parameters (`seed`, `steps`, `cfg_scale`, `source_image`,
`style_reference` are plain keyword arguments, no `extra_body` needed), checks them before sending,
and maps errors to clear exceptions.

内容 / Contents: 客户端配置 client setup · URL 与 Base64 结果 URL and b64 results · 垫图 source image ·
风格参考 style reference · 分辨率 sizes · 速度权衡 speed trade-offs · 固定 seed fixed seeds · 错误处理 error handling.
图生图、图像编辑和批量生成见 `02_image2image_edits_batch.ipynb` / image2image, edits and batches are in
`02_image2image_edits_batch.ipynb`.
"""
    ),
    md(RUN_AGAINST),
    md(
        """
## 1. 环境准备 · Install

`pil` 提供 `to_pil()`，`progress` 提供批量生成的进度条。 / `pil` gives `to_pil()`, `progress` the batch progress bar.
"""
    ),
    code(
        """
# %pip install "stepfun-openai[pil,progress]"
"""
    ),
    md(
        """
## 2. 基础配置 · Client setup

原指南用 `OpenAI(api_key=..., base_url=...)`；这里换成 `StepFun()`，其余用法与 OpenAI SDK 相同。
原指南的模型 `step-1x-medium` 已于 2026-07-08 下线，本文改用 `step-2x-large`。

The guide used `OpenAI(api_key=..., base_url=...)`; `StepFun()` replaces it and everything else
works as in the OpenAI SDK. The guide's model, `step-1x-medium`, was retired on 2026-07-08; this
notebook uses `step-2x-large`.
"""
    ),
    SETUP,
    code(
        """
from stepfun_openai import catalog

MODEL = "step-2x-large"  # 阶跃星辰文生图模型 / StepFun text-to-image model
spec = catalog.MODELS[MODEL].endpoints["generations"]
print("sizes:", spec.sizes)
print("steps:", spec.steps, " cfg_scale:", spec.cfg_scale)
assert "1024x1024" in spec.sizes
"""
    ),
    md(
        """
## 3. 基础文生图调用 · Text to image

两种返回格式：`url`（图片链接，默认）和 `b64_json`（Base64 编码数据）。
Two response formats: `url` (a link, the default) and `b64_json` (the image inline, base64).

### 3.1 返回 URL · URL results

URL 是带签名的临时链接（约 1 小时后失效），需及时下载保存，不能直接长期展示给用户。
The URL is a presigned link that expires (about an hour): download it promptly; don't show it to
users long-term. `image.save()` downloads it (atomically) and `image.expires_at` says until when.
"""
    ),
    code(
        """
response = client.images.generate(
    model=MODEL,
    prompt="采菊东篱下，悠然见南山。—— 田园风格，水墨质感，淡雅色调",
    size="1024x1024",
    steps=50,
    cfg_scale=7.5,
    seed=11879934,
    response_format="url",  # 默认值 / the default
)
image = response.images[0]
print("URL:", image.url[:72] + "…")
print("expires at (UTC):", image.expires_at)
print("seed:", image.seed, "· trace id:", response.trace_id)

assert image.url.startswith(("https://", "http://"))
assert image.seed == 11879934  # 回传请求的 seed / the request's seed, echoed
"""
    ),
    code(
        """
# 立即下载保存 / download and keep it now
path = image.save(OUTPUT / "poem.png")
print("saved:", path, path.stat().st_size, "bytes")
assert image.to_pil().size == (1024, 1024)
image  # Notebook 中直接显示 / shows itself in Jupyter
"""
    ),
    md(
        """
### 3.2 返回 Base64 · Base64 results

图片直接包含在响应中，无需再下载。`save()` 解码并写入文件（原指南用 `base64.b64decode` 手动完成）。
The image comes inside the response, nothing to download. `save()` decodes and writes it (the
guide did this by hand with `base64.b64decode`).
"""
    ),
    code(
        """
response = client.images.generate(
    model=MODEL,
    prompt="一只猫在树枝上晒太阳，阳光透过树叶，卡通风格",
    size="1024x1024",
    steps=50,
    cfg_scale=7.5,
    seed=11879934,
    response_format="b64_json",
)
cat = response.images[0]
cat_path = cat.save(OUTPUT / "cat.png")
print("saved:", cat_path)

assert cat.b64_json and cat.url is None
assert cat.to_pil().size == (1024, 1024)
cat
"""
    ),
    md(
        """
## 4. 高级功能：垫图生成 · Generating from a source image

基于已有图片二次生成，核心参数 `source_weight`：**越小越接近原图**，为 1 时完全重新生成（垫图不起作用）。
Start from an existing image. `source_weight`: **smaller stays closer to the source**; at 1 the
image is regenerated freely (the source is ignored).

| 预期功能 / goal | Prompt | source_weight | 备注 / note |
|---|---|---|---|
| 随机重新生成 / variations | 还原原图描述 / describe the source | 0.8 ～ 1.0 | 保留核心内容 / keeps the content |
| 细节增强 / detail enhancement | 原图描述 + 质量词 (finely detailed) | 0 ～ 0.5 | 提升画质 / sharper, same subject |
| 小范围修改 / small edits | 写明修改内容 / say what changes | 0.3 ～ 0.8 | 大改用图像编辑 / big changes: edits |

`source_image` 接受文件路径、bytes、PIL 图片或 Base64；客户端负责编码（原指南手写了 `image_to_base64`）。
专门的图生图接口 `images.image2image` 见第二个 Notebook。
`source_image` takes a path, bytes, a PIL image or base64; the client encodes it (the guide wrote
`image_to_base64` by hand). The dedicated endpoint, `images.image2image`, is in notebook 02.
"""
    ),
    code(
        """
response = client.images.generate(
    model=MODEL,
    prompt="一只猫在树枝上晒太阳，阳光透过树叶，卡通风格，猫旁边有一片花瓣",
    source_image=cat_path,  # 垫图 / the source image
    source_weight=0.3,  # 细节增强 / detail enhancement
    size="1024x1024",
    steps=50,
    cfg_scale=7.5,
    seed=11879934,
    response_format="b64_json",
)
petal = response.images[0]
assert petal.to_pil().size == (1024, 1024) and petal.seed == 11879934
petal
"""
    ),
    md(
        """
## 5. 高级功能：风格参考 · Style reference (Sref)

文本控制内容、图片控制风格，`weight` 默认 1，建议 0.5～1.5（过大会泄漏参考图的内容）。
只有 `step-1x-medium` 支持 `style_reference`，而该模型已于 2026-07-08 下线：客户端会给出 `DeprecationWarning`，
服务端可能拒绝请求，所以下面的单元格两种结果都接受。

Text sets the content, an image sets the style; `weight` defaults to 1, 0.5–1.5 recommended
(higher leaks the reference's content). Only `step-1x-medium` supports `style_reference`, and it
was retired on 2026-07-08: the client warns (`DeprecationWarning`) and the service may refuse the
request, so the cell below accepts either outcome.
"""
    ),
    code(
        """
import warnings

import openai
from stepfun_openai import StyleReference

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        response = client.images.generate(
            model="step-1x-medium",
            prompt="a boat in the canals of venice",  # 内容描述（中英文均可）/ content, any language
            style_reference=StyleReference(cat_path, weight=1.0),  # 风格参考图 / the style image
            size="512x512",
            seed=11879934,
            response_format="b64_json",
        )
    except openai.APIStatusError as error:  # 模型已下线 / the model is gone
        print("step-1x-medium is no longer served:", error.status_code, error.message)
    else:
        styled = response.images[0]
        assert styled.to_pil().size == (512, 512)
        display(styled)

for warning in caught:  # 每个进程只警告一次 / warned once per process
    print("warning:", warning.message)
assert catalog.MODELS["step-1x-medium"].status == "retired"
"""
    ),
    md(
        """
## 6. 参数优化与配置 · Parameters

### 6.1 分辨率 · Sizes

`step-2x-large`：正方形 256/512/768/1024，长方形 `1280x800`（横屏）和 `800x1280`（竖屏），均为 **宽x高**。
`step-image-edit-2` 的尺寸写作 **高x宽**：`768x1360` 是横屏。分辨率越大生成越慢。

`step-2x-large`: squares 256/512/768/1024, and `1280x800` (landscape) / `800x1280` (portrait),
written **WIDTHxHEIGHT**. `step-image-edit-2` writes **HEIGHTxWIDTH**: `768x1360` is landscape.
Larger images take longer.
"""
    ),
    code(
        """
for model, size in [("step-2x-large", "800x1280"), ("step-2x-large", "1280x800"), ("step-image-edit-2", "768x1360")]:
    response = client.images.generate(
        model=model, prompt="山间瀑布，飞流直下，古风插画", size=size, seed=42, response_format="b64_json"
    )
    order = catalog.MODELS[model].endpoints["generations"].size_order
    expected = catalog.pixel_size(size, order)  # (宽, 高) / (width, height)
    actual = response.images[0].to_pil().size
    print(f"{model:18} size={size:9} ({order}) -> {actual[0]}x{actual[1]} px")
    assert actual == expected

assert catalog.pixel_size("768x1360", "HxW") == (1360, 768)  # 横屏 / landscape
"""
    ),
    md(
        """
### 6.2 速度权衡 · Speed trade-offs

`steps` 越大质量越好、速度越慢；`size` 越小越快、细节越少。`step-image-edit-2` 默认只需 8 步，是最快的选择。
（模拟器默认不模拟生成耗时，可用 `--latency` 模拟；真实 API 下差异明显。）

More `steps` = better and slower; a smaller `size` = faster, less detail. `step-image-edit-2`
needs only 8 steps by default, the fast choice. (The emulator takes no time unless started with
`--latency`; against the live API the differences are real.)
"""
    ),
    code(
        """
import time

prompt = "一只可爱的柯基犬，坐姿，简单背景"
settings = [
    ("step-image-edit-2, 8 steps", dict(model="step-image-edit-2", steps=8, size="1024x1024")),
    ("step-2x-large, 512px, 30 steps", dict(model=MODEL, steps=30, cfg_scale=7.0, size="512x512")),
    ("step-2x-large, 1024px, 50 steps", dict(model=MODEL, steps=50, size="1024x1024")),
]
for label, options in settings:
    started = time.perf_counter()
    response = client.images.generate(prompt=prompt, seed=7, response_format="b64_json", **options)
    seconds = time.perf_counter() - started
    width, height = response.images[0].to_pil().size
    print(f"{label:34} {seconds:6.2f} s  {width}x{height}")
    assert (width, height) == catalog.parse_size(options["size"])
"""
    ),
    md(
        """
### 6.3 固定 seed · Fixed seeds

固定 `seed` 可保持风格一致，适合反复调整 Prompt。不传 `seed` 时客户端会在发送前选好一个随机 seed
（重试时请求的是同一张图），响应中的 `seed` 告诉你用了哪个，以便复现。

A fixed `seed` keeps the style while you iterate on the prompt. Without one, the client picks a
random seed before sending (so a retry asks for the same image); the response's `seed` tells you
which, so you can reproduce it.
"""
    ),
    code(
        """
fixed_seed = 123456
first = client.images.generate(
    model=MODEL, prompt="春日樱花树下的长椅，日系漫画风格", seed=fixed_seed, size="512x512", response_format="b64_json"
).images[0]
second = client.images.generate(
    model=MODEL, prompt="秋日枫叶树下的长椅，日系漫画风格", seed=fixed_seed, size="512x512", response_format="b64_json"
).images[0]
print("seeds:", first.seed, second.seed)
assert first.seed == second.seed == fixed_seed

unseeded = client.images.generate(
    model=MODEL, prompt="春日樱花树下的长椅，日系漫画风格", size="512x512", response_format="b64_json"
).images[0]
print("the seed that was used:", unseeded.seed)
assert isinstance(unseeded.seed, int) and unseeded.seed > 0
"""
    ),
    md(
        """
## 7. 错误处理 · Error handling

| 情况 / case | 异常 / exception | 自动重试 / retried |
|---|---|---|
| 参数不合法（发送前）/ invalid parameter, before sending | `StepFunValidationError` | – |
| 400 `input_invalid` | `openai.BadRequestError` | 否 / no |
| 401 密钥错误 / wrong key | `openai.AuthenticationError` | 否 / no |
| 402 余额不足 / balance | `InsufficientBalanceError` | 否 / no |
| 429 限流 / rate limited | `StepFunRateLimitError` | 是 / yes |
| 451 内容被拦截 / blocked | `ContentBlockedError` | 否 / no |
| 500/502/503/504 | `openai.InternalServerError` | 是 / yes |
| 200 但 `finish_reason="content_filtered"` | `image.content_filtered` is `True` | – |

服务端错误都带 `trace_id`（`X-Trace-Id`），联系 StepFun 支持时请提供。
Server errors carry `trace_id` (`X-Trace-Id`): StepFun support asks for it.
"""
    ),
    code(
        """
import openai
from stepfun_openai import StepFunValidationError


def generate_image_safe(prompt, size="1024x1024", client=client):
    \"\"\"带错误处理的图片生成 / generation that reports errors instead of raising.\"\"\"
    try:
        response = client.images.generate(model=MODEL, prompt=prompt, size=size, seed=1)
        return {"success": True, "data": response.images}
    except StepFunValidationError as error:  # 本地校验，未发送请求 / checked locally, nothing sent
        return {"success": False, "where": "local", "error": str(error)}
    except openai.APIStatusError as error:  # 服务端拒绝 / the server said no
        body = error.body if isinstance(error.body, dict) else {}
        return {
            "success": False,
            "where": error.status_code,
            "type": body.get("type"),  # StepFun 的错误类型 / StepFun's error type
            "error": str(error),
            "trace_id": error.trace_id,
        }


ok = generate_image_safe("蓝天白云，草原骏马")
print("正常请求 / normal request:", "成功 / ok" if ok["success"] else ok)
assert ok["success"]

local = generate_image_safe("测试图片", size="2000x2000")  # 无效分辨率 / invalid size
print("本地校验 / local check:", local["error"])
assert local["where"] == "local" and "size" in local["error"] and "1024x1024" in local["error"]
"""
    ),
    code(
        """
# 关闭本地校验，看服务端的 400 / switch local checks off to see the server's own 400
server = generate_image_safe("测试图片", size="2000x2000", client=client.with_options(validate=False))
print("HTTP", server["where"], server["type"], "·", server["error"][:100], "· trace id:", server["trace_id"])
assert server["where"] == 400 and server["type"] == "input_invalid" and "size" in server["error"]

# 错误的密钥 / a wrong key
wrong = generate_image_safe("测试图片", client=client.with_options(api_key="not-a-valid-key"))
if wrong["success"]:  # 不校验密钥的模拟器（未指定 --api-key）/ an emulator started without --api-key takes any key
    print("this server accepts any key: nothing to show here")
else:
    print("HTTP", wrong["where"], wrong["type"], "·", wrong["error"][:100])
    assert wrong["where"] == 401 and wrong["type"] == "invalid_api_key" and "not-a-valid-key" not in wrong["error"]
"""
    ),
    md(
        """
## 8. 注意事项 · Notes

1. **密钥安全 / key safety**：不要把密钥写进代码或公开仓库，用环境变量加载；客户端的 repr、日志和异常都不会包含密钥。
   Keep keys out of code and repositories; load them from the environment. Reprs, logs and
   exceptions never contain the key.
2. **URL 时效 / URL lifetime**：返回的 URL 约 1 小时后失效（`image.expires_at`），请及时 `save()`。
   Result URLs expire after about an hour (`image.expires_at`): `save()` them promptly.
3. **参数范围 / ranges**：以 `stepfun_openai.catalog` 为准（如 `step-2x-large` 的 `steps` 为 1～50，
   `cfg_scale` 为 1～10），超出范围会在发送前报错。
   The catalog is the reference (e.g. `steps` 1–50 and `cfg_scale` 1–10 for `step-2x-large`);
   out-of-range values fail before sending.
4. **功能边界 / limits**：垫图不适合大幅修改或人脸保持，请使用图像编辑（`images.edit`，见 02）。
   A source image is not for large changes or keeping a face: use edits (`images.edit`, notebook 02).

## 附录：核心参数 · Appendix: parameters

| 参数 / parameter | 作用 / purpose | 取值 / values |
|---|---|---|
| `prompt` | 图片内容描述 / what to draw | ≤ 512 字符 / chars |
| `model` | 生成模型 / model | `step-2x-large`, `step-image-edit-2` |
| `response_format` | 返回格式 / format | `url` / `b64_json` |
| `size` | 分辨率 / size | 见 6.1 / see 6.1 |
| `steps` | 生成步数 / steps | 1～50 |
| `seed` | 随机种子 / seed | 1～2147483647，0 或不传为随机 / 0 or omitted = random |
| `cfg_scale` | Prompt 遵循度 / prompt adherence | 1～10 |
| `source_image`, `source_weight` | 垫图及权重 / source image and weight | (0, 1] |
| `style_reference` | 风格参考 / style reference | `StyleReference(image, weight)`, weight (0, 2] |
"""
    ),
]

# --- 02: image2image, edits, batch -------------------------------------------------------------

I2I: list[Cell] = [
    md(
        """
# 图生图、图像编辑与批量生成 · Image to image, edits and batches

接着 `01_text2image_guide.ipynb`：专门的图生图接口 `images.image2image`、按指令编辑图片的 `images.edit`，
以及带进度条、可断点续跑的批量生成 `stepfun_openai.batch`。

Following `01_text2image_guide.ipynb`: the dedicated image-to-image endpoint
(`images.image2image`), editing by instruction (`images.edit`), and resumable batches with a
progress bar (`stepfun_openai.batch`).
"""
    ),
    md(RUN_AGAINST),
    SETUP,
    md(
        """
## 1. 准备原图 · A source image

先生成一张图作为原图（也可以用任意本地 png/jpeg，≤ 10 MB、≤ 2048x2048）。
First make an image to start from (any local png/jpeg works too, ≤ 10 MB, ≤ 2048x2048).
"""
    ),
    code(
        """
cat = client.images.generate(
    model="step-2x-large",
    prompt="一只猫在树枝上晒太阳，阳光透过树叶，卡通风格",
    size="1024x1024",
    seed=11879934,
    response_format="b64_json",
).images[0]
source = cat.save(OUTPUT / "cat.png")
assert cat.to_pil().size == (1024, 1024)
cat
"""
    ),
    md(
        """
## 2. 图生图 · `images.image2image`

`POST /v1/images/image2image`，模型 `step-2x-large`。`source_url` 可以是公网 URL，也可以是本地文件、bytes 或
PIL 图片（客户端转成 data URL）。`source_weight` 必填，取值 (0, 1]，**越小越接近原图**：
0.8～1.0 随机变体，0～0.5 细节增强，0.3～0.8 小范围修改。

`POST /v1/images/image2image` with `step-2x-large`. `source_url` is a public URL, or a local file,
bytes or a PIL image (the client sends a data URL). `source_weight` is required, in (0, 1],
**smaller stays closer to the source**: 0.8–1.0 variations, 0–0.5 detail enhancement, 0.3–0.8
small edits.
"""
    ),
    code(
        """
variation = client.images.image2image(
    model="step-2x-large",
    prompt="一只猫在树枝上晒太阳，油画风格",
    source_url=source,
    source_weight=0.9,  # 随机变体 / a variation
    seed=2024,
).images[0]
print("URL:", variation.url[:72] + "…", "· seed:", variation.seed)
assert variation.seed == 2024
assert variation.to_pil().size == (1024, 1024)  # 默认尺寸 / the default size
variation
"""
    ),
    code(
        """
portrait = client.images.image2image(
    model="step-2x-large",
    prompt="一只猫在树枝上晒太阳，卡通风格，finely detailed",
    source_url=source,
    source_weight=0.3,  # 细节增强 / detail enhancement
    size="800x1280",  # 宽x高 / WIDTHxHEIGHT
    steps=50,
    cfg_scale=6,
    seed=2024,
    response_format="b64_json",
).images[0]
assert portrait.to_pil().size == (800, 1280)
portrait
"""
    ),
    md(
        """
## 3. 图像编辑 · `images.edit`

`POST /v1/images/edits`（multipart，与 OpenAI 的 `images.edit` 形状相同），模型 `step-image-edit-2`：
用一句话描述修改，**输出尺寸等于输入尺寸**。默认 8 步，速度快。

`POST /v1/images/edits` (multipart, the shape of OpenAI's `images.edit`) with `step-image-edit-2`:
describe the change in a sentence; **the output has the input's size**. 8 steps by default: fast.
"""
    ),
    code(
        """
edited = client.images.edit(
    model="step-image-edit-2",
    image=source,
    prompt="给猫戴上一顶红色的帽子",
    seed=99,
    response_format="b64_json",
).images[0]
path = edited.save(OUTPUT / "cat-hat.png")
print("saved:", path)
assert edited.seed == 99
assert edited.to_pil().size == cat.to_pil().size  # 尺寸不变 / same size as the input
edited
"""
    ),
    code(
        """
# text_mode 改善文字渲染，negative_prompt 需配合 cfg_scale > 1
# text_mode renders text better; negative_prompt only counts with cfg_scale > 1
sign = client.images.edit(
    model="step-image-edit-2",
    image=source,
    prompt="在树枝上挂一块木牌，写着“午睡中”",
    text_mode=True,
    negative_prompt="模糊, 低质量",
    cfg_scale=4.0,
    seed=100,
    response_format="b64_json",
).images[0]
assert sign.to_pil().size == (1024, 1024) and sign.seed == 100
sign
"""
    ),
    md(
        """
## 4. 批量生成 · A small batch

`stepfun_openai.batch` 按账户的限流（并发数和 RPM，见 `catalog.RATE_LIMIT_TIERS`）并发请求，显示进度条，
每张图原子写入 `output/batch/`（文件名 `<prompt>-<任务 id>.png`），每完成一项追加一行 `manifest.jsonl`；
再次运行会跳过已完成的任务（断点续跑），所以第二次 "Run All" 时这个单元格只补做未完成的任务。
Notebook 中已有事件循环，用 `await batch.arun(...)`（脚本中用 `batch.run(...)`）。

`stepfun_openai.batch` runs jobs concurrently within the account's limits (concurrency and RPM,
see `catalog.RATE_LIMIT_TIERS`), shows a progress bar, writes each image atomically into
`output/batch/` (named `<prompt>-<job id>.png`) and appends a line per finished job to
`manifest.jsonl`; running it again skips finished jobs (resume), so on a second "Run All" this
cell only makes what is missing. A notebook already runs an event loop: use `await batch.arun(...)` (`batch.run(...)` in
a script). `STEPFUN_TIER` (default `V0`) names your account's tier.
"""
    ),
    code(
        """
import os

from stepfun_openai import batch, catalog

# 账户档位决定限流（V0 免费档：5 并发、10 RPM）/ the account tier sets the limits (V0, free: 5 concurrent, 10/min)
TIER = os.environ.get("STEPFUN_TIER", "V0")
print("tier:", TIER, catalog.RATE_LIMIT_TIERS[TIER])

prompts = ["春日樱花树下的长椅", "夏日荷塘", "秋日枫叶树下的长椅", "冬日雪中的小屋"]
jobs = [batch.Job.generate(f"{p}，日系漫画风格", seed=100 + i) for i, p in enumerate(prompts)]
jobs.append(batch.Job.edit("给猫围上一条蓝色围巾", image=source, seed=200))

result = await batch.arun(
    jobs,
    out=OUTPUT / "batch",
    defaults={"model": "step-image-edit-2"},
    tier=TIER,
)
print(result.summary())
# 首次运行全部生成；再次运行时已完成的任务被跳过 / a first run makes them all; a rerun skips the finished ones
assert result.ok and result.succeeded == len(jobs) == result.generated + result.skipped
assert len(result.files) == result.generated and all(f.exists() for f in result.files)
"""
    ),
    code(
        """
# 再次运行：全部跳过，不再请求 / run again: everything is skipped, nothing is requested
again = await batch.arun(
    jobs, out=OUTPUT / "batch", defaults={"model": "step-image-edit-2"}, tier=TIER
)
print(again.summary())
assert again.skipped == len(jobs) and again.generated == 0 and again.requests == 0

manifest = (OUTPUT / "batch" / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
print(manifest[0][:160], "…")
assert len(manifest) >= len(jobs)  # 每个完成的任务一行，历次运行累积 / a line per finished job, over every run
"""
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "01_text2image_guide.ipynb": GUIDE,
    "02_image2image_edits_batch.ipynb": I2I,
}


def build(cells: list[Cell], stem: str) -> nbformat.NotebookNode:
    notebook = new_notebook(
        metadata={
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }
    )
    for index, (kind, source) in enumerate(cells):
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell["id"] = f"{stem[:2]}-{index:02d}"  # stable ids: a rebuild changes nothing
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def render(name: str) -> str:
    return nbformat.writes(build(NOTEBOOKS[name], name), version=4) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print("wrote", path)
    if stale:
        print("out of date (run python notebooks/_build.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
