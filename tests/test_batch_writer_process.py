"""A batch of many jobs commits its outcomes through a writer process: the files' names,
provenance, system calls and syncs, and the manifest's lines run there, in groups, with the same
guarantees as the writer thread (a line only for files that are whole and durable, nothing lost,
no temporary file left, Ctrl-C and SIGKILL safe)."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stepfun_openai import AsyncStepFun, batch, read_metadata
from stepfun_openai._writer_process import READY, read_message
from stepfun_openai.batch import _writer
from stepfun_openai.batch._manifest import Manifest
from stepfun_openai.emulator import Emulator

from .test_cli import _cli, _env, _wait_for_lines

KEY = "sk-batch-writer-process"
Factory = Callable[..., Emulator]
N = 300
"""More than ``PROCESS_MIN_JOBS``: these batches use the writer process as a user's would."""

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the writer process is tested on Linux")


def _jobs(count: int = N, word: str = "cat") -> list[dict[str, Any]]:
    return [{"prompt": f"a {word} {i}", "model": "step-2x-large", "size": "256x256"} for i in range(count)]


@pytest.fixture
def processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The writer processes the batches of the test start."""
    started: list[subprocess.Popen[bytes]] = []
    original = _writer._start_process

    def spy(*args: Any) -> subprocess.Popen[bytes]:
        process = original(*args)
        started.append(process)
        return process

    monkeypatch.setattr(_writer, "_start_process", spy)
    yield started
    for process in started:  # none is left behind, whatever the test did
        if process.poll() is None:
            process.kill()
            process.wait()


def _lines(manifest: Path) -> list[dict[str, Any]]:
    """The manifest's events; at most one line is not one (a line the killed process was cut off
    inside, ended by the batch: skipped on reading)."""
    book = Manifest(manifest)
    events = list(book.events())
    assert book.skipped_lines <= 1
    return events


def _check_consistent(out: Path) -> list[dict[str, Any]]:
    """Every line's file is there and whole (its provenance readable); no temporary file left."""
    lines = _lines(out / "manifest.jsonl")
    for line in lines:
        if line["status"] == "succeeded":
            metadata = read_metadata(out / line["file"])
            assert metadata is not None and metadata.params["prompt"] == line["params"]["prompt"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    return lines


async def test_a_large_batch_commits_in_groups_through_a_writer_process_and_writes_no_file_itself(
    stepfun_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    def not_here(*args: Any) -> None:
        raise AssertionError("a file was written by the batch's own process")

    groups: list[int] = []
    launch = _writer.ProcessWriter._launch

    def counting(self: Any, group: Any) -> Any:
        groups.append(len(group.commits))
        return launch(self, group)

    monkeypatch.setattr(_writer, "write_temps", not_here)
    monkeypatch.setattr(_writer.ProcessWriter, "_launch", counting)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    result = await asyncio.wait_for(
        batch.arun(_jobs(), out=tmp_path, client=client, concurrency=32, rpm=None, progress=False), timeout=60
    )
    await client.close()

    assert result.succeeded == N and len(result.files) == N and all(path.is_file() for path in result.files)
    assert len(processes) == 1 and processes[0].returncode == 0  # started once, ended when the batch did
    assert sum(groups) == N and len(groups) < N  # jobs that finish together share a commit
    lines = _check_consistent(tmp_path)
    assert len(lines) == N and {line["status"] for line in lines} == {"succeeded"}
    assert sorted(tmp_path / line["file"] for line in lines) == sorted(result.files)


def test_which_writer_a_batch_gets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    async def writers() -> list[str]:
        book = Manifest(tmp_path / "manifest.jsonl")
        book.open()
        try:
            names = []
            for jobs in (_writer.PROCESS_MIN_JOBS - 1, _writer.PROCESS_MIN_JOBS):
                writer = _writer.open_writer(book, tmp_path, on_committed=lambda group: None, jobs=jobs)
                names.append(type(writer).__name__)
                writer.close()
            return names
        finally:
            book.close()

    assert asyncio.run(writers()) == ["GroupWriter", "ProcessWriter"]
    monkeypatch.setattr(_writer, "_cores", lambda: 1)  # on one core the process would only compete
    assert asyncio.run(writers()) == ["GroupWriter", "GroupWriter"]


async def test_a_write_error_in_the_writer_process_is_raised_and_no_line_vouches_for_a_missing_file(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _writer._start_process

    def small_files_only(*args: Any) -> subprocess.Popen[bytes]:
        process = original(*args)
        # The process may write no file larger than 100 bytes: each image fails with EFBIG.
        resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (100, 100))
        return process

    monkeypatch.setattr(_writer, "_start_process", small_files_only)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    with pytest.raises(OSError, match="File too large"):
        await asyncio.wait_for(
            batch.arun(_jobs(), out=tmp_path, client=client, concurrency=8, rpm=None, progress=False), timeout=60
        )
    await client.close()
    assert (tmp_path / "manifest.jsonl").read_text() == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]  # no image, no temporary file


async def test_a_killed_writer_process_stops_the_batch_and_a_rerun_finishes_every_job_once(
    stepfun_emulator: Emulator, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    manifest = tmp_path / "manifest.jsonl"

    async def kill_after_some_lines() -> None:
        while not (manifest.exists() and len(manifest.read_text().splitlines()) >= 20):
            await asyncio.sleep(0.01)
        processes[0].kill()

    killer = asyncio.create_task(kill_after_some_lines())
    with pytest.raises(RuntimeError, match="writer process ended before committing every group"):
        await asyncio.wait_for(
            batch.arun(_jobs(), out=tmp_path, client=client, concurrency=8, rpm=None, progress=False), timeout=60
        )
    await killer
    first = _check_consistent(tmp_path)
    assert 20 <= len(first) < N

    again = await asyncio.wait_for(
        batch.arun(_jobs(), out=tmp_path, client=client, concurrency=8, rpm=None, progress=False), timeout=60
    )
    await client.close()
    assert again.skipped == len({line["id"] for line in first}) and again.succeeded == N
    lines = _check_consistent(tmp_path)
    succeeded = Counter(line["id"] for line in lines if line["status"] == "succeeded")
    assert len(succeeded) == N
    assert len(list(tmp_path.glob("*.png"))) == N  # a job cut short rewrote its own file, nothing else


async def test_a_writer_process_that_stops_answering_is_waited_for_only_so_long(
    stepfun_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    """A hung disk: the process stops answering. Cancelling the batch ends it within
    ``PROCESS_CLOSE_TIMEOUT``; the groups the process never confirmed are committed by the batch's
    own process, so no finished image is lost."""
    monkeypatch.setattr(_writer, "PROCESS_CLOSE_TIMEOUT", 1.0)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    manifest = tmp_path / "manifest.jsonl"

    async def stop_after_some_lines() -> None:
        while not (manifest.exists() and len(manifest.read_text().splitlines()) >= 10):
            await asyncio.sleep(0.01)
        os.kill(processes[0].pid, signal.SIGSTOP)

    stopper = asyncio.create_task(stop_after_some_lines())
    holder: list[Any] = []
    run = asyncio.create_task(
        batch.arun(_jobs(), out=tmp_path, client=client, concurrency=8, rpm=None, progress=False, _holder=holder)
    )
    await stopper
    await asyncio.sleep(0.5)  # jobs finish and wait for commits that do not come
    started = time.monotonic()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, timeout=30)
    assert time.monotonic() - started < 15
    await client.close()
    assert processes[0].poll() is not None  # killed, not left stopped
    lines = _check_consistent(tmp_path)
    assert len(lines) == holder[0].succeeded and len(lines) > 10  # the unconfirmed groups were committed here


async def test_lines_the_process_appended_but_never_confirmed_are_not_written_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The process stopped between appending a group's lines and answering (a hung disk, a
    signal): ``close()`` reads what it appended, counts those jobs as committed with the files
    their lines name, ends a line it was cut off inside, and commits only the rest itself."""
    from stepfun_openai._files import write_group
    from stepfun_openai._group_files import GroupFiles, manifest_lines

    from .conftest import tiny_png

    monkeypatch.setattr(_writer, "PROCESS_CLOSE_TIMEOUT", 0.5)
    book = Manifest(tmp_path / "manifest.jsonl")
    book.open()
    committed: list[_writer.Commit] = []
    writer = _writer.ProcessWriter(book, tmp_path, on_committed=committed.extend)
    os.kill(processes[0].pid, signal.SIGSTOP)  # it receives the group, and never answers
    commits = [
        _writer.Commit({"id": job, "status": "succeeded"}, images=[(tiny_png(8, 8, job), None, None)], stem=job)
        for job in ("a", "b", "c")
    ]
    waits = [asyncio.create_task(writer.commit(commit)) for commit in commits]
    for _ in range(5):
        await asyncio.sleep(0)
    assert [len(group.commits) for group in writer._running.values()] == [3]  # sent, unconfirmed

    # What the process did before it stopped: a and b committed, c's line cut off.
    names = GroupFiles(tmp_path, tmp_path)
    events = [dict(commit.event) for commit in commits[:2]]
    for event, commit in zip(events, commits[:2], strict=True):
        write_group(names.files_of(event, commit.stem, commit.images)[0])
    book.append_lines(manifest_lines(events) + '{"id": "c", "sta')

    writer.close()
    await asyncio.wait_for(asyncio.gather(*waits), timeout=10)
    book.close()
    assert processes[0].poll() is not None
    assert sorted(commit.event["id"] for commit in committed) == ["a", "b", "c"]
    assert {commit.event["id"]: [path.name for path in commit.files] for commit in committed} == {
        "a": ["a.png"],
        "b": ["b.png"],
        "c": ["c.png"],
    }
    lines = list(book.events())
    assert [line["id"] for line in lines] == ["a", "b", "c"]  # one line each, none twice
    assert book.skipped_lines == 1  # the piece of c's line, on a line of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png", "manifest.jsonl"]
    assert read_metadata(tmp_path / "c.png") is None  # no request: no provenance, but the image is whole


@pytest.mark.parametrize("outlives", [True, False])
async def test_jobs_wait_for_their_commit_beyond_the_concurrency_only_while_the_writer_outlives_the_batch(
    outlives: bool,
) -> None:
    """``ahead`` extra tasks run while the writer's commits outlive the batch (a writer process);
    when they stop doing so (the process could not start: the thread commits), the extra tasks
    end after their job and the concurrency alone runs the rest; no job is dropped."""
    from stepfun_openai.batch._runner import _execute

    class Writer:
        error = None
        outlives_the_batch = True

        async def drain(self) -> None:
            pass

    class Runner:
        stop = None
        active = started = late_most = 0
        most = 0

        async def run_job(self, work: object) -> None:
            self.started += 1
            if self.started == 10:
                writer.outlives_the_batch = outlives
            self.active += 1
            self.most = max(self.most, self.active)
            if self.started > 20:
                self.late_most = max(self.late_most, self.active)
            await asyncio.sleep(0.002)
            self.active -= 1

    writer, runner = Writer(), Runner()
    jobs = [SimpleNamespace(id=str(number)) for number in range(60)]
    await asyncio.wait_for(_execute(runner, writer, jobs, 2, ahead=3), timeout=10)  # type: ignore[arg-type]
    assert runner.started == 60 and runner.most == 5
    assert runner.late_most == (5 if outlives else 2)


async def test_the_writer_process_has_a_commit_once_its_bytes_are_in_the_pipe(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """``Commit.handed`` is called when the whole message is in the pipe: not while a large
    image waits for a stopped process to read, and at once when it reads again."""
    from .conftest import tiny_png

    book = Manifest(tmp_path / "manifest.jsonl")
    book.open()
    handed: list[str] = []
    writer = _writer.ProcessWriter(book, tmp_path, on_committed=lambda group: None)
    os.kill(processes[0].pid, signal.SIGSTOP)
    image = tiny_png(8, 8) + bytes(3 * _writer.PIPE_BYTES)  # larger than the pipe holds
    commit = _writer.Commit({"id": "big", "status": "succeeded"}, images=[(image, None, None)], stem="big")
    commit.handed = lambda: handed.append("big")
    waiting = asyncio.create_task(writer.commit(commit))
    await asyncio.sleep(0.3)
    assert handed == []  # part of it is still waiting for room in the pipe
    os.kill(processes[0].pid, signal.SIGCONT)
    await asyncio.wait_for(waiting, timeout=30)
    writer.close()
    book.close()
    assert handed == ["big"] and [event["id"] for event in book.events()] == ["big"]
    assert (tmp_path / "big.png").read_bytes() == image


async def test_a_commit_cancelled_by_ctrl_c_as_its_group_is_done_is_left_cancelled() -> None:
    """Ctrl-C cancels the jobs' futures between any two steps of the writer's callbacks: the
    writer sets an outcome without checking first, so it never raises ``InvalidStateError``."""
    from .test_batch_ratelimit import _CancelledAsItIsSet

    racing = _CancelledAsItIsSet()
    _writer._settle(racing)
    _writer._settle(racing, RuntimeError("the disk"))
    assert racing.cancelled()


@pytest.mark.parametrize("hands_over", [False, True])
async def test_a_finished_job_keeps_its_request_slot_until_the_writer_has_it(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hands_over: bool
) -> None:
    """With a writer whose commits outlive the batch, a finished job frees its place in the
    concurrency only once the writer has it (``Commit.handed``), not when its request ends: so
    a batch killed at any moment repeats at most ``concurrency`` jobs. Here the writer holds every
    commit: with nothing handed over, 2 requests are sent (the concurrency), not 4 (its tasks)."""
    from stepfun_openai.batch import _runner

    go = asyncio.Event()

    class HoldingWriter(_writer.GroupWriter):
        @property
        def outlives_the_batch(self) -> bool:
            return True

        async def commit(self, commit: _writer.Commit) -> None:
            if hands_over:
                _writer._hand([commit])
            await go.wait()
            await super().commit(commit)

    monkeypatch.setattr(
        _runner,
        "open_writer",
        lambda manifest, out, *, on_committed, jobs: HoldingWriter(manifest, out, on_committed=on_committed),
    )
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    run = asyncio.create_task(
        batch.arun(_jobs(10), out=tmp_path, client=client, concurrency=2, rpm=None, progress=False)
    )
    await asyncio.sleep(1.0)
    sent = len(stepfun_emulator.requests())
    go.set()
    result = await asyncio.wait_for(run, timeout=30)
    await client.close()
    assert sent == (4 if hands_over else 2)  # 2 tasks more than the concurrency wait for their commits
    assert result.succeeded == 10 and len(_lines(tmp_path / "manifest.jsonl")) == 10


# --- the real process: SIGKILL and Ctrl-C -------------------------------------------------------


def _writer_processes(out: Path) -> list[int]:
    """The pids of writer processes writing into ``out`` (their command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(b"_writer_process" in part for part in command) and os.fsencode(out) in command:
                found.append(int(entry.name))
    return found


def _gone(out: Path, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while _writer_processes(out):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("stop", ["SIGKILL", "SIGINT"])
def test_a_batch_stopped_by_a_signal_leaves_no_writer_behind_and_the_rerun_makes_every_image_once(
    stepfun_emulator_factory: Factory, tmp_path: Path, stop: str
) -> None:
    emu = stepfun_emulator_factory(latency=0.02)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"a kite number {i}\n" for i in range(N)))
    out = tmp_path / "out"
    manifest = out / "manifest.jsonl"
    args = ["batch", str(jobs), "--out", str(out), "--concurrency", "8", "--model", "step-2x-large",
            "--size", "256x256", "--no-progress"]  # fmt: skip

    process = subprocess.Popen(_cli(args, emu), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(manifest, 30, process)
        assert _writer_processes(out), "the batch has no writer process"
        process.send_signal(getattr(signal, stop))
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    if stop == "SIGINT":
        assert process.returncode == 130 and "Traceback" not in err.decode()
    assert _gone(out), "a writer process outlived its batch"
    first = _check_consistent(out)
    assert len(first) < N

    rerun = subprocess.run(_cli(args, emu), env=_env(), capture_output=True, text=True, timeout=120)

    assert rerun.returncode == 0, rerun.stderr
    lines = _check_consistent(out)
    succeeded = Counter(line["id"] for line in lines if line["status"] == "succeeded")
    assert len(succeeded) == N and set(succeeded.values()) == {1}  # each job finished exactly once
    assert len(list(out.glob("*.png"))) == N
    assert _gone(out)
    served = sum(1 for e in emu.requests() if e["status"] == 200 and "fields" in e)
    # Only the requests in flight were paid for twice: a job handed to the writer process is
    # committed by it even when the batch is killed, though the batch had not heard back yet.
    assert served <= N + 8


async def test_a_writer_process_that_cannot_start_leaves_the_batch_to_its_thread(
    stepfun_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An interpreter that cannot run the writer (a frozen app, a broken install): the batch warns
    and commits every group on its thread, those already sent to the process included."""

    def broken(*args: Any) -> subprocess.Popen[bytes]:
        code = "import sys; sys.stderr.write('cannot import the writer\\n'); sys.exit(3)"
        return subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    monkeypatch.setattr(_writer, "_start_process", broken)
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    with caplog.at_level("WARNING", logger="stepfun_openai"):
        result = await asyncio.wait_for(
            batch.arun(_jobs(), out=tmp_path, client=client, concurrency=16, rpm=None, progress=False), timeout=60
        )
    await client.close()
    assert result.succeeded == N
    assert "writer process did not start (exit code 3): the batch commits on a thread" in caplog.text
    assert len(_check_consistent(tmp_path)) == N and len(list(tmp_path.glob("*.png"))) == N


def test_the_collector_is_tuned_while_batches_run_and_restored_after() -> None:
    import gc

    from stepfun_openai.batch import _runner

    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with _runner._collector_tuned():
        assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == max(before[0], _runner.YOUNG_THRESHOLD)
        with _runner._collector_tuned():  # a second batch in the same process
            pass
        assert gc.get_freeze_count() > 0  # still the first one's
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

    gc.freeze()  # the program's own: left frozen, and not unfrozen by the batch
    try:
        with _runner._collector_tuned():
            gc.set_threshold(5000, *before[1:])  # the program's own change, kept
        assert gc.get_freeze_count() > 0 and gc.get_threshold() == (5000, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_a_batch_leaves_the_collector_as_it_found_it(stepfun_emulator: Emulator, tmp_path: Path) -> None:
    import gc

    before = gc.get_threshold(), gc.get_freeze_count()
    client = AsyncStepFun(api_key=KEY, base_url=stepfun_emulator.base_url)
    result = await asyncio.wait_for(
        batch.arun(_jobs(20), out=tmp_path, client=client, concurrency=4, rpm=None, progress=False), timeout=60
    )
    await client.close()
    assert result.succeeded == 20 and (gc.get_threshold(), gc.get_freeze_count()) == before


def test_the_writer_process_gets_no_api_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPFUN_API_KEY", "sk-writer-must-not-see-this")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-see-this")
    manifest = tmp_path / "manifest.jsonl"
    with open(manifest, "ab") as handle:
        process = _writer._start_process(tmp_path, tmp_path, handle.fileno())
        try:
            assert process.stdout is not None
            assert read_message(process.stdout) == READY  # running (its environ is empty until exec)
            environment = Path(f"/proc/{process.pid}/environ").read_bytes()
        finally:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.close()
            process.wait(timeout=30)
            process.stdout.close()
    assert b"must-not-see-this" not in environment and b"PATH=" in environment
    assert process.returncode == 0
