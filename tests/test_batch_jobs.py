"""Batch jobs of every kind, what the manifest keeps of them, and how a batch ends early."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from stepfun_openai import AsyncStepFun, RetryPolicy, batch
from stepfun_openai.emulator import Emulator

KEY = "sk-batch-jobs-test"
FAST_RETRIES = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
SMALL = {"model": "step-2x-large", "size": "256x256"}

Factory = Callable[..., Emulator]


def client_for(emu: Emulator, **kwargs: Any) -> AsyncStepFun:
    return AsyncStepFun(api_key=KEY, base_url=emu.base_url, retry_policy=FAST_RETRIES, **kwargs)


def manifest_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def a_png(emu: Emulator, path: Path) -> bytes:
    """A real PNG from the emulator, written to ``path``."""
    result = batch.run([{"prompt": "a source image", **SMALL, "id": "src"}], out=path.parent / "src-out",
                       client=client_for(emu), concurrency=1, rpm=None, progress=False)  # fmt: skip
    data = result.files[0].read_bytes()
    path.write_bytes(data)
    emu.reset()
    return data


# --- images in jobs -----------------------------------------------------------------------------


def test_an_image_in_extra_body_is_sent_but_only_its_digest_is_in_the_manifest(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key=KEY)
    b64 = base64.b64encode(a_png(emu, tmp_path / "src.png")).decode()
    job = {"prompt": "p", **SMALL, "extra_body": {"source_image": b64, "source_weight": 0.5}}
    style = {"prompt": "q", **SMALL, "extra_body": {"style_reference": {"source_url": b64, "weight": 1}}}

    result = batch.run([job], out=tmp_path / "out", client=client_for(emu), concurrency=1, rpm=None, progress=False)

    assert result.succeeded == 1
    (sent,) = emu.requests()
    assert sent["fields"]["source_image"].startswith("sha256:") and sent["fields"]["source_weight"] == 0.5
    text = (tmp_path / "out" / "manifest.jsonl").read_text()
    assert b64[:200] not in text and len(text) < 2000
    (line,) = manifest_lines(tmp_path / "out" / "manifest.jsonl")
    described = line["params"]["extra_body"]["source_image"]
    assert (
        described.startswith(f"<inline image, {len(b64)} chars, sha256 ")
        and line["params"]["extra_body"]["source_weight"] == 0.5
    )
    nested = batch._jobs.describe_params(style)["extra_body"]["style_reference"]
    assert nested["source_url"].startswith("<inline image") and nested["weight"] == 1
    # The id still hashes the whole image: stable for the same image, new for another one.
    (first,) = batch._jobs._prepare([job], {})
    (again,) = batch._jobs._prepare([dict(job)], {})
    other = {**job, "extra_body": {"source_image": b64[:-8] + "AAAAAAAA", "source_weight": 0.5}}
    (changed,) = batch._jobs._prepare([other], {})
    assert first.id == again.id != changed.id
    assert line["id"] == first.id


def test_editing_a_source_file_in_place_gives_its_job_a_new_id(tmp_path: Path) -> None:
    source = tmp_path / "source.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n first version")
    job = batch.Job.image2image("night", source_url=str(source), source_weight=0.5)
    before = batch._jobs._prepare([job], {})[0].id
    assert batch._jobs._prepare([job], {})[0].id == before

    source.write_bytes(b"\x89PNG\r\n\x1a\n second version")

    assert batch._jobs._prepare([job], {})[0].id != before  # so a re-run makes the new image
    assert (
        batch._jobs._prepare([batch.Job.edit("x", image=source)], {})[0].id
        != batch._jobs._prepare([batch.Job.edit("x", image=tmp_path / "elsewhere.png")], {})[0].id
    )


def test_edit_and_image2image_jobs_send_their_images(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(api_key=KEY)
    png = a_png(emu, tmp_path / "src.png")
    work = [
        batch.Job.edit("add a boat", image=str(tmp_path / "src.png")),
        batch.Job.image2image("the harbour at night", source_url=png, source_weight=0.6, size="256x256"),
        batch.Job.generate("a harbour", **SMALL, id="plain"),
    ]

    result = batch.run(work, out=tmp_path / "out", client=client_for(emu), concurrency=3, rpm=None, progress=False)

    assert result.ok and result.generated == 3
    by_path = {entry["endpoint"]: entry["fields"] for entry in emu.requests()}
    assert by_path["edits"]["prompt"] == "add a boat" and by_path["edits"]["model"] == "step-image-edit-2"
    assert by_path["edits"]["image"].endswith(f"({len(png)} bytes)")  # the file's bytes, as a multipart file
    assert by_path["image2image"]["source_weight"] == 0.6 and by_path["image2image"]["model"] == "step-2x-large"
    assert by_path["image2image"]["source_url"].startswith("sha256:")
    lines = {line["endpoint"]: line for line in manifest_lines(tmp_path / "out" / "manifest.jsonl")}
    assert lines["edit"]["params"]["image"] == str(tmp_path / "src.png")
    assert lines["image2image"]["params"]["source_url"].startswith(f"<{len(png)} bytes, sha256 ")
    assert lines["generate"]["id"] == "plain"


def test_job_constructors_and_an_async_iterable_of_jobs(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    assert batch.Job.generate("a", seed=3) == batch.Job("generate", {"prompt": "a", "seed": 3})
    assert batch.Job.edit("b", image="x.png", id="e").params == {"prompt": "b", "image": "x.png"}
    i2i = batch.Job.image2image("c", source_url="https://example.com/x.png", source_weight=0.4)
    assert (i2i.endpoint, i2i.params["source_weight"]) == ("image2image", 0.4)
    emu = stepfun_emulator_factory(api_key=KEY)

    async def source() -> AsyncIterator[batch.Job]:
        for i in range(3):
            await asyncio.sleep(0)
            yield batch.Job.generate(f"streamed {i}", **SMALL)

    async def main() -> batch.BatchResult:
        async with client_for(emu) as client:
            return await batch.arun(source(), out=tmp_path, client=client, concurrency=2, rpm=None, progress=False)

    result = asyncio.run(main())
    assert result.succeeded == 3
    assert sorted(e["fields"]["prompt"] for e in emu.requests()) == ["streamed 0", "streamed 1", "streamed 2"]


# --- jobs that cannot run -----------------------------------------------------------------------


def test_bad_lines_of_a_jobs_file_are_recorded_invalid_and_the_others_run(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key=KEY)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        '{"prompt": "fine one", "model": "step-2x-large", "size": "256x256"}\n'
        "{not json\n"
        '{"prompt": "x", "endpoint": "upscale"}\n'
        '{"prompt": "y", "id": [1]}\n'
        '{"prompt": "fine two", "model": "step-2x-large", "size": "256x256"}\n'
    )
    loaded = batch.load_jobs(jobs)
    assert len(loaded) == 5 and [job.error is None for job in loaded] == [True, False, False, False, True]
    assert batch.load_jobs(jobs)[1].id == loaded[1].id  # stable, so a resume does not redo it

    result = batch.run(loaded, out=tmp_path / "out", client=client_for(emu), concurrency=2, rpm=None, progress=False)

    assert (result.succeeded, result.invalid) == (2, 3) and not result.ok
    invalid = [line for line in manifest_lines(tmp_path / "out" / "manifest.jsonl") if line["status"] == "invalid"]
    messages = sorted(line["error"]["message"] for line in invalid)
    assert [m.split(": ")[0] for m in messages] == [f"{jobs}:2", f"{jobs}:3", f"{jobs}:4"]
    assert "not a JSON object" in messages[0] and "upscale" in messages[1] and "id" in messages[2]
    assert len(emu.requests()) == 2
    again = batch.run(batch.load_jobs(jobs), out=tmp_path / "out", client=client_for(emu), progress=False)
    # the finished jobs are skipped; the refused lines are checked again (no request) and refused again
    assert again.skipped == 2 and again.invalid == 3 and again.requests == 0


def test_a_400_from_the_server_is_final_and_not_sent_again_on_resume(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key=KEY)
    work = [{"prompt": "fine", **SMALL}, {"prompt": "odd size", "model": "step-2x-large", "size": "300x300"}]
    for _ in range(2):
        # validate=False: the client does not check, so StepFun (the emulator) answers 400.
        result = batch.run(work, out=tmp_path, client=client_for(emu, validate=False), concurrency=2, rpm=None,
                           progress=False)  # fmt: skip

    assert (result.succeeded, result.invalid, result.failed) == (1, 1, 0)
    assert sum(e["status"] == 400 for e in emu.requests()) == 1  # the resume did not send it again
    bad = [line for line in manifest_lines(tmp_path / "manifest.jsonl") if line["status"] == "invalid"]
    assert len(bad) == 1 and bad[0]["error"]["status"] == 400 and bad[0]["trace_id"]


def test_a_typo_in_defaults_is_an_error_naming_the_key_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'sise'.*allowed: .*size"):
        batch.run(["a cat"], out=tmp_path / "never", defaults={"sise": "256x256"}, progress=False)
    assert not (tmp_path / "never").exists()
    # response_format is accepted and ignored: a batch always asks for b64_json.
    (work,) = batch._jobs._prepare(["a cat"], {"response_format": "url", "size": "256x256"})
    assert "response_format" not in work.params and work.params["size"] == "256x256"


# --- stopping early -----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_host_stops_the_batch_after_a_few_attempts(tmp_path: Path) -> None:
    client = AsyncStepFun(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port()}/v1", retry_policy=FAST_RETRIES)
    work = [{"prompt": f"never sent {i}", **SMALL} for i in range(20)]

    result = batch.run(work, out=tmp_path, client=client, concurrency=1, rpm=None, progress=False)

    assert result.requests == 5  # not 20 jobs x 9 attempts
    assert result.stopped and "cannot reach http://127.0.0.1:" in result.stopped
    assert result.pending == 20 and result.failed == 0  # all left for a resume
    assert not (tmp_path / "manifest.jsonl").read_text()
    summary = result.summary()
    assert "20 not started" in summary and "run the same batch again" in summary


def test_after_a_wrong_key_the_summary_counts_the_jobs_never_started(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key="the-right-key")
    result = batch.run(
        [f"job {i}" for i in range(10)], out=tmp_path, client=client_for(emu), concurrency=1, progress=False
    )
    lines = result.summary().splitlines()
    assert lines[0].startswith("0 of 10 images done; 0 generated in ")
    assert lines[1] == "not done: 1 AuthenticationError, 9 not started"
    assert lines[2].startswith("  failed job ") and "AuthenticationError" in lines[2]  # the reason, with the job
    assert lines[4].startswith("stopped early: AuthenticationError")
    assert lines[4].endswith("10 job(s) pending: run the same batch again (same manifest) to resume")


def test_the_summary_says_what_was_done_skipped_and_not_done(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(api_key=KEY, filter_words=["forbidden"])
    work = [{"prompt": f"ok {i}", **SMALL} for i in range(3)]
    batch.run(work[:1], out=tmp_path, client=client_for(emu), concurrency=2, rpm=None, progress=False)

    result = batch.run([*work, {"prompt": "forbidden", **SMALL}], out=tmp_path, client=client_for(emu), concurrency=2,
                       progress=False)  # fmt: skip

    first, reasons, why, where = result.summary().splitlines()
    assert first.startswith("3 of 4 images done (1 finished in an earlier run); 2 generated in ")
    assert first.endswith(" images/minute, 0 429s seen)")
    assert reasons == "not done: 1 content_filtered"
    assert why.startswith("  content_filtered job ") and "moderation" in why
    assert where == f"images in {tmp_path}/, manifest {tmp_path / 'manifest.jsonl'}"


def test_ctrl_c_in_run_raises_batch_interrupted_with_what_was_done(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(api_key=KEY, latency=0.1)
    manifest = tmp_path / "manifest.jsonl"

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if manifest.exists() and len(manifest.read_text().splitlines()) >= 2:
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    threading.Thread(target=press_ctrl_c, daemon=True).start()
    work = [{"prompt": f"interrupted {i}", **SMALL} for i in range(40)]
    with pytest.raises(batch.BatchInterrupted) as interrupted:
        batch.run(work, out=tmp_path, client=client_for(emu), concurrency=2, rpm=None, progress=False)

    done = interrupted.value.result
    assert isinstance(interrupted.value, KeyboardInterrupt) and done.interrupted
    recorded = len(manifest_lines(manifest))
    assert 2 <= recorded < 40
    assert recorded - 2 <= done.succeeded <= recorded  # at most the in-flight commits are not counted yet
    assert "run it again with the same manifest" in str(interrupted.value)


# --- names and per-endpoint defaults ----------------------------------------------------------


def test_a_default_model_lands_only_on_the_jobs_whose_endpoint_it_serves() -> None:
    from stepfun_openai.batch._jobs import Job, _prepare

    works = _prepare(
        [
            "a fox",
            Job.edit("add a hat", image="photo.png"),
            Job.image2image("dusk", source_url="x.png", source_weight=1),
        ],
        {"model": "step-2x-large", "steps": 20},
    )
    assert [(w.endpoint, w.params["model"], w.params["steps"]) for w in works] == [
        ("generate", "step-2x-large", 20),
        ("edit", "step-image-edit-2", 20),  # step-2x-large serves no edits: the edit default stays
        ("image2image", "step-2x-large", 20),
    ]


def test_batch_files_are_named_prompt_slug_then_job_id_and_never_meet() -> None:
    from stepfun_openai.batch._jobs import _prepare

    works = _prepare(
        [
            {"prompt": "A Red Fox!", "id": "fox-1"},
            {"prompt": "a", "id": "b-c"},
            {"prompt": "a b", "id": "c"},  # "a-b-c" too: a hash tells them apart
            {"prompt": "x", "id": "A"},
            {"prompt": "x", "id": "a"},  # "x-a" and "x-A" meet on a case-insensitive disk
            {"prompt": "a cat"},
        ],
        {},
    )
    stems = [w.stem for w in works]
    assert stems[:2] == ["a-red-fox-fox-1", "a-b-c"] and stems[3] == "x-A"
    assert stems[2].startswith("a-b-c-") and stems[4].startswith("x-a-")
    assert stems[5] == f"a-cat-{works[5].id}"
    assert len({stem.casefold() for stem in stems}) == len(stems)
    assert [w.stem for w in _prepare([{"prompt": "a", "id": "b-c"}, {"prompt": "a b", "id": "c"}], {})] == stems[1:3]


def test_a_manifest_of_the_old_naming_resumes(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    """Finished jobs are found by id, so files named by the earlier scheme (``<job id>.png``)
    stay as the manifest records them, and only the new jobs are made, named the new way."""
    emu = stepfun_emulator_factory(api_key=KEY)
    jobs = [{"prompt": f"fox {i}", **SMALL} for i in range(3)]
    batch.run(jobs[:2], out=tmp_path, client=client_for(emu), rpm=None, progress=False)
    old_lines = []
    for line in manifest_lines(tmp_path / "manifest.jsonl"):
        old_name = f"{line['id']}.png"
        (tmp_path / line["file"]).rename(tmp_path / old_name)
        old_lines.append(json.dumps({**line, "file": old_name}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(old_lines) + "\n")
    emu.reset()

    result = batch.run(jobs, out=tmp_path, client=client_for(emu), rpm=None, progress=False)

    assert result.ok and result.skipped == 2 and len(emu.requests()) == 1
    (new,) = [line for line in manifest_lines(tmp_path / "manifest.jsonl") if line["params"]["prompt"] == "fox 2"]
    assert new["file"] == f"fox-2-{new['id']}.png"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(
        [*(f"{line['id']}.png" for line in map(json.loads, old_lines)), new["file"]]
    )
