"""The batch past one process, without Ray: the account-wide coordinator, the fsspec output
(``memory://``), the local-process backend, and the message when Ray is missing.

The Ray backend's tests (a local Ray on loopback, a killed worker or driver, an S3 server on
loopback) are in ``test_batch_ray.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from stepfun_openai import StepFun, batch
from stepfun_openai._metadata import read_metadata
from stepfun_openai.batch import Limits
from stepfun_openai.batch._distributed import Coordinator, _ClientRecipe, _run_shard, _Shard
from stepfun_openai.batch._jobs import _prepare
from tests._hostile import within


def test_the_coordinator_hands_out_slots_in_blocks_and_never_more_than_the_account_has() -> None:
    coordinator = Coordinator(Limits(6, None), horizon=0.05)
    try:
        _, first = coordinator.lease("a", 4)
        _, second = coordinator.lease("b", 4)
        assert (len(first), len(second)) == (4, 2)  # one call, a block of slots; 6 in all
        started = time.monotonic()
        assert coordinator.lease("b", 1, wait=0.2)[1] == []  # none free: "none yet" after the wait
        assert 0.15 < time.monotonic() - started < 2
        coordinator.report("a", 3, 3, [], {"committed": 3, "succeeded": 3})
        assert len(coordinator.lease("b", 5)[1]) == 3  # what a released goes to b
        coordinator.forget("a")  # a died holding one: it is free again
        assert len(coordinator.lease("c", 5)[1]) == 1
        progress = coordinator.progress()
        assert progress["committed"] == 3 and progress["in_flight"] == 6
        assert coordinator.started() == ["a", "b", "c"]  # the driver drops a worker that never calls
    finally:
        coordinator.close()


def test_the_coordinator_paces_every_worker_together_at_the_account_rpm() -> None:
    coordinator = Coordinator(Limits(100, 600), horizon=0.05)  # 600/minute: one slot each 0.101 s
    try:
        times: list[float] = []
        for worker in ("a", "b") * 5:
            _, slots = coordinator.lease(worker, 3)
            times += slots
        times.sort()
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert len(times) == 10  # each lease: one slot, the next is farther than the horizon
        assert (times[-1] - times[0]) / 9 >= 0.1 and min(gaps) > 0.05  # a slot each 0.101 s, whoever asks
    finally:
        coordinator.close()


def test_a_429_reported_by_one_worker_slows_down_all_of_them() -> None:
    coordinator = Coordinator(Limits(10, 600))
    try:
        _, slots = coordinator.lease("a", 1)
        coordinator.report("a", 1, 0, [{"kind": "RPM", "limit": 300, "retry_after": None, "sent_at": slots[0]}], {})
        times = [coordinator.lease("b", 1)[1][0] for _ in range(5)]
        assert (times[-1] - times[0]) / 4 >= 60 / 300 * 0.95  # b is paced at the limit a's 429 named
        assert coordinator.progress()["rate_limited"] == 1
    finally:
        coordinator.close()


async def test_a_worker_whose_coordinator_does_not_answer_stops_instead_of_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stepfun_openai.batch import _distributed

    monkeypatch.setattr(_distributed, "CALL_TIMEOUT", 0.2)
    monkeypatch.setattr(_distributed, "LEASE_WAIT", 0.1)

    async def call(method: str, *args: Any) -> Any:
        await asyncio.sleep(3600)  # a coordinator that is gone without a word

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(2, None))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="coordinator cannot be reached"):
        await asyncio.wait_for(limiter.acquire(), 5)
    assert time.monotonic() - started < 2  # LEASE_WAIT + CALL_TIMEOUT, not an hour
    with pytest.raises(RuntimeError, match="coordinator cannot be reached"):
        await limiter.acquire()  # and every later request stops at once


async def test_a_worker_has_at_most_four_leases_on_their_way() -> None:
    from stepfun_openai.batch import _distributed

    on_their_way, most, answer = 0, 0, asyncio.Event()

    async def call(method: str, worker: str, want: int, *rest: Any) -> Any:
        nonlocal on_their_way, most
        on_their_way += 1
        most = max(most, on_their_way)
        await answer.wait()
        on_their_way -= 1
        return time.monotonic(), [time.monotonic()] * want

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(100, None))
    tasks = []
    for _ in range(10):  # one request at a time: each wants a lease of its own, up to the bound
        tasks.append(asyncio.create_task(limiter.acquire()))
        await asyncio.sleep(0.01)
    assert most == _distributed.LEASES_IN_FLIGHT == 4
    answer.set()
    assert len(await asyncio.wait_for(asyncio.gather(*tasks), 5)) == 10  # the rest were asked for in one


async def test_what_one_turn_of_the_loop_asks_and_frees_goes_in_one_call_each() -> None:
    """Requests that want a slot in the same turn of the event loop share one lease, and slots freed
    in the same turn one report: a call each cost the coordinator (0.42 calls a job before, at 900
    jobs/s on two workers), with no delay added (the call goes at the end of that turn)."""
    from stepfun_openai.batch import _distributed

    calls: list[tuple[str, int]] = []

    async def call(method: str, worker: str, *args: Any) -> Any:
        calls.append((method, args[0]))  # a lease's want, a report's slots released
        if method == "lease":
            return time.monotonic(), [time.monotonic()] * args[0]
        return None

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(100, None))
    slots = await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(10))), 5)
    assert len(slots) == 10 and calls == [("lease", 10)]
    for _ in range(10):
        limiter.release()
    for _ in range(20):  # a few turns: the report's task, then its call
        await asyncio.sleep(0)
    assert calls == [("lease", 10), ("report", 10)]
    await limiter.close()


def test_the_coordinator_lets_each_worker_keep_its_share_while_nothing_is_paced() -> None:
    coordinator = Coordinator(Limits(6, None))
    try:
        assert len(coordinator.lease("a", 4)[1]) == 4
        assert coordinator.report("a", 0, 0, [], {}) == 6  # alone: the whole account
        assert len(coordinator.lease("b", 4)[1]) == 2
        assert coordinator.report("a", 0, 0, [], {}) == 3  # two hold slots: half each
        coordinator.report("b", 2, 0, [], {})
        assert coordinator.report("a", 0, 0, [], {}) == 6  # b holds none and waits for none
        limited = [{"kind": "concurrency", "limit": None, "retry_after": 0.3, "sent_at": None}]
        assert coordinator.report("a", 0, 0, limited, {}) == 0  # a 429: every slot through the coordinator
        time.sleep(0.35)
        assert coordinator.report("a", 0, 0, [], {}) == 5  # the pause is over; the cap came down by one
    finally:
        coordinator.close()
    paced = Coordinator(Limits(6, 600))
    try:
        paced.lease("a", 1)
        assert paced.report("a", 0, 0, [], {}) == 0  # an RPM to pace: each send is booked there
    finally:
        paced.close()


async def test_a_slot_freed_within_the_workers_share_goes_straight_to_its_next_request() -> None:
    """Two calls to the coordinator saved a job, and the slot's round trip: at 32 in flight and
    200 ms answers two workers kept 0.93 of the limit busy when every slot went through it."""
    from stepfun_openai.batch import _distributed

    calls: list[tuple[str, int]] = []
    lease_answers = asyncio.Event()

    async def call(method: str, worker: str, *args: Any) -> Any:
        calls.append((method, args[0]))  # a lease's want, a report's slots released
        if method == "lease":
            if len(calls) > 1:
                await lease_answers.wait()
            return time.monotonic(), [time.monotonic()] * args[0]
        return 2  # the coordinator's answer: this worker's share

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(4, None))
    await asyncio.wait_for(asyncio.gather(limiter.acquire(), limiter.acquire(), limiter.acquire()), 5)
    limiter.release()  # the share is not known yet: told to the coordinator, which answers 2
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls == [("lease", 3), ("report", 1)]
    waiting = asyncio.create_task(limiter.acquire())
    for _ in range(5):  # it waits; its lease is on its way (and is not answered yet)
        await asyncio.sleep(0)
    assert not waiting.done() and calls[-1] == ("lease", 1)
    limiter.release()  # 2 held, a share of 2: the slot goes to the waiting request, no call
    await asyncio.wait_for(waiting, 1)
    lease_answers.set()  # the lease brings a slot nobody waits for: 3 held, over the share
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls[-1] == ("report", 1)
    limiter.on_rate_limited(kind="concurrency", limit=None)
    second = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.release()  # after a 429, every slot goes back through the coordinator
    for _ in range(20):
        await asyncio.sleep(0)
    assert calls[-2:] == [("lease", 1), ("report", 1)] or calls[-2:] == [("report", 1), ("lease", 1)]
    await asyncio.wait_for(second, 1)
    await limiter.close()


async def test_counts_alone_are_reported_every_so_often_and_all_of_them_by_the_end() -> None:
    from types import SimpleNamespace

    from stepfun_openai.batch import _distributed

    reported: list[dict[str, int]] = []

    async def call(method: str, worker: str, *args: Any) -> Any:
        reported.append(args[3])  # the jobs committed since the last report
        return 0

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(4, None))
    for _ in range(20):  # a group committed every 10 ms for 0.2 s
        limiter.committed([SimpleNamespace(event={"status": "succeeded"})])  # type: ignore[list-item]
        await asyncio.sleep(0.01)
    assert 2 <= len(reported) <= 6  # one at once, then one each REPORT_EVERY (0.05 s), not 20
    await limiter.close()
    assert sum(counts.get("committed", 0) for counts in reported) == 20


async def test_a_worker_keeps_an_unused_slot_of_its_share_for_its_next_request_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stepfun_openai.batch import _distributed

    monkeypatch.setattr(_distributed, "KEEP_IDLE", 10.0)  # idle slots: the next test
    calls: list[tuple[str, int]] = []
    share = 3

    async def call(method: str, worker: str, *args: Any) -> Any:
        calls.append((method, args[0]))  # a lease's want, a report's slots released
        if method == "lease":
            return time.monotonic(), [time.monotonic()] * args[0]
        return share

    async def turns() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(4, None))
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(4))), 5)
    limiter.release()  # the share is not known yet: back to the coordinator, which answers 3
    await turns()
    assert calls == [("lease", 4), ("report", 1)]
    limiter.release()  # nobody waits: kept for the next request (3 held, a share of 3)
    await turns()
    await asyncio.wait_for(limiter.acquire(), 1)  # at once, from the kept slot: no lease
    assert calls == [("lease", 4), ("report", 1)]
    limiter.release()
    limiter.release()  # 3 held, 2 of them unused
    share = 1
    limiter.committed([])  # a report, whose answer lowers the share to 1
    await asyncio.sleep(0.1)
    await turns()
    assert calls[2:] == [("report", 0), ("report", 2)]  # the 2 unused slots past the share went back
    limiter.release()  # the last one in use: within the share, kept
    await asyncio.sleep(0.1)
    assert calls[-1] == ("report", 2)
    await limiter.close()
    assert calls[-1] == ("report", 1), calls  # and the last, kept for nothing, when the worker ends


async def test_a_kept_slot_no_request_takes_goes_back_soon(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose jobs run out gives its share back at once, not when it ends: at 64 in flight
    and 1 s answers, slots kept until then left 0.94 of the limit in use instead of 0.98."""
    from stepfun_openai.batch import _distributed

    monkeypatch.setattr(_distributed, "KEEP_IDLE", 0.5)  # 0.1 s by default: a margin for a slow machine
    calls: list[tuple[str, int]] = []

    async def call(method: str, worker: str, *args: Any) -> Any:
        calls.append((method, args[0]))
        if method == "lease":
            return time.monotonic(), [time.monotonic()] * args[0]
        return 4

    limiter = _distributed.LeasedLimiter(call, "w0", Limits(4, None))
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(3))), 5)
    limiter.release()  # told (the share is not known yet); the answer: 4
    await asyncio.sleep(0.01)
    limiter.release()
    limiter.release()  # both kept
    await asyncio.sleep(0.1)
    assert calls == [("lease", 3), ("report", 1)]
    await asyncio.sleep(1.0)
    assert calls == [("lease", 3), ("report", 1), ("report", 2)]  # unused for KEEP_IDLE: back
    await limiter.close()


