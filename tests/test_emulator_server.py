"""The emulator as a server: auth, routing, body limits, image URLs, rate limits, faults,
moderation, introspection and the command line."""

from __future__ import annotations

import base64
import json
import pathlib
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator

import httpx2
import pytest

from stepfun_openai.cli import build_parser
from stepfun_openai.emulator import FAULT_KINDS, Emulator

from ._emulator_helpers import KEY, FakeClock, b64, data_url, error_of, generate, http, image, make_png, post


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


# --- auth, routing, bodies ---------------------------------------------------------------------------------------


def test_missing_or_empty_key_is_401_with_a_trace_id(emu: Emulator) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"}):
        response = post(emu, "/v1/images/generations", key=None, headers=headers, json={})
        assert error_of(response) == (401, "invalid_api_key", "Incorrect API key provided")
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Trace-Id"])


def test_any_key_is_accepted_unless_one_is_configured(emu: Emulator) -> None:
    assert generate(emu).status_code == 200
    with Emulator(api_key="sk-right") as strict:
        body = {"model": "step-2x-large", "prompt": "p", "size": "256x256"}
        assert post(strict, "/v1/images/generations", key="sk-wrong", json=body).status_code == 401
        assert post(strict, "/v1/images/generations", key="sk-right", json=body).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/step_plan/v1/images/image2image"),  # step_plan has no image2image
        ("POST", "/v2/images/generations"),
    ],
)
def test_unrouted_paths_get_go_style_plain_404(emu: Emulator, method: str, path: str) -> None:
    response = http.request(method, emu.url + path, headers={"Authorization": f"Bearer {KEY}"}, json={})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "404 page not found"
    assert "X-Trace-Id" in response.headers


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405(emu: Emulator, method: str) -> None:
    response = http.request(method, emu.url + "/v1/images/generations", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["error"]["type"] == "method_not_allowed"


def test_body_over_20_mb_is_413_and_a_10_mb_image_in_json_fits(emu: Emulator) -> None:
    big = post(emu, "/v1/images/generations", content=b"x" * (20 * 1024 * 1024 + 1))
    assert big.status_code == 413
    assert big.json()["error"]["type"] == "request_too_large"

    # ~9.7 MB stored without compression (zlib level 0): about 13 MB once base64 sits in the JSON body
    stored = make_png(1800, 1800, level=0)
    assert 9 * 1024 * 1024 < len(stored) <= 10 * 1024 * 1024
    body = {"model": "step-2x-large", "prompt": "p", "source_url": b64(stored), "source_weight": 0.5, "size": "256x256"}
    assert post(emu, "/v1/images/image2image", json=body).status_code == 200


def test_malformed_json_is_400(emu: Emulator) -> None:
    response = post(
        emu,
        "/v1/images/generations",
        content=b'{"model": "step-2x-large", ',
        headers={"Content-Type": "application/json"},
    )
    status, type_, message = error_of(response)
    assert (status, type_) == (400, "input_invalid")
    assert message.startswith("Request param: body is invalid, recommended val is: ")


def test_response_shape_and_headers(emu: Emulator) -> None:
    response = generate(emu, seed=7)
    payload = response.json()
    assert re.fullmatch(r"[0-9a-f]{32}\.[0-9a-f]{32}", payload["id"])
    assert isinstance(payload["created"], int)
    assert payload["data"][0]["seed"] == 7
    assert payload["data"][0]["finish_reason"] == "success"
    assert response.headers["X-Trace-Id"]
    assert response.headers["Content-Length"] == str(len(response.content))


def test_keep_alive_connection_survives_errors(emu: Emulator) -> None:
    with httpx2.Client(base_url=emu.url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        assert client.post("/v1/nope", json={"a": 1}).status_code == 404
        assert client.get("/v1/images/generations").status_code == 405
        assert client.post("/v1/images/generations", json={"model": "x"}).status_code == 400
        ok = client.post("/v1/images/generations", json={"model": "step-2x-large", "prompt": "p", "size": "256x256"})
        assert ok.status_code == 200


# --- sources from URLs ----------------------------------------------------------------------------------------------


def test_url_sources_are_fetched_from_loopback_only(emu: Emulator) -> None:
    url = generate(emu, response_format="url").json()["data"][0]["url"]
    body = {"model": "step-2x-large", "prompt": "p", "size": "256x256", "source_url": url, "source_weight": 0.5}
    assert post(emu, "/v1/images/image2image", json=body).status_code == 200

    body["source_url"] = "https://example.com/sample.jpg"
    status, _, message = error_of(post(emu, "/v1/images/image2image", json=body))
    assert status == 400
    assert message.startswith("Request param: source_url is invalid, recommended val is: ")
    assert "loopback" in message and "no internet" in message


def test_style_reference_and_source_image_take_urls_too(emu: Emulator) -> None:
    url = generate(emu, response_format="url").json()["data"][0]["url"]
    body = {
        "model": "step-1x-medium",
        "prompt": "p",
        "size": "256x256",
        "source_image": url,
        "source_weight": 0.4,
        "style_reference": {"source_url": url, "weight": 1},
    }
    assert post(emu, "/v1/images/generations", json=body).status_code == 200
    body["style_reference"] = {"source_url": "http://10.1.2.3/style.png"}
    assert "style_reference.source_url" in error_of(post(emu, "/v1/images/generations", json=body))[2]


# --- presigned URLs -------------------------------------------------------------------------------------------------


def test_url_format_download_tamper_and_expiry() -> None:
    clock = FakeClock(1_790_000_000.0)  # 2026-09-21T...Z
    with Emulator(clock=clock, url_ttl=600) as emu:
        url = generate(emu, response_format="url").json()["data"][0]["url"]
        parts = urllib.parse.urlsplit(url)
        assert re.fullmatch(r"/image_gen/20260921/[0-9a-f]{32}\.png", parts.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        assert query["X-Tos-Algorithm"] == "TOS4-HMAC-SHA256"
        assert query["X-Tos-Expires"] == "600"
        assert query["X-Tos-SignedHeaders"] == "host"
        assert query["X-Tos-Credential"].endswith("/20260921/cn-shanghai/tos/request")
        assert re.fullmatch(r"20260921T\d{6}Z", query["X-Tos-Date"])

        fetched = http.get(url)
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert image(fetched.content).size == (256, 256)

        forged = url.replace(query["X-Tos-Signature"], "0" * 64)
        assert http.get(forged).status_code == 403
        longer = url.replace("X-Tos-Expires=600", "X-Tos-Expires=99999")
        assert http.get(longer).status_code == 403

        clock.advance(600)
        assert http.get(url).status_code == 200
        clock.advance(1)
        expired = http.get(url)
        assert expired.status_code == 403 and expired.json()["Code"] == "AccessDenied"


def test_default_ttl_is_an_hour(emu: Emulator) -> None:
    assert "X-Tos-Expires=3600&" in generate(emu, response_format="url").json()["data"][0]["url"]


# --- rate limits ----------------------------------------------------------------------------------------------------

BODY = {"model": "step-2x-large", "prompt": "p", "size": "256x256"}


def test_rpm_limit_with_the_documented_message_and_no_retry_after_by_default() -> None:
    clock = FakeClock()
    with Emulator(rpm=2, clock=clock) as emu:
        assert [post(emu, "/v1/images/generations", json=BODY).status_code for _ in range(2)] == [200, 200]
        limited = post(emu, "/v1/images/generations", json=BODY)
        assert error_of(limited) == (
            429,
            "rate_limited",
            "request limited RPM reached, current: 3, limit: 2. Please top up at https://platform.stepfun.com/top-up.",
        )
        assert "Retry-After" not in limited.headers
        clock.advance(59)
        assert post(emu, "/v1/images/generations", json=BODY).status_code == 429
        clock.advance(1.5)
        assert post(emu, "/v1/images/generations", json=BODY).status_code == 200


def test_retry_after_is_sent_when_configured() -> None:
    with Emulator(rpm=1, retry_after=7, clock=FakeClock()) as emu:
        post(emu, "/v1/images/generations", json=BODY)
        assert post(emu, "/v1/images/generations", json=BODY).headers["Retry-After"] == "7"


def test_tier_v0_allows_ten_requests_a_minute() -> None:
    with Emulator(tier="V0", clock=FakeClock()) as emu:
        codes = [post(emu, "/v1/images/generations", json=BODY).status_code for _ in range(11)]
        assert codes == [200] * 10 + [429]
        assert "current: 11, limit: 10" in post(emu, "/v1/images/generations", json=BODY).json()["error"]["message"]


def test_concurrency_limit_binds_while_requests_are_held() -> None:
    with Emulator(concurrency=1, retry_after=2) as emu:
        results: list[int] = []
        with emu.hold():
            worker = threading.Thread(
                target=lambda: results.append(post(emu, "/v1/images/generations", json=BODY).status_code)
            )
            worker.start()
            emu.wait_in_flight(1)
            refused = post(emu, "/v1/images/generations", json=BODY)
            assert error_of(refused) == (
                429,
                "rate_limited",
                "request limited concurrency reached, current: 2, limit: 1. "
                "Please top up at https://platform.stepfun.com/top-up.",
            )
            assert refused.headers["Retry-After"] == "2"
        worker.join()
        assert results == [200]
        assert post(emu, "/v1/images/generations", json=BODY).status_code == 200


def test_latency_holds_requests(emu: Emulator) -> None:
    with Emulator(latency=0.2) as slow:
        with pytest.raises(httpx2.ReadTimeout):
            httpx2.post(
                slow.base_url + "/images/generations", json=BODY, headers={"Authorization": "Bearer k"}, timeout=0.05
            )


# --- faults ---------------------------------------------------------------------------------------------------------

STATUS_EXPECTED = {
    "500": (500, "server_error"),
    "502": (502, "server_error"),
    "503": (503, "server_error"),
    "504": (504, "server_error"),
    "408": (408, "request_timeout"),
    "429": (429, "rate_limited"),
    "429-quota": (429, "quota_exceeded"),
    "402": (402, "insufficient_balance"),
    "451": (451, "censorship_blocked"),
    "error-200": (200, "server_error"),
}


def _faulted(emu: Emulator, kind: str, **kwargs: object) -> httpx2.Response:
    return post(
        emu,
        "/v1/images/generations",
        json={**BODY, "response_format": "b64_json"},
        headers={"X-Emulator-Fault": kind},
        **kwargs,
    )


@pytest.mark.parametrize("kind", sorted(STATUS_EXPECTED))
def test_forced_status_faults(emu: Emulator, kind: str) -> None:
    response = _faulted(emu, kind)
    status, type_, message = error_of(response)
    assert (status, type_) == STATUS_EXPECTED[kind]
    assert response.headers["X-Trace-Id"]
    if kind == "429":
        assert re.search(r"request limited RPM reached, current: \d+, limit: \d+\.", message)
    if kind in ("429-quota", "402"):
        assert "balance" in message
    if kind == "451":
        assert message == "The content you provided or machine outputted is blocked."


def test_forced_html_fault(emu: Emulator) -> None:
    response = _faulted(emu, "html")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "502 Bad Gateway" in response.text


def test_forced_body_faults(emu: Emulator) -> None:
    assert _faulted(emu, "empty-data").json()["data"] == []
    bad = _faulted(emu, "bad-b64")
    assert bad.status_code == 200
    with pytest.raises(ValueError):
        base64.b64decode(bad.json()["data"][0]["b64_json"], validate=True)
    malformed = _faulted(emu, "malformed")
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.content)


def test_forced_reset_drops_the_connection_mid_body(emu: Emulator) -> None:
    with pytest.raises(httpx2.TransportError):
        _faulted(emu, "reset")
    assert generate(emu).status_code == 200


def test_forced_slow_fault_outlasts_the_client_timeout() -> None:
    with Emulator(slow_seconds=30) as emu:
        with pytest.raises(httpx2.ReadTimeout):
            _faulted(emu, "slow", timeout=0.2)
    # stopping the emulator released the held request at once


def test_unknown_forced_fault_is_400(emu: Emulator) -> None:
    status, _, message = error_of(_faulted(emu, "gremlins"))
    assert status == 400 and "X-Emulator-Fault" in message


def test_retry_after_on_503_faults_when_configured() -> None:
    with Emulator(retry_after=3) as emu:
        assert _faulted(emu, "503").headers["Retry-After"] == "3"
        assert "Retry-After" not in _faulted(emu, "500").headers


def test_random_faults_are_reproducible_with_a_seed() -> None:
    spec = "503=0.2,500=0.1,429=0.1,malformed=0.1,empty-data=0.1"

    def run(emu: Emulator) -> list[str | None]:
        for _ in range(30):
            generate(emu)
        return [entry["fault"] for entry in emu.requests()]

    with Emulator(faults=spec, fault_seed=42) as first, Emulator(faults=spec, fault_seed=42) as second:
        sequence = run(first)
        assert sequence == run(second)
        assert {None, "503"} <= set(sequence)
        first.reset()
        assert run(first) == sequence
        assert first.stats()["by_fault"] == {k: sequence.count(k) for k in set(sequence) if k}


def test_fault_spec_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Emulator(faults="teapot=0.1")
    with pytest.raises(ValueError, match="more than 1"):
        Emulator(faults="503=0.7,500=0.6")
    assert set(FAULT_KINDS) >= {"reset", "slow", "malformed", "html", "empty-data", "bad-b64", "error-200", "429-quota"}


# --- moderation -----------------------------------------------------------------------------------------------------


def test_moderation_word_lists() -> None:
    with Emulator(block_words=["forbidden"], filter_words=["spicy"]) as emu:
        status, type_, _ = error_of(post(emu, "/v1/images/generations", json={**BODY, "prompt": "a FORBIDDEN thing"}))
        assert (status, type_) == (451, "censorship_blocked")
        filtered = post(emu, "/v1/images/generations", json={**BODY, "prompt": "spicy food"})
        assert filtered.status_code == 200
        assert filtered.json()["data"][0]["finish_reason"] == "content_filtered"


# --- introspection --------------------------------------------------------------------------------------------------


def test_stats_requests_and_reset_over_http(emu: Emulator) -> None:
    emu.reset()
    generate(emu, seed=99, source_image=None)
    body = {
        "model": "step-1x-medium",
        "prompt": "p",
        "size": "256x256",
        "source_image": b64(make_png(64, 64)),
        "source_weight": 0.5,
    }
    post(emu, "/v1/images/generations", json=body, headers={"X-Request-Tag": "case-7"})
    post(
        emu,
        "/v1/images/edits",
        data={"model": "step-image-edit-2", "prompt": "p"},
        files={"image": ("a.png", make_png(32, 32))},
    )
    post(emu, "/v1/nothing", json={})

    stats = http.get(emu.url + "/_emulator/stats").json()
    assert stats["by_path"] == {"/v1/images/generations": 2, "/v1/images/edits": 1, "/v1/nothing": 1}
    assert stats["by_status"] == {"200": 3, "404": 1}
    entries = http.get(emu.url + "/_emulator/requests").json()
    assert [e["status"] for e in entries] == [200, 200, 200, 404]
    assert entries[0]["seed"] == 99 and entries[0]["fields"]["seed"] == 99
    assert entries[1]["tag"] == "case-7"
    assert entries[1]["fields"]["source_image"].startswith("sha256:")  # never the payload itself
    assert entries[2]["form_fields"] == ["image", "model", "prompt"]

    assert http.post(emu.url + "/_emulator/reset").status_code == 200
    assert emu.stats()["requests"] == 0 and emu.requests() == []


# --- command line ---------------------------------------------------------------------------------------------------


def test_cli_prints_the_address_serves_and_exits_0_on_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stepfun_openai.emulator", "--port", "0", "--tier", "V0", "--api-key", "sk-cli"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().rstrip("\n")
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        response = httpx2.post(
            match.group(1) + "/images/generations", json=BODY, headers={"Authorization": "Bearer sk-cli"}
        )
        assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_package_cli_has_the_emulator_subcommand() -> None:
    args = build_parser().parse_args(
        ["emulator", "--port", "0", "--faults", "503=0.1", "--fault-seed", "3", "--rpm", "5"]
    )
    assert (args.command, args.port, args.faults, args.fault_seed, args.rpm) == ("emulator", 0, "503=0.1", 3, 5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["emulator", "--faults", "nope=1"])
    assert data_url(b"x").startswith("data:image/png;base64,")


def test_cli_exits_0_on_sigint_like_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stepfun_openai.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline().rstrip("\n")
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        assert httpx2.post(match.group(1) + "/images/generations", json=BODY, headers={"Authorization": "Bearer k"})
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in process.stderr.read(), "Ctrl-C is a normal way to stop it, not a crash"
    finally:
        if process.poll() is None:
            process.kill()


def test_the_docs_pytest_plugin_example_runs_as_written(tmp_path: pathlib.Path) -> None:
    guide = pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides" / "testing.md"
    section = guide.read_text(encoding="utf-8").split("## The pytest plugin", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    conftest, _, tests = code.partition("# test_images.py\n")
    assert "pytest_plugins" in conftest and "def test_" in tests, "the example shows conftest.py and a test file"
    (tmp_path / "conftest.py").write_text(conftest.replace("# conftest.py\n", ""), encoding="utf-8")
    (tmp_path / "test_images.py").write_text(tests, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not this project's settings
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            str(tmp_path / "pytest.ini"),
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "2 passed" in result.stdout
