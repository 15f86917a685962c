"""The ``stepfun-openai`` command: what a user types and what they see."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from stepfun_openai import read_metadata
from stepfun_openai.cli import main
from stepfun_openai.emulator import Emulator

Factory = Callable[..., Emulator]


@pytest.fixture(autouse=True)
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STEPFUN_API_KEY", "STEP_API_KEY", "STEPFUN_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_the_quick_start_command_writes_an_image_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["generate", "a lighthouse at dawn", "--emulator", "--out", f"{tmp_path}/out/"])

    out = capsys.readouterr().out
    files = list((tmp_path / "out").glob("*.png"))
    assert code == 0 and len(files) == 1
    assert files[0].name.startswith("a-lighthouse-at-dawn-")
    assert f"wrote {files[0]}" in out
    metadata = read_metadata(files[0])  # provenance travels with the file
    assert metadata is not None and metadata["prompt"] == "a lighthouse at dawn"


def test_image2image_and_edit_run_against_the_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "source.png"
    assert main(["generate", "a harbour", "--emulator", "--out", str(source), "--seed", "5"]) == 0
    assert source.exists()

    assert main(["image2image", "the harbour at night", "--emulator", "--source", str(source),
                 "--source-weight", "0.6", "--size", "256x256", "--out", str(tmp_path / "night.png")]) == 0  # fmt: skip
    assert main(["edit", "add a boat", "--emulator", "--image", str(source), "--out", str(tmp_path / "boat.png")]) == 0

    out = capsys.readouterr().out
    assert (tmp_path / "night.png").exists() and (tmp_path / "boat.png").exists()
    assert "wrote" in out and "night.png" in out and "boat.png" in out


def test_without_a_key_the_command_says_what_to_set_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "a lighthouse"])

    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "STEPFUN_API_KEY" in err and "STEP_API_KEY" in err and "--emulator" in err


def test_an_invalid_parameter_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "a cat", "--emulator", "--model", "step-2x-large", "--size", "300x300"])

    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "size" in err and "Traceback" not in err


def test_models_prints_the_catalog_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["MODEL", "ENDPOINT"]
    rows = {tuple(line.split()[:2]) for line in lines[1:] if line.strip()}
    assert ("step-image-edit-2", "generations") in rows and ("step-2x-large", "image2image") in rows
    assert any("retired" in line and "step-1x-medium" in line for line in lines)


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("generate", ["step-image-edit-2: 1..50, default 8", "step-2x-large: 1..50, default 50", "default 7.5"]),
        ("image2image", ["1..100, default 50", "--source-weight"]),
        ("edit", ["step-1x-edit: 1..50, default 28", "512x512, 768x768, 1024x1024, default 512x512"]),
        ("batch", ["--tier", "V1 100/1000", "manifest.jsonl", "default 8"]),
    ],
)
def test_help_shows_the_catalogs_defaults(
    command: str, expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    for fragment in expected:
        assert fragment in text


def test_batch_from_a_text_file_with_the_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\na blue fox\n\na green fox\n")

    code = main(["batch", str(prompts), "--emulator", "--out", str(tmp_path / "out"), "--concurrency", "3",
                 "--model", "step-2x-large", "--size", "256x256", "--no-progress"])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0
    assert "3 of 3 images done" in out and str(tmp_path / "out") in out
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert [x["params"]["size"] for x in lines] == ["256x256"] * 3


def test_a_batch_with_failed_jobs_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "fine", "id": "ok"}\n{"prompt": "bad", "size": "1x1", "id": "bad"}\n')

    code = main(["batch", str(jobs), "--emulator", "--out", str(tmp_path / "o"), "--concurrency", "2", "--no-progress"])

    assert code == 1
    assert "1 invalid" in capsys.readouterr().out


# --- the real process: SIGKILL and Ctrl-C -------------------------------------------------------


def _cli(args: list[str], emu: Emulator) -> list[str]:
    entry = "import sys; from stepfun_openai.cli import main; sys.exit(main())"
    return [sys.executable, "-c", entry, *args, "--base-url", emu.base_url]


def _env() -> dict[str, str]:
    return {**os.environ, "STEPFUN_API_KEY": "sk-test"}


def _wait_for_lines(manifest: Path, count: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if manifest.exists() and len(manifest.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, "the batch ended before it could be interrupted"
        time.sleep(0.02)
    raise AssertionError("the batch made no progress")


def test_sigkill_mid_batch_then_rerun_makes_every_image_exactly_once(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(latency=0.15)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"a kite number {i}\n" for i in range(20)))
    out, manifest = tmp_path / "out", tmp_path / "out" / "manifest.jsonl"
    args = ["batch", str(jobs), "--out", str(out), "--concurrency", "4", "--model", "step-2x-large",
            "--size", "256x256", "--no-progress"]  # fmt: skip

    process = subprocess.Popen(_cli(args, emu), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_lines(manifest, 5, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished_first = {json.loads(line)["params"]["prompt"] for line in manifest.read_text().splitlines()[:5]}

    rerun = subprocess.run(_cli(args, emu), env=_env(), capture_output=True, text=True, timeout=60)

    assert rerun.returncode == 0, rerun.stderr
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip().startswith("{")]
    succeeded = Counter(line["id"] for line in lines if line["status"] == "succeeded")
    assert len(succeeded) == 20 and set(succeeded.values()) == {1}  # each job finished exactly once
    named = {line["file"] for line in lines if line["status"] == "succeeded"}  # <prompt slug>-<job id>.png
    assert named == {f"{line['params']['prompt'].replace(' ', '-')}-{line['id']}.png" for line in lines if line["file"]}
    assert sorted(p.name for p in out.iterdir()) == sorted([*named, "manifest.jsonl"])
    served = Counter(e["fields"]["prompt"] for e in emu.requests() if e["status"] == 200 and "fields" in e)
    assert all(served[prompt] == 1 for prompt in finished_first)  # no finished job was generated twice
    assert sum(served.values()) <= 20 + 4  # at most the in-flight jobs were paid for twice


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(latency=0.2)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"a boat number {i}\n" for i in range(30)))
    manifest = tmp_path / "out" / "manifest.jsonl"
    args = ["batch", str(jobs), "--out", str(tmp_path / "out"), "--concurrency", "2", "--model", "step-2x-large",
            "--size", "256x256", "--no-progress"]  # fmt: skip

    process = subprocess.Popen(_cli(args, emu), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_lines(manifest, 2, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)

    assert process.returncode == 130
    message = err.decode().strip().splitlines()[-1]
    assert "interrupted" in message and "resume with: stepfun-openai batch" in message
    assert "Traceback" not in err.decode()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


# --- what reaches StepFun, and what the user sees when it fails ---------------------------------


@pytest.fixture
def api(stepfun_emulator_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Emulator]:
    """An emulator with the CLI's key set for it (pass ``--base-url emu.base_url``)."""

    def start(**options: object) -> Emulator:
        emu = stepfun_emulator_factory(**options)
        monkeypatch.setenv("STEPFUN_API_KEY", emu.api_key)
        return emu

    return start