def _shard_run(emulator: Any, out: str, prompts: list[str], limits: Limits, name: str = "s0") -> batch.BatchResult:
    """One worker's loop in this process, leasing from an in-process coordinator."""
    client = StepFun(api_key=emulator.api_key, base_url=emulator.base_url)
    coordinator = Coordinator(limits)
    calls = ThreadPoolExecutor(8)  # a lease blocks its thread: one for each call on its way at once

    async def call(method: str, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(calls, getattr(coordinator, method), *args)

    try:
        shard = _Shard(name, _prepare(prompts, {}), limits, _ClientRecipe.of(client), out, {})
        return asyncio.run(_run_shard(shard, call))
    finally:
        calls.shutdown()
        coordinator.close()
        client.close()


def test_a_worker_writes_every_image_with_its_provenance_to_an_fsspec_location(stepfun_emulator: Any) -> None:
    fsspec = pytest.importorskip("fsspec")
    from stepfun_openai.batch._store import open_output

    out = "memory://runs/a"
    prompts = [f"a lighthouse, take {n}" for n in range(6)]
    result = within(60, lambda: _shard_run(stepfun_emulator, out, prompts, Limits(3, None)))
    assert result.succeeded == 6 and result.generated == 6
    fs = fsspec.filesystem("memory")
    images = sorted(name for name in fs.find("/runs/a") if name.endswith(".png"))
    assert len(images) == 6
    assert {read_metadata(fs.cat(name))["prompt"] for name in images} == set(prompts)  # type: ignore[index]
    # the shard's group objects were merged into one when the worker ended
    assert [name.rsplit("/", 1)[1] for name in fs.find("/runs/a/manifest.d")] == ["s0.jsonl"]
    lines = [json.loads(line) for line in fs.cat("/runs/a/manifest.d/s0.jsonl").splitlines()]
    assert sorted(line["file"] for line in lines) == sorted(name.rsplit("/", 1)[1] for name in images)
    assert len(open_output(out).finished()) == 6  # what resume sees


def test_resume_reads_every_shard_and_the_one_process_manifest(tmp_path: Path, stepfun_emulator: Any) -> None:
    from stepfun_openai.batch._store import open_output

    client = StepFun(api_key=stepfun_emulator.api_key, base_url=stepfun_emulator.base_url)
    batch.run(["one", "two"], out=tmp_path, client=client, concurrency=2, progress=False)  # manifest.jsonl
    within(60, lambda: _shard_run(stepfun_emulator, str(tmp_path), ["three", "four"], Limits(2, None), "w1"))
    assert len(open_output(tmp_path).finished()) == 4
    stepfun_emulator.reset()
    result = within(60, lambda: _shard_run(stepfun_emulator, str(tmp_path), ["one", "four", "five"], Limits(2, None)))
    assert result.succeeded == 3  # every job runs when handed to a worker: the driver skips finished ones
    assert len(open_output(tmp_path).finished()) == 5
    client.close()


_PROCESS_SCRIPT = """
import json, sys
from stepfun_openai import StepFun, batch

if __name__ == "__main__":
    base_url, out, rpm = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    with StepFun(api_key="key", base_url=base_url) as client:
        result = batch.run_distributed(
            [f"a harbour, take {n}" for n in range(16)], out=out, workers=2, ray=False, client=client,
            concurrency=2, rpm=rpm, progress=False,
        )
    print(json.dumps({"succeeded": result.succeeded, "stopped": result.stopped}))
"""


@pytest.mark.stepfun_emulator(concurrency=2, latency=0.05)
@pytest.mark.parametrize("rpm", [1200, None], ids=["paced", "unpaced: each worker keeps its share"])
def test_local_processes_share_one_limit_when_ray_is_not_there(
    tmp_path: Path, stepfun_emulator: Any, rpm: int | None
) -> None:
    import subprocess

    script = tmp_path / "driver.py"  # spawned processes import the driver's main module: a real file
    script.write_text(_PROCESS_SCRIPT)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(script), stepfun_emulator.base_url, str(out), json.dumps(rpm)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"succeeded": 16, "stopped": None}
    stats = stepfun_emulator.stats()
    assert stats["by_status"] == {"200": 16}  # two processes, one limit of 2 in flight: no 429
    assert len(list(out.glob("*.png"))) == 16
    assert len(list((out / "manifest.d").glob("*.jsonl"))) == 2  # one shard per worker


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    client = StepFun(api_key="key", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ImportError, match=r"pip install 'stepfun-openai\[ray\]'"):
        batch.run_distributed(["x"], out=tmp_path, workers=2, ray=True, client=client, progress=False)
    client.close()


