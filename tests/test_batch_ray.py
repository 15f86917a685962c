"""The batch on Ray: a local Ray of 2 CPUs on loopback, started once for the module, against the
emulator (with its account limits) and an S3-compatible server on loopback (moto's server mode).

Skipped where Ray is not installed; CI installs it (the ``test`` extra).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # read when ray is imported: with the node address, loopback only
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "AWS_EC2_METADATA_DISABLED": "true",  # botocore never looks for an instance's metadata server
    "AWS_DEFAULT_REGION": "us-east-1",
}
for _name, _value in _RAY_ENV.items():
    os.environ.setdefault(_name, _value)

ray = pytest.importorskip("ray")

from stepfun_openai import StepFun, batch  # noqa: E402
from stepfun_openai._metadata import read_metadata  # noqa: E402
from stepfun_openai.batch._store import open_output  # noqa: E402
from tests._hostile import within  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray for the module, on 127.0.0.1 only (Ray binds the machine's address by default),
    its files in a short folder (its unix socket paths must stay under 107 characters)."""
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp,
        log_to_driver=False,
        namespace="stepfun-tests",
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _client(emulator: Any) -> StepFun:
    return StepFun(api_key=emulator.api_key, base_url=emulator.base_url)


def _prompts(count: int, what: str = "a lighthouse") -> list[str]:
    return [f"{what}, take {number}" for number in range(count)]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo += children.get(pid, [])
    return found