def test_the_generation_flags_reach_the_request(api: Callable[..., Emulator], tmp_path: Path) -> None:
    emu = api()
    code = main(["generate", "a sign that says OPEN", "--base-url", emu.base_url, "--out", str(tmp_path / "a.png"),
                 "--model", "step-image-edit-2", "--steps", "12", "--cfg-scale", "3.5", "--negative-prompt", "blur",
                 "--text-mode", "--seed", "42"])  # fmt: skip
    assert code == 0
    (sent,) = emu.requests()
    assert sent["fields"] == {**sent["fields"], "model": "step-image-edit-2", "steps": 12, "cfg_scale": 3.5,
                              "negative_prompt": "blur", "text_mode": True, "seed": 42}  # fmt: skip


def test_style_reference_and_image_flags_reach_the_request(
    api: Callable[..., Emulator], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stepfun_openai._validation._warned_models", set())  # once per process: this test's
    emu = api()
    source = tmp_path / "source.png"
    assert main(["generate", "a harbour", "--base-url", emu.base_url, "--out", str(source), "--model",
                 "step-2x-large", "--size", "256x256"]) == 0  # fmt: skip
    emu.reset()

    capsys.readouterr()
    # step-1x-medium: the one model with style_reference, and retired: the command says so in one line
    assert main(["generate", "a harbour in that style", "--base-url", emu.base_url, "--out",
                 str(tmp_path / "s.png"), "--model", "step-1x-medium", "--size", "256x256",
                 "--style-reference", str(source), "--style-weight", "0.8"]) == 0  # fmt: skip
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith("stepfun-openai: warning: StepFun retired step-1x-medium on ")
    assert main(["image2image", "at night", "--base-url", emu.base_url, "--source", str(source), "--source-weight",
                 "0.6", "--size", "256x256", "--out", str(tmp_path / "n.png")]) == 0  # fmt: skip
    assert main(["edit", "add a boat", "--base-url", emu.base_url, "--image", str(source), "--out",
                 str(tmp_path / "b.png")]) == 0  # fmt: skip

    styled, night, boat = (entry["fields"] for entry in emu.requests())
    assert styled["style_reference"]["weight"] == 0.8 and styled["style_reference"]["source_url"].startswith("sha256:")
    assert night["source_weight"] == 0.6 and night["source_url"].startswith("sha256:")
    assert boat["prompt"] == "add a boat" and boat["image"].endswith(f"({source.stat().st_size} bytes)")


def test_an_api_error_exits_1_with_one_line_and_the_trace_id(
    api: Callable[..., Emulator], capsys: pytest.CaptureFixture[str]
) -> None:
    emu = api(block_words=["contraband"])
    code = main(["generate", "contraband", "--base-url", emu.base_url])

    err = capsys.readouterr().err.strip()
    (sent,) = emu.requests()
    assert code == 1 and len(err.splitlines()) == 1
    assert "ContentBlockedError (HTTP 451)" in err and f"[trace id {sent['trace_id']}]" in err


def test_retries_stay_quiet_unless_debug(stepfun_emulator_factory: Factory) -> None:
    emu = stepfun_emulator_factory(faults="503=1.0")
    # A real process (pytest would catch the log records itself), without the real backoff waits.
    entry = (
        "import sys, stepfun_openai._retry as r; r._default_sleep = lambda seconds: None; "
        "from stepfun_openai.cli import main; sys.exit(main())"
    )
    command = [sys.executable, "-c", entry, "generate", "a lighthouse", "--base-url", emu.base_url]
    env = {**os.environ, "STEPFUN_API_KEY": emu.api_key}

    quiet = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert len(emu.requests()) == 9  # retried as usual ...
    assert quiet.returncode == 1 and len(quiet.stderr.strip().splitlines()) == 1  # ... but one line
    assert "InternalServerError (HTTP 503)" in quiet.stderr

    loud = subprocess.run([*command, "--debug"], env=env, capture_output=True, text=True, timeout=60)
    assert loud.returncode == 1 and "Traceback (most recent call last)" in loud.stderr
    assert loud.stderr.count("StepFun request failed") == 8


def test_a_bad_line_in_a_jobs_file_does_not_stop_the_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"prompt": "fine", "model": "step-2x-large", "size": "256x256"}\n{"prompt": oops}\n')

    code = main(["batch", str(jobs), "--emulator", "--out", str(tmp_path / "o"), "--no-progress"])

    captured = capsys.readouterr()
    assert code == 1
    assert "1 of 2 images done" in captured.out and "1 invalid" in captured.out
    (bad,) = [json.loads(x) for x in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines() if '"invalid"' in x]
    assert bad["error"]["message"].startswith(f"{jobs}:2: not a JSON object")