def test_the_cli_says_which_extra_when_ray_is_missing(tmp_path: Path) -> None:
    import subprocess

    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a lighthouse\n")
    code = "import sys; sys.modules['ray'] = None; from stepfun_openai.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", code, "batch", str(jobs), "--out", str(tmp_path / "o"), "--emulator", "--ray"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "pip install 'stepfun-openai[ray]'" in done.stderr


def test_workers_must_be_a_positive_integer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        batch.run_distributed(["x"], out=tmp_path, workers=0)


def test_the_cli_runs_a_batch_on_local_worker_processes(tmp_path: Path) -> None:
    import subprocess

    jobs = tmp_path / "jobs.txt"
    jobs.write_text("".join(f"a lighthouse, take {n}\n" for n in range(6)))
    out = tmp_path / "o"
    code = "import sys; sys.modules['ray'] = None; from stepfun_openai.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", code, "batch", str(jobs), "--out", str(out), "--emulator", "--workers", "2"]
    done = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "on 2 workers" in done.stderr and "6 of 6 images done" in done.stdout
    assert len(list(out.glob("*.png"))) == 6 and len(list((out / "manifest.d").glob("*.jsonl"))) == 2
    again = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "6 finished in an earlier run" in again.stdout


def test_a_workers_client_keeps_every_setting_of_the_callers() -> None:
    client = StepFun(api_key="sk-recipe", base_url="http://127.0.0.1:9/v1", region="international", fan_out=False)
    built = _ClientRecipe.of(client).build()
    assert (built.region, built.fan_out, str(built.base_url)) == ("international", False, str(client.base_url))
    client.close()


@pytest.mark.parametrize("flags", [["--max-spend", "1"], ["--dry-run"], ["--allow-partial"]])
def test_the_cli_refuses_a_budget_the_workers_would_not_keep(
    tmp_path: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from stepfun_openai.cli import main

    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a lighthouse\n")
    out = tmp_path / "o"
    code = main(["batch", str(jobs), "--out", str(out), "--emulator", "--workers", "2", *flags])
    assert code == 2
    error = capsys.readouterr().err
    assert flags[0] in error and "does not apply with --workers/--ray" in error
    assert not out.exists() or not any(out.iterdir())  # nothing sent, nothing written
