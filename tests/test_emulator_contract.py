"""Every row of the contract, both ways, table-driven over the catalog: a valid value is accepted,
an invalid one gets 400 ``input_invalid`` with ``Request param: <name> is invalid, ...``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from stepfun_openai import catalog
from stepfun_openai.emulator import Emulator

from ._emulator_helpers import b64, data_url, error_of, image, make_png, png_of, post

SOURCE = make_png(32, 32, (10, 120, 200))
SIZE_MESSAGE = (
    "Request param: size is invalid, recommended val is: must be 256x256,512x512,768x768,1024x1024,1280x800,800x1280"
)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


class Case(NamedTuple):
    model: str
    endpoint: str
    changes: dict[str, Any]
    error: tuple[str, str | None] | None
    """``None``: accepted; else (param, hint), hint ``None`` meaning "any hint"."""

    def label(self) -> str:
        shown = {
            k: (v if not isinstance(v, str) or len(v) < 20 else f"<{len(v)} chars>") for k, v in self.changes.items()
        }
        return f"{self.model}-{self.endpoint}-{shown}-{'ok' if self.error is None else 'rejected'}"


def _smallest(sizes: tuple[str, ...]) -> str:
    def area(size: str) -> int:
        w, h = catalog.parse_size(size) or (0, 0)
        return w * h

    return min(sizes, key=area)


def _base(model: str, endpoint: str, spec: catalog.EndpointSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "prompt": "a lighthouse", "response_format": "b64_json"}
    if spec.sizes:
        body["size"] = _smallest(spec.sizes)
    if spec.requires_source:
        body.update(source_url=data_url(SOURCE), source_weight=0.5)
    return body


def _range_cases(name: str, rng: catalog.NumberRange) -> Iterator[tuple[dict[str, Any], tuple[str, str] | None]]:
    hint = f"must be {rng.describe()}"
    low, high = (int(rng.min), int(rng.max)) if rng.integer else (rng.min, rng.max)
    yield {name: low}, None
    yield {name: high}, None
    yield {name: low - 1}, (name, hint)
    yield {name: high + 1}, (name, hint)
    if rng.integer:
        yield {name: low + 0.5}, (name, hint)
    yield {name: "5"}, (name, hint)


def json_cases() -> Iterator[Case]:
    for model, model_spec in catalog.MODELS.items():
        for endpoint, spec in model_spec.endpoints.items():
            if endpoint == "edits":
                continue
            rows: list[tuple[dict[str, Any], tuple[str, str | None] | None]] = []
            assert spec.sizes
            rows += [({"size": size}, None) for size in spec.sizes]
            rows.append(({"size": "2000x2000"}, ("size", "must be " + ",".join(spec.sizes))))
            rows += list(_range_cases("steps", spec.steps))
            rows += list(_range_cases("cfg_scale", spec.cfg_scale))
            rows += list(_range_cases("seed", catalog.SEED))
            prompt_hint = f"a non-empty string of at most {spec.prompt_max} characters"
            rows += [
                ({"prompt": "p" * spec.prompt_max}, None),
                ({"prompt": "p" * (spec.prompt_max + 1)}, ("prompt", prompt_hint)),
                ({"prompt": None}, ("prompt", prompt_hint)),
                ({"n": 1}, None),
                ({"n": 2}, ("n", "must be 1")),
                ({"response_format": "url"}, None),
                ({"response_format": "png"}, ("response_format", "must be url,b64_json")),
                ({"model": "step-9x-huge"}, ("model", "must be " + ",".join(catalog.models_for(endpoint)))),
            ]
            if spec.negative_prompt_max:
                limit = spec.negative_prompt_max
                rows.append(({"negative_prompt": "n" * limit, "cfg_scale": 5}, None))
                rows.append(({"negative_prompt": "n" * (limit + 1)}, ("negative_prompt", None)))
            else:
                rows.append(({"negative_prompt": "blurry"}, ("negative_prompt", None)))
            if spec.text_mode:
                rows += [({"text_mode": True}, None), ({"text_mode": "yes"}, ("text_mode", "must be true or false"))]
            else:
                rows.append(({"text_mode": True}, ("text_mode", None)))
            style_hint = f"must be {catalog.STYLE_WEIGHT.describe()}"
            if spec.style_reference:
                rows += [
                    ({"style_reference": {"source_url": data_url(SOURCE), "weight": 2}}, None),
                    ({"style_reference": {"image": b64(SOURCE)}}, None),
                    ({"style_reference": {"image": b64(SOURCE), "weight": 0}}, ("style_reference.weight", style_hint)),
                    (
                        {"style_reference": {"image": b64(SOURCE), "weight": 2.5}},
                        ("style_reference.weight", style_hint),
                    ),
                    ({"style_reference": {"weight": 1}}, ("style_reference.source_url", None)),
                ]
            else:
                rows.append(({"style_reference": {"source_url": data_url(SOURCE)}}, ("style_reference", None)))
            weight_hint = f"must be {catalog.SOURCE_WEIGHT.describe()}"
            limits = spec.image_limits or catalog.SOURCE_LIMITS
            too_wide = make_png(limits.max_width + 1, 4)
            if spec.requires_source:
                rows += [
                    ({"source_weight": 1}, None),
                    ({"source_weight": 0}, ("source_weight", weight_hint)),
                    ({"source_weight": 1.01}, ("source_weight", weight_hint)),
                    ({"source_url": b64(SOURCE)}, None),
                    ({"source_url": None}, ("source_url", None)),
                    ({"source_weight": None}, ("source_weight", None)),
                    ({"source_url": data_url(too_wide)}, ("source_url", limits.describe())),
                    ({"source_url": "data:image/png;base64,@@@"}, ("source_url", None)),
                    ({"source_url": b64(b"GIF89a" + bytes(20))}, ("source_url", limits.describe())),
                ]
            elif spec.source_image:
                rows += [
                    ({"source_image": b64(SOURCE), "source_weight": 0.3}, None),
                    ({"source_image": b64(SOURCE), "source_weight": 0}, ("source_weight", weight_hint)),
                    ({"source_image": b64(SOURCE)}, ("source_weight", None)),
                    ({"source_weight": 0.3}, ("source_weight", None)),
                    ({"source_image": b64(too_wide), "source_weight": 0.3}, ("source_image", limits.describe())),
                ]
            else:
                rows.append(({"source_image": b64(SOURCE), "source_weight": 0.3}, ("source_image", None)))
            for changes, error in rows:
                yield Case(model, endpoint, changes, error)


def _check(response: Any, error: tuple[str, str | None] | None) -> None:
    if error is None:
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["finish_reason"] == "success"
        return
    status, type_, message = error_of(response)
    name, hint = error
    assert (status, type_) == (400, "input_invalid"), message
    prefix = f"Request param: {name} is invalid, recommended val is: "
    assert message.startswith(prefix), message
    if hint is not None:
        assert message == prefix + hint


@pytest.mark.parametrize("case", list(json_cases()), ids=Case.label)
def test_json_endpoint_rows(emu: Emulator, case: Case) -> None:
    spec = catalog.MODELS[case.model].endpoints[case.endpoint]  # type: ignore[index]
    body = {**_base(case.model, case.endpoint, spec), **case.changes}
    body = {k: v for k, v in body.items() if v is not None}
    _check(post(emu, f"/v1/images/{case.endpoint}", json=body), case.error)


def test_the_documented_size_message_verbatim(emu: Emulator) -> None:
    body = {"model": "step-1x-medium", "prompt": "测试图片", "size": "2000x2000"}
    assert error_of(post(emu, "/v1/images/generations", json=body)) == (400, "input_invalid", SIZE_MESSAGE)


@pytest.mark.parametrize(
    ("model", "size"),
    [(m, s) for m in catalog.models_for("generations") for s in catalog.MODELS[m].endpoints["generations"].sizes or ()],
)
def test_generated_png_has_the_requested_pixels(emu: Emulator, model: str, size: str) -> None:
    spec = catalog.MODELS[model].endpoints["generations"]
    body = {"model": model, "prompt": "p", "size": size, "response_format": "b64_json", "seed": 1}
    png = png_of(post(emu, "/v1/images/generations", json=body))
    # step-image-edit-2 writes HEIGHTxWIDTH, the others WIDTHxHEIGHT
    assert image(png).size == catalog.pixel_size(size, spec.size_order)
    if spec.size_order == "HxW":
        assert image(png).size == tuple(reversed(catalog.parse_size(size) or ()))


# --- /images/edits (multipart) ---------------------------------------------------------------------------------


def edit_cases() -> Iterator[Case]:
    for model in catalog.models_for("edits"):
        spec = catalog.MODELS[model].endpoints["edits"]
        limits = spec.image_limits
        assert limits is not None
        rows: list[tuple[dict[str, Any], tuple[str, str | None] | None]] = []
        # "5" is a valid form value (fields arrive as strings), so the JSON-only type row is left out
        for name, rng in (("steps", spec.steps), ("cfg_scale", spec.cfg_scale)):
            rows += [(data, err) for data, err in _range_cases(name, rng) if "5" not in data.values()]
        prompt_hint = f"a non-empty string of at most {spec.prompt_max} characters"
        rows += [
            ({"prompt": "p" * spec.prompt_max}, None),
            ({"prompt": "p" * (spec.prompt_max + 1)}, ("prompt", prompt_hint)),
            ({"prompt": None}, ("prompt", prompt_hint)),
            ({"seed": "42"}, None),
            ({"seed": "-1"}, ("seed", None)),
            ({"n": "2"}, ("n", "must be 1")),
            ({"text_mode": "false"}, None),
            ({"text_mode": "maybe"}, ("text_mode", "must be true or false")),
            ({"image": None}, ("image", None)),
            ({"image": make_png(limits.max_width + 1, 8)}, ("image", limits.describe())),
            ({"image": b"not an image at all"}, ("image", limits.describe())),
        ]
        if spec.sizes:
            rows += [({"size": size}, None) for size in spec.sizes]
            rows.append(({"size": "2000x2000"}, ("size", "must be " + ",".join(spec.sizes))))
        else:
            rows.append(({"size": "2000x2000"}, None))  # ignored: output = input
        if spec.negative_prompt_max:
            rows.append(({"negative_prompt": "n" * (spec.negative_prompt_max + 1)}, ("negative_prompt", None)))
        else:
            rows.append(({"negative_prompt": "blurry"}, ("negative_prompt", None)))
        if limits.min_side > 1:
            side = limits.min_side
            rows.append(({"image": make_png(side, side)}, None))
            rows.append(({"image": make_png(side - 1, side - 1)}, ("image", limits.describe())))
        if limits.max_aspect:
            long = int(limits.max_aspect * 64)
            rows.append(({"image": make_png(long, 64)}, None))
            rows.append(({"image": make_png(long + 8, 64)}, ("image", limits.describe())))
        for changes, error in rows:
            yield Case(model, "edits", changes, error)


def _edit(emu: Emulator, model: str, changes: dict[str, Any]) -> Any:
    fields: dict[str, Any] = {"model": model, "prompt": "make it blue", "response_format": "b64_json", **changes}
    picture = fields.pop("image", make_png(96, 96))
    files = {"image": ("in.png", picture, "image/png")} if picture is not None else None
    data = {k: str(v) for k, v in fields.items() if v is not None}
    return post(emu, "/v1/images/edits", data=data, files=files)


@pytest.mark.parametrize("case", list(edit_cases()), ids=Case.label)
def test_edit_rows(emu: Emulator, case: Case) -> None:
    _check(_edit(emu, case.model, case.changes), case.error)


def test_edit2_output_size_is_the_input_size(emu: Emulator) -> None:
    png = png_of(_edit(emu, "step-image-edit-2", {"image": make_png(300, 200), "size": "1024x1024"}))
    assert image(png).size == (300, 200)


@pytest.mark.parametrize("size", catalog.EDIT1X_SIZES)
def test_step_1x_edit_square_input_gets_the_size_and_other_inputs_keep_their_aspect(emu: Emulator, size: str) -> None:
    side = (catalog.parse_size(size) or (0, 0))[0]
    assert image(png_of(_edit(emu, "step-1x-edit", {"image": make_png(100, 100), "size": size}))).size == (side, side)
    width, height = image(png_of(_edit(emu, "step-1x-edit", {"image": make_png(200, 100), "size": size}))).size
    assert abs(width / height - 2) < 0.05
    assert abs(width * height / side**2 - 1) < 0.05


def test_edit_accepts_a_base64_image_field(emu: Emulator) -> None:
    data = {"model": "step-image-edit-2", "prompt": "p", "image": b64(make_png(40, 30)), "response_format": "b64_json"}
    assert image(png_of(post(emu, "/v1/images/edits", data=data))).size == (40, 30)


def test_step_plan_serves_the_same_parameters(emu: Emulator) -> None:
    body = {"model": "step-2x-large", "prompt": "p", "size": "256x256"}
    assert post(emu, "/step_plan/v1/images/generations", json=body).status_code == 200
    assert error_of(post(emu, "/step_plan/v1/images/generations", json={**body, "size": "1x1"}))[2] == SIZE_MESSAGE
    edit = post(
        emu,
        "/step_plan/v1/images/edits",
        data={"model": "step-image-edit-2", "prompt": "p"},
        files={"image": ("a.png", make_png(64, 64), "image/png")},
    )
    assert edit.status_code == 200