def test_batch_with_the_emulator_is_not_held_to_the_free_tier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"a fox number {i}\n" for i in range(12)))

    code = main(["batch", str(prompts), "--emulator", "--out", str(tmp_path / "o"), "--model", "step-2x-large",
                 "--size", "256x256", "--no-progress"])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0 and "12 of 12 images done" in captured.out
    assert "limits: 5 concurrent, no RPM limit (--emulator default" in captured.err
    assert "0 429s seen" in captured.out


# --- issue 13: what a new user met ---------------------------------------------------------------


def test_version_names_this_package_and_openai(capsys: pytest.CaptureFixture[str]) -> None:
    import openai

    import stepfun_openai

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert (
        capsys.readouterr().out.strip() == f"stepfun-openai {stepfun_openai.__version__} (openai {openai.__version__})"
    )


def _webp(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (300, 300), (10, 120, 200)).save(path, format="WEBP")
    return path


def test_fit_converts_what_the_error_says_it_would(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = _webp(tmp_path / "source.webp")
    args = ["image2image", "at night", "--emulator", "--source", str(source), "--source-weight", "0.6",
            "--size", "256x256", "--out", str(tmp_path / "night.png")]  # fmt: skip

    assert main(args) == 2
    refusal = capsys.readouterr().err
    assert "add --fit" in refusal and "fit=True" not in refusal and "validate=False" not in refusal

    assert main([*args, "--fit"]) == 0
    captured = capsys.readouterr()
    assert "stepfun-openai: warning: --fit changed source_url: converted webp to jpeg" in captured.err
    assert (tmp_path / "night.png").exists()


def test_an_invalid_parameter_never_advises_validate_false(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "a cat", "--emulator", "--model", "step-2x-large", "--size", "300x300"]) == 2
    err = capsys.readouterr().err
    assert "size" in err and "validate=False" not in err


def _mixed_jobs(tmp_path: Path) -> Path:
    source = tmp_path / "photo.png"
    assert main(["generate", "a harbour", "--emulator", "--out", str(source), "--model", "step-2x-large",
                 "--size", "256x256"]) == 0  # fmt: skip
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"prompt": "a fox", "id": "fox"}) + "\n"
        + json.dumps({"prompt": "add a hat", "image": "photo.png", "id": "hat"}) + "\n"
        + json.dumps({"prompt": "at dusk", "source_url": "photo.png", "source_weight": 0.5, "id": "dusk"}) + "\n"
    )  # fmt: skip
    return jobs


