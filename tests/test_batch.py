"""Batches against the emulator: every job done once, recorded, resumable, within the limits."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stepfun_openai import AsyncStepFun, RetryPolicy, batch, read_metadata
from stepfun_openai.emulator import Emulator
from tests._hostile import within

KEY = "sk-batch-test-secret"
FAST_RETRIES = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)


def client_for(emu: Emulator, **kwargs: Any) -> AsyncStepFun:
    return AsyncStepFun(api_key=KEY, base_url=emu.base_url, retry_policy=FAST_RETRIES, **kwargs)


def jobs(count: int, prefix: str = "a lighthouse, variation") -> list[dict[str, Any]]:
    return [{"prompt": f"{prefix} {i}", "model": "step-2x-large", "size": "256x256"} for i in range(count)]


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def generated_prompts(emu: Emulator) -> Counter[str]:
    """How often the server generated each prompt (answered 200)."""
    return Counter(
        entry["fields"]["prompt"]
        for entry in emu.requests()
        if entry["path"].endswith("/images/generations") and entry["status"] == 200
    )


Factory = Callable[..., Emulator]


def test_a_batch_makes_every_image_once_and_records_each_in_the_manifest(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(latency=0.02, concurrency=3)
    result = batch.run(jobs(12), out=tmp_path, client=client_for(emu), concurrency=3, rpm=None, progress=False)

    assert result.ok and result.succeeded == 12 and result.generated == 12
    lines = manifest_lines(tmp_path / "manifest.jsonl")
    assert len(lines) == 12 and {line["status"] for line in lines} == {"succeeded"}
    assert len({line["id"] for line in lines}) == 12
    for line in lines:
        image = tmp_path / line["file"]
        assert image.read_bytes().startswith(b"\x89PNG")
        provenance = read_metadata(image)  # the request travels with the file
        assert provenance is not None
        assert provenance["seed"] == line["seed"] and provenance["prompt"] == line["params"]["prompt"]
        assert provenance["trace_id"] == line["trace_id"]
        assert line["trace_id"] and line["attempts"] == 1
    assert sorted(generated_prompts(emu).values()) == [1] * 12
    text = (tmp_path / "manifest.jsonl").read_text()
    assert KEY not in text and "b64_json" not in text and "iVBOR" not in text  # no key, no image payloads
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_running_the_same_batch_again_skips_finished_jobs(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(latency=0.01)
    first = batch.run(jobs(6), out=tmp_path, client=client_for(emu), concurrency=4, rpm=None, progress=False)
    assert first.succeeded == 6

    second = batch.run(jobs(8), out=tmp_path, client=client_for(emu), concurrency=4, rpm=None, progress=False)

    assert (second.skipped, second.generated, second.succeeded) == (6, 2, 8)
    assert sorted(generated_prompts(emu).values()) == [1] * 8  # the first six were not asked for again
    assert len(list(tmp_path.glob("*.png"))) == 8


def test_a_line_cut_short_by_a_crash_is_ignored_and_the_job_runs_again(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory()
    batch.run(jobs(3), out=tmp_path, client=client_for(emu), concurrency=3, rpm=None, progress=False)
    manifest = tmp_path / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # killed mid-write

    again = batch.run(jobs(3), out=tmp_path, client=client_for(emu), concurrency=3, rpm=None, progress=False)

    assert (again.skipped, again.generated) == (2, 1)
    assert all(isinstance(json.loads(line), dict) for line in manifest.read_text().splitlines()[3:])


def test_invalid_jobs_are_recorded_and_the_others_still_run(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory()
    work: list[Any] = [
        *jobs(3),
        {"prompt": "wrong size", "model": "step-2x-large", "size": "300x300"},
        {"prompt": "typo", "stpes": 5},
        {"prompt": "nowhere", "endpoint": "upscale"},
    ]
    result = batch.run(work, out=tmp_path, client=client_for(emu), concurrency=3, rpm=None, progress=False)

    assert result.succeeded == 3 and result.invalid == 3 and not result.ok
    by_prompt = {line["params"].get("prompt"): line for line in manifest_lines(tmp_path / "manifest.jsonl")}
    assert "size" in by_prompt["wrong size"]["error"]["message"]
    assert "stpes" in by_prompt["typo"]["error"]["message"]
    assert by_prompt["nowhere"]["status"] == "invalid" and "upscale" in by_prompt["nowhere"]["error"]["message"]
    assert sum(generated_prompts(emu).values()) == 3  # invalid jobs never reached the server


def test_filtered_and_blocked_results_are_recorded_and_never_retried(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(filter_words=["forbidden fruit"], block_words=["contraband"])
    work = [*jobs(2), {"prompt": "forbidden fruit"}, {"prompt": "contraband"}]
    for _ in range(2):  # the second run must not ask again either
        result = batch.run(work, out=tmp_path, client=client_for(emu), concurrency=2, rpm=None, progress=False)

    assert (result.succeeded, result.content_filtered, result.blocked) == (2, 1, 1)
    assert result.failures == Counter({"content_filtered": 1, "blocked (451)": 1})
    statuses = {line["params"]["prompt"]: line for line in manifest_lines(tmp_path / "manifest.jsonl")}
    assert statuses["forbidden fruit"]["status"] == "content_filtered" and statuses["forbidden fruit"]["file"] is None
    assert statuses["contraband"]["status"] == "blocked" and statuses["contraband"]["error"]["status"] == 451
    edit_requests = Counter(e["fields"]["prompt"] for e in emu.requests() if e.get("fields"))
    assert edit_requests["forbidden fruit"] == 1 and edit_requests["contraband"] == 1
    assert len(list(tmp_path.glob("*.png"))) == 2


def test_at_a_concurrency_429_the_batch_slows_to_the_accounts_limit(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(latency=0.05, concurrency=2, retry_after=0.05)
    # We claim 6 parallel requests; the account allows 2.
    result = batch.run(jobs(12), out=tmp_path, client=client_for(emu), concurrency=6, rpm=None, progress=False)

    assert result.succeeded == 12 and result.rate_limited >= 1
    assert emu.stats()["by_status"].get("429", 0) == result.rate_limited
    # After the first 429s the batch stays under the limit: few 429s per image, not one per try.
    assert result.rate_limited <= 8


def test_rpm_429s_are_waited_out_and_nothing_fails(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(rpm=3000, faults="429=0.3", fault_seed=7)
    result = batch.run(jobs(15), out=tmp_path, client=client_for(emu), concurrency=4, rpm=None, progress=False)

    assert result.succeeded == 15 and result.failed == 0 and result.rate_limited > 0
    attempts = [line["attempts"] for line in manifest_lines(tmp_path / "manifest.jsonl")]
    assert sum(attempts) == result.requests == 15 + result.rate_limited


def test_server_errors_are_retried_and_the_attempts_recorded(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(faults="503=0.3,reset=0.1", fault_seed=3)
    result = batch.run(jobs(12), out=tmp_path, client=client_for(emu), concurrency=4, rpm=None, progress=False)

    assert result.succeeded == 12
    lines = manifest_lines(tmp_path / "manifest.jsonl")
    assert max(line["attempts"] for line in lines) > 1
    assert sum(line["attempts"] for line in lines) == emu.stats()["requests"]


def test_a_wrong_key_stops_the_batch_instead_of_failing_every_job(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key="the-right-key")
    result = batch.run(jobs(10), out=tmp_path, client=client_for(emu), concurrency=1, rpm=None, progress=False)

    assert result.stopped and "AuthenticationError" in result.stopped
    assert result.failed == 1 and emu.stats()["requests"] == 1
    assert result.pending == 10  # nothing is lost: resuming with the right key runs them all


def test_after_a_wrong_key_no_request_waiting_for_its_slot_is_sent(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key="the-right-key")
    # 600/minute: the first request goes at once, four more wait in the limiter for theirs (0.1 s apart)
    result = within(
        60,
        lambda: batch.run(jobs(10), out=tmp_path, client=client_for(emu), concurrency=5, rpm=600, progress=False),
    )
    assert result.stopped and "AuthenticationError" in result.stopped
    assert emu.stats()["requests"] == 1 and result.failed == 1  # not 5: a 401 for each
    assert result.pending == 10


async def test_cancelling_leaves_only_complete_files_and_finished_lines(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(latency=0.1)
    task = asyncio.ensure_future(
        batch.arun(jobs(30), out=tmp_path, client=client_for(emu), concurrency=3, rpm=None, progress=False)
    )
    manifest = tmp_path / "manifest.jsonl"
    while not manifest.exists() or len(manifest.read_text().splitlines()) < 4:
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    recorded = {line["file"] for line in manifest_lines(manifest)}
    files = {p.name for p in tmp_path.iterdir() if p.name != "manifest.jsonl"}
    assert recorded <= files  # every recorded job has its file ...
    assert len(files - recorded) <= 3  # ... at most the in-flight ones are unrecorded (they run again)
    assert not [name for name in files if name.startswith(".")]  # no temporary leftovers
    finished_before = {line["params"]["prompt"] for line in manifest_lines(manifest)}
    resumed = await batch.arun(jobs(30), out=tmp_path, client=client_for(emu), concurrency=6, rpm=None, progress=False)
    assert resumed.succeeded == 30 and resumed.skipped == len(recorded)
    # No job finished before the cancel was generated a second time by the resume.
    assert {generated_prompts(emu)[prompt] for prompt in finished_before} == {1}


def test_job_ids_are_stable_and_duplicates_get_their_own(tmp_path: Path) -> None:
    works = batch._jobs._prepare(["a cat", "a cat", {"prompt": "a cat", "id": "cat-1"}], {})
    assert works[0].id != works[1].id and works[1].id == works[0].id + "-2" and works[2].id == "cat-1"
    assert batch._jobs._prepare(["a cat"], {})[0].id == works[0].id
    assert batch._jobs._prepare(["a cat"], {"model": "step-2x-large"})[0].id != works[0].id
    with pytest.raises(ValueError, match="used twice"):
        batch._jobs._prepare([{"prompt": "x", "id": "same"}, {"prompt": "y", "id": "same"}], {})


def test_jobs_load_from_jsonl_or_plain_text(tmp_path: Path) -> None:
    (tmp_path / "src.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text(
        '{"prompt": "a", "seed": 3}\n\n{"endpoint": "edit", "prompt": "b", "image": "src.png", "id": "e1"}\n'
        '{"prompt": "c", "source_url": "src.png", "source_weight": 0.5}\n'
    )
    loaded = batch.load_jobs(jsonl)
    assert [job.endpoint for job in loaded] == ["generate", "edit", "image2image"]
    assert loaded[1].id == "e1" and loaded[1].params["image"] == str(tmp_path / "src.png")
    text = tmp_path / "prompts.txt"
    text.write_text("a red fox\n# a comment\n\na blue fox\n")
    assert [job.params["prompt"] for job in batch.load_jobs(text)] == ["a red fox", "a blue fox"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    ok, broken = batch.load_jobs(bad)  # a bad line does not stop the others: it becomes an invalid job
    assert ok.error is None and broken.error is not None and broken.error.startswith(f"{bad}:2: not a JSON object")


def test_without_tqdm_progress_is_a_plain_line_with_counts_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import sys

    from stepfun_openai.batch._progress import Progress

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    now = [0.0]
    stream = io.StringIO()
    progress = Progress(10, initial=2, stream=stream, clock=lambda: now[0])
    assert not progress.uses_tqdm
    now[0] = 6.0
    progress.update(succeeded=3, failed=1, rate_limited=2, advance=2)
    line = stream.getvalue().strip()
    assert line == "images: 4/10 done (3 ok, 1 failed), 20.0 images/min, ETA 0:00:18, 2 429s"


def test_the_progress_bar_shows_in_a_batch(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    import io

    emu = stepfun_emulator_factory()
    stream = io.StringIO()
    batch.run(jobs(3), out=tmp_path, client=client_for(emu), concurrency=3, progress_stream=stream)
    assert "3/3" in stream.getvalue() and "ok=3" in stream.getvalue()