def _is_loopback(local_address: str) -> bool:
    """``127.0.0.1:80``, ``[::ffff:127.0.0.1]:80`` or ``[::1]:80``; ``*:80`` (every address) is not."""
    host = local_address.rsplit(":", 1)[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_the_local_ray_listens_on_loopback_only(local_ray: Any) -> None:
    if shutil.which("ss") is None:
        pytest.skip("no ss on this machine")
    ours = _descendants(os.getpid())
    listening = []
    for line in subprocess.run(["ss", "-tlnpH"], capture_output=True, text=True, timeout=30).stdout.splitlines():
        pids = {int(pid) for pid in re.findall(r"pid=(\d+)", line)}
        if pids & ours:
            listening.append(line)
    assert len(listening) >= 2  # the GCS, the raylet, the workers' servers ...
    assert all(_is_loopback(line.split()[3]) for line in listening), "\n".join(listening)


def _fast_clock(speed: float) -> Any:
    start = time.time()
    return lambda: start + (time.time() - start) * speed


def test_two_workers_share_one_account_limit(local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path) -> None:
    # The emulator's minute lasts 3 s (a clock 20 times as fast) and holds 30 requests: 600 a real
    # minute, and 4 in flight. Two workers at the account's 570/minute and 4 in flight together stay
    # under it; two that each kept the whole limit would send twice that, and see 429s.
    emulator = stepfun_emulator_factory(concurrency=4, rpm=30, latency=0.4, clock=_fast_clock(20))
    client = _client(emulator)
    started = time.monotonic()
    result = within(
        120,
        lambda: batch.run_distributed(
            _prompts(40), out=tmp_path, workers=2, client=client, concurrency=4, rpm=570, progress=False
        ),
    )
    elapsed = time.monotonic() - started
    stats = emulator.stats()
    assert result.succeeded == 40 and result.stopped is None
    assert stats["by_status"].get("429", 0) == 0, stats
    assert result.rate_limited == 0
    shards = sorted((tmp_path / "manifest.d").glob("*.jsonl"))
    assert len(shards) == 2 and all(shard.read_text().count("\n") >= 10 for shard in shards)  # both worked
    assert elapsed >= 40 / (570 / 60) * 0.9  # paced at the account's rate, not at twice it
    client.close()


def _kill_when(condition: Any, kill: Any, timeout: float = 60) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                kill()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _our_actors() -> list[str]:
    return [name for name in ray.util.list_named_actors() if name.startswith("stepfun-batch-")]


def _images_and_prompts(out: Path) -> dict[str, str]:
    return {path.name: read_metadata(path.read_bytes())["prompt"] for path in out.glob("*.png")}  # type: ignore[index]


def test_a_killed_worker_loses_nothing_when_the_batch_runs_again(
    local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = stepfun_emulator_factory(concurrency=4, latency=0.3)
    client = _client(emulator)
    prompts = _prompts(48, "a harbour")

    def kill_one_worker() -> None:
        worker = sorted(name for name in _our_actors() if name.endswith("-w1"))[0]
        ray.kill(ray.get_actor(worker))

    watcher = _kill_when(lambda: emulator.stats()["requests"] >= 12, kill_one_worker)
    first = within(
        120,
        lambda: batch.run_distributed(prompts, out=tmp_path, workers=2, client=client, concurrency=4, progress=False),
    )
    watcher.join(5)
    assert first.stopped is not None and "died" in first.stopped
    assert 0 < first.succeeded < 48
    again = within(
        120,
        lambda: batch.run_distributed(prompts, out=tmp_path, workers=2, client=client, concurrency=4, progress=False),
    )
    assert again.succeeded == 48 and again.stopped is None
    assert again.skipped >= first.succeeded  # the survivor's jobs and the dead one's recorded ones
    assert sorted(_images_and_prompts(tmp_path).values()) == sorted(prompts)  # every image, with provenance
    # Images made twice: at most the dead worker's jobs in flight (one a task, 4 tasks). Its abandoned
    # requests still held the emulator's slots for a moment, so a 429 or two may come on top.
    assert emulator.stats()["by_status"]["200"] <= 48 + 4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    client.close()


_DRIVER = """
import sys
import ray
from stepfun_openai import StepFun, batch

ray.init(address=sys.argv[1], _node_ip_address="127.0.0.1", namespace="stepfun-tests", log_to_driver=False)
with StepFun(api_key="key", base_url=sys.argv[2]) as client:
    prompts = [f"a meadow, take {n}" for n in range(int(sys.argv[4]))]
    batch.run_distributed(prompts, out=sys.argv[3], workers=2, client=client, concurrency=4, progress=False)
"""


def _recorded(out: Path) -> int:
    return sum(path.read_text().count("\n") for path in (out / "manifest.d").glob("*.jsonl"))


def test_a_killed_driver_loses_nothing_when_the_batch_runs_again(
    local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = stepfun_emulator_factory(concurrency=4, latency=0.3)
    out = tmp_path / "out"
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    address = ray.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [sys.executable, str(script), address, emulator.base_url, str(out), "48"],
        env={**os.environ, **_RAY_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and driver.poll() is None:
            if (out / "manifest.d").is_dir() and _recorded(out) >= 10:
                break
            time.sleep(0.05)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:] if driver.stderr else ""
        os.killpg(driver.pid, signal.SIGKILL)  # the driver, without a chance to clean up
        driver.wait(10)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        if driver.stderr:
            driver.stderr.close()
    deadline = time.monotonic() + 60
    while _our_actors() and time.monotonic() < deadline:  # Ray ends the dead driver's workers
        time.sleep(0.2)
    assert not _our_actors()
    recorded = _recorded(out)
    assert 10 <= recorded < 48
    client = _client(emulator)
    prompts = [f"a meadow, take {n}" for n in range(48)]
    again = within(
        120, lambda: batch.run_distributed(prompts, out=out, workers=2, client=client, concurrency=4, progress=False)
    )
    assert again.succeeded == 48 and again.skipped >= recorded
    assert sorted(_images_and_prompts(out).values()) == sorted(prompts)
    assert emulator.stats()["by_status"]["200"] <= 48 + 4  # made twice: at most the jobs in flight
    client.close()


def test_every_image_reaches_an_s3_server_on_loopback(
    local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path
) -> None:
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": f"http://{host}:{port}"},
        }
        fs = s3fs.S3FileSystem(**options)
        fs.mkdir("images")
        emulator = stepfun_emulator_factory(concurrency=4)
        client = _client(emulator)
        prompts = _prompts(12, "a glacier")
        run = lambda: batch.run_distributed(  # noqa: E731
            prompts,
            out="s3://images/run1",
            storage_options=options,
            workers=2,
            client=client,
            concurrency=4,
            progress=False,
        )
        result = within(120, run)
        assert result.succeeded == 12 and result.location == "s3://images/run1"
        fs.invalidate_cache()
        images = fs.glob("images/run1/*.png")
        assert len(images) == 12
        assert sorted(read_metadata(fs.cat(name))["prompt"] for name in images) == sorted(prompts)  # type: ignore[index]
        shards = fs.ls("images/run1/manifest.d", detail=False)
        assert len(shards) == 2 and all(name.endswith(".jsonl") for name in shards)  # merged, one per worker
        lines = [json.loads(line) for name in shards for line in fs.cat(name).splitlines()]
        assert sorted(line["file"] for line in lines) == sorted(name.rsplit("/", 1)[1] for name in images)
        assert len(open_output("s3://images/run1", options).finished()) == 12
        again = within(120, run)  # resume reads the shards from S3: nothing left to do
        assert again.skipped == 12 and emulator.stats()["requests"] == 12
        with pytest.raises(FileNotFoundError, match=r"\('no-such-bucket'\) does not exist"):
            batch.run_distributed(prompts, out="s3://no-such-bucket/x", storage_options=options, client=client)
        assert not fs.exists("no-such-bucket")  # not created behind the user's back
        client.close()
    finally:
        server.stop()


def test_more_workers_than_cpus_start_as_cpus_free(
    local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path
) -> None:
    emulator = stepfun_emulator_factory(concurrency=4)
    client = _client(emulator)
    prompts = _prompts(24, "a dune")
    result = within(
        120,
        lambda: batch.run_distributed(prompts, out=tmp_path, workers=3, client=client, concurrency=4, progress=False),
    )
    assert result.succeeded == 24 and result.stopped is None  # the third worker ran when a CPU freed
    assert len(list((tmp_path / "manifest.d").glob("*.jsonl"))) == 3
    client.close()


def test_workers_that_never_get_a_cpu_end_the_batch_with_their_jobs_pending(
    local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stepfun_openai.batch import _distributed

    monkeypatch.setattr(_distributed, "WORKER_START_TIMEOUT", 2.0)

    @ray.remote(num_cpus=2)
    class Hog:  # holds every CPU of the module's Ray
        def ready(self) -> bool:
            return True

    hog = Hog.remote()  # type: ignore[attr-defined]
    ray.get(hog.ready.remote(), timeout=60)
    emulator = stepfun_emulator_factory(concurrency=4)
    client = _client(emulator)
    prompts = _prompts(8, "a mesa")
    run = lambda: batch.run_distributed(  # noqa: E731
        prompts, out=tmp_path, workers=2, client=client, concurrency=4, progress=False
    )
    try:
        first = within(60, run)
    finally:
        ray.kill(hog)
    assert first.stopped is not None and "did not start within 2 s" in first.stopped
    assert first.succeeded == 0 and first.pending == 8 and emulator.stats()["requests"] == 0
    monkeypatch.undo()  # the workers' processes take their time to start: the default wait
    again = within(60, run)
    assert again.succeeded == 8
    client.close()


def test_jobs_can_come_from_a_ray_dataset(local_ray: Any, stepfun_emulator_factory: Any, tmp_path: Path) -> None:
    data = pytest.importorskip("ray.data")
    emulator = stepfun_emulator_factory(concurrency=4)
    client = _client(emulator)
    rows = [{"prompt": f"a pier, take {n}", "seed": 100 + n, "size": "768x1360"} for n in range(6)]
    result = within(
        120,
        lambda: batch.run_distributed(
            data.from_items(rows), out=tmp_path, workers=2, client=client, concurrency=4, progress=False
        ),
    )
    assert result.succeeded == 6
    made = [read_metadata(path.read_bytes()) for path in tmp_path.glob("*.png")]
    assert sorted((m["prompt"], m["seed"], m["size"]) for m in made) == sorted(  # type: ignore[index]
        (row["prompt"], row["seed"], row["size"]) for row in rows
    )
    client.close()