def test_batch_model_applies_only_where_that_model_serves_the_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _mixed_jobs(tmp_path)

    code = main(["batch", str(jobs), "--emulator", "--out", str(tmp_path / "o"), "--no-progress",
                 "--model", "step-2x-large", "--size", "256x256"])  # fmt: skip

    assert code == 0, capsys.readouterr()
    models = {x["id"]: x["params"]["model"] for x in _manifest(tmp_path / "o")}
    # step-2x-large serves generations and image2image; the edit job keeps the edit default
    assert models == {"fox": "step-2x-large", "dusk": "step-2x-large", "hat": "step-image-edit-2"}


def test_batch_edit_model_sets_the_edit_jobs_and_must_serve_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _mixed_jobs(tmp_path)
    base = ["batch", str(jobs), "--emulator", "--out", str(tmp_path / "o"), "--no-progress", "--size", "512x512"]

    assert main([*base, "--edit-model", "step-2x-large"]) == 2
    assert "--edit-model step-2x-large does not serve /images/edits" in capsys.readouterr().err

    assert main([*base, "--model", "step-image-edit-2", "--edit-model", "step-1x-edit"]) == 1  # dusk: 512x512 is HxW
    models = {x["id"]: x["params"]["model"] for x in _manifest(tmp_path / "o")}
    assert models == {"fox": "step-image-edit-2", "hat": "step-1x-edit", "dusk": "step-2x-large"}


def _manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x.strip()]


def test_the_reasons_of_invalid_batch_jobs_reach_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "".join(json.dumps({"prompt": f"fox {i}", "steps": 900 + i, "id": f"j{i}"}) + "\n" for i in range(7))
    )
    out = tmp_path / "o"
    args = ["batch", str(jobs), "--emulator", "--out", str(out), "--no-progress", "--model", "step-2x-large"]

    for run in ("first", "resumed"):
        assert main(args) == 1
        text = capsys.readouterr().out
        shown = [line for line in text.splitlines() if line.startswith("  invalid job ")]
        ids = [line.split()[2].rstrip(":") for line in shown]
        assert len(set(ids)) == 5 and set(ids) <= {f"j{i}" for i in range(7)}, run  # the first five recorded
        assert f"invalid steps={900 + int(ids[0][1:])} for model 'step-2x-large'" in shown[0] and "[1, 50]" in shown[0]
        assert f"  ... 2 more: every reason is in {out / 'manifest.jsonl'}" in text
        assert "validate=False" not in text


def test_a_retired_models_warning_is_one_line_on_stderr_of_the_real_command(tmp_path: Path) -> None:
    entry = "import sys; from stepfun_openai.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "generate", "a lighthouse", "--emulator", "--model", "step-1x-medium",
               "--size", "256x256", "--out", str(tmp_path / "l.png")]  # fmt: skip

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith("stepfun-openai: warning: StepFun retired step-1x-medium on ") and "step-2x-large" in line


def test_a_directory_gets_prompt_slug_then_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "A Lighthouse, at dawn!", "--emulator", "--seed", "42", "--out", f"{tmp_path}/"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["a-lighthouse-at-dawn-42.png"]  # as save() names it


def test_out_with_another_formats_extension_gets_the_images_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "a fox", "--emulator", "--out", str(tmp_path / "fox.jpg")]) == 0

    captured = capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox.png"]
    assert (tmp_path / "fox.png").read_bytes().startswith(b"\x89PNG")
    assert (
        "StepFun sent a PNG image: writing fox.png" in captured.err and f"wrote {tmp_path / 'fox.png'}" in captured.out
    )


def test_the_models_table_fits_in_100_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert any(line.split()[:2] == ["sizes:", "1024x1024"] for line in lines)
    assert "step-1x-medium was retired on 2026-07-08: use step-2x-large" in lines


def test_adding_fit_to_a_batch_makes_only_the_refused_jobs(
    api: Callable[..., Emulator], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = api()
    source = _webp(tmp_path / "source.webp")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        json.dumps({"prompt": "a fox", "size": "256x256", "model": "step-2x-large"}) + "\n"
        + json.dumps({"prompt": "at dusk", "source_url": str(source), "source_weight": 0.5, "size": "256x256"}) + "\n"
    )  # fmt: skip
    args = ["batch", str(jobs), "--base-url", emu.base_url, "--out", str(tmp_path / "o"), "--no-progress"]

    assert main(args) == 1
    assert "add --fit" in capsys.readouterr().out  # the refusal says what to do ...

    assert main([*args, "--fit"]) == 0  # ... and doing it makes the refused job, and only that one
    assert "2 of 2 images done (1 finished in an earlier run)" in capsys.readouterr().out
    assert [e["fields"]["prompt"] for e in emu.requests() if e["status"] == 200 and "fields" in e] == [
        "a fox",
        "at dusk",
    ]
