"""The request path: how close StepFun's client and its batch runner come to the OpenAI SDK's ceiling.

    python benchmarks/bench_path.py [--quick] [--scenario small,large,inflight,resume,ready] [--json PATH]
    python benchmarks/bench_path.py --profile   # cProfile of one small-scenario batch, top 15 (no numbers)

The server is ``benchmarks/fastserver.js`` (Node.js, no dependencies; ``apt-get install nodejs``),
started and stopped here: Python servers (and the emulator) are too slow to show the client's
ceiling. Compared variants are interleaved in rounds (the order rotates every round), so noise
hits them alike; the table gives medians of the rounds and medians of the per-round ratios.

1. ``small``: requests/s at concurrency 64 with a tiny PNG answer: plain ``openai.AsyncOpenAI``,
   ``AsyncStepFun``, and ``batch.arun`` (fresh out dir every round). Goals: StepFun/OpenAI >= 0.95,
   batch/StepFun >= 0.85; also CPU time per request/job.
2. ``large``: images/s at concurrency 16 with ~2 MB base64 answers: plain openai + ``b64decode`` +
   fsynced write in a thread vs the batch writing into its out dir. Goal: batch/plain >= 0.95.
3. ``inflight``: server answering after 2 s; a 2,500-job batch at ``concurrency=2000``; the server's
   maximum of requests in flight. Goal: about 2,000 (above the SDK's default pool of 1,000).
4. ``resume``: an out dir with a manifest of 50,000 finished jobs (and their files); a fresh process
   runs the same batch again. Goals: under 2 s, peak RSS no higher than a process running it.
5. ``ready``: a fresh process up to a client ready to call, StepFun vs OpenAI. Goal: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_JS = HERE / "fastserver.js"
SCENARIOS = ("small", "large", "inflight", "resume", "ready")
MODEL = "step-image-edit-2"
HUGE_RPM = 10_000_000
CALL_TIMEOUT = 120.0
"""Seconds any one timed run (a round of one variant) may take."""

# --- the server ---------------------------------------------------------------------------------


class NodeServer:
    """``fastserver.js`` in a subprocess; it exits when we close its stdin (or when we die)."""

    def __init__(self, mode: str = "small", delay_ms: int = 0) -> None:
        self.mode = mode
        self.delay_ms = delay_ms
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.info = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return self.base + "/v1"

    def __enter__(self) -> NodeServer:
        node = shutil.which("node")
        if node is None:
            raise SystemExit(
                "bench_path.py needs Node.js for its server (benchmarks/fastserver.js): "
                "install it with `apt-get install nodejs` (or from https://nodejs.org), then run again"
            )
        command = [node, str(SERVER_JS), "--port", "0", "--mode", self.mode, "--delay-ms", str(self.delay_ms)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            first, second = self._lines(2, 20.0)
            self.port, self.info = int(first), second
        except BaseException:
            self.stop()
            raise
        return self

    def _lines(self, count: int, timeout: float) -> list[str]:
        """The first ``count`` lines of the server's stdout (read unbuffered, so ``select`` is right)."""
        assert self.process is not None and self.process.stdout is not None
        fd = self.process.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while data.count(b"\n") < count:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                raise RuntimeError(f"fastserver.js did not start within {timeout:.0f} s")
            part = os.read(fd, 4096)
            if not part:
                raise RuntimeError(f"fastserver.js exited (code {self.process.poll()}) before printing its port")
            data += part
        return [line.decode().strip() for line in data.split(b"\n")[:count]]

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        with contextlib.suppress(OSError):
            if process.stdin is not None:
                process.stdin.close()  # the server exits on EOF
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/stats", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        request = urllib.request.Request(self.base + "/stats/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


# --- helpers ------------------------------------------------------------------------------------


def batch_rpm() -> int | None:
    """``rpm`` for "no RPM cap": ``None`` if concurrency alone means no cap, else a huge number."""
    try:
        from stepfun_openai.batch import resolve_limits

        limits = resolve_limits(concurrency=64, rpm=None)
    except Exception:
        return HUGE_RPM
    return None if getattr(limits, "rpm", 0) is None else HUGE_RPM


async def closed_loop(call: Callable[[int], Awaitable[None]], n: int, concurrency: int) -> None:
    """``n`` calls, ``concurrency`` at a time (each worker starts the next call when one ends)."""
    counter = iter(range(n))

    async def worker() -> None:
        for index in counter:
            await call(index)

    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))


async def timed(run: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, the run's value), bounded by ``CALL_TIMEOUT``."""
    cpu = time.process_time()
    start = time.perf_counter()
    value = await asyncio.wait_for(run(), CALL_TIMEOUT)
    return time.perf_counter() - start, time.process_time() - cpu, value


def _children_cpu() -> float:
    """CPU seconds of this process's ended child processes (the batch's writer process)."""
    times = os.times()
    return times.children_user + times.children_system


def rotate(names: list[str], round_index: int) -> list[str]:
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if values else "-"


def fresh_dir(parent: Path, name: str) -> Path:
    path = parent / name
    remove_synced(path)
    path.mkdir(parents=True)
    return path


def remove_synced(path: Path) -> None:
    """``path`` removed, and the removal flushed to disk before anything is timed: left to the
    next measurement's syncs, deleting a round's thousands of files (the file system discards
    their blocks as it commits) was billed to the next round (the batch's syncs grew 0.3 -> 0.7 ms
    of system time a job over four rounds)."""
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def check_batch(result: Any, n: int, label: str) -> None:
    if getattr(result, "succeeded", None) != n:
        failures = dict(getattr(result, "failures", {}) or {})
        raise RuntimeError(f"{label}: {getattr(result, 'succeeded', '?')} of {n} jobs succeeded ({failures})")


class Rows:
    """The final table: one row per measure."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, scenario: str, measure: str, value: str, ratio: str = "", goal: str = "") -> None:
        self.rows.append((scenario, measure, value, ratio, goal))

    def print(self) -> None:
        header = ("scenario", "measure", "value (median)", "ratio (median of rounds)", "goal")
        print("\n| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for row in self.rows:
            print("| " + " | ".join(row) + " |")


def goal_text(ratio: float, goal: float, at_least: bool) -> str:
    met = ratio >= goal if at_least else ratio <= goal
    return f"{'>=' if at_least else '<='} {goal:.2f}: {'met' if met else 'NOT met'}"


class SendMeter:
    """Requests the client has on the wire: a wrapper around ``httpx2.AsyncClient.send`` (which the
    OpenAI SDK, hence StepFun and the batch, sends every request through) counting calls under way,
    time-weighted from the first call to the last return since :meth:`reset`. It costs the same
    microsecond or so per request in every variant; it shows how many of its ``concurrency`` slots a
    runner keeps busy with HTTP (rather than with its own work)."""

    def __init__(self) -> None:
        import httpx2

        self.cls = httpx2.AsyncClient
        self.original = self.cls.send
        self.reset()
        meter = self
        original = self.original

        async def send(client: Any, request: Any, **kwargs: Any) -> Any:
            meter.change(1)
            try:
                return await original(client, request, **kwargs)
            finally:
                meter.change(-1)

        self.cls.send = send  # type: ignore[method-assign]

    def close(self) -> None:
        self.cls.send = self.original  # type: ignore[method-assign]

    def reset(self) -> None:
        self.now = 0
        self.area = 0.0
        self.first: float | None = None
        self.last = 0.0
        self.end: float | None = None

    def change(self, delta: int) -> None:
        at = time.perf_counter()
        if self.first is None:
            self.first = at
        else:
            self.area += self.now * (at - self.last)
        self.last = at
        self.now += delta
        if delta < 0:
            self.end = at

    def mean(self) -> float:
        if self.first is None or self.end is None or self.end <= self.first:
            return 0.0
        return self.area / (self.end - self.first)


class Measures:
    """Per variant and round: rate, CPU per item, mean requests in flight (client side), the
    server's CPU share, requests the server saw and connections it accepted."""

    FIELDS = ("rate", "cpu_ms", "child_cpu_ms", "in_flight", "server_cpu", "requests", "connections")

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.values: dict[str, dict[str, list[float]]] = {n: {f: [] for f in self.FIELDS} for n in names}

    async def run(
        self, name: str, n: int, server: NodeServer, meter: SendMeter, go: Callable[[], Awaitable[Any]]
    ) -> None:
        server.reset()
        before = server.stats()["cpu_seconds"]
        meter.reset()
        children = _children_cpu()
        wall, cpu, _ = await timed(go)
        children = _children_cpu() - children  # the batch's writer process, once it has ended
        stats = server.stats()
        row = self.values[name]
        row["rate"].append(n / wall)
        row["cpu_ms"].append(cpu / n * 1000)
        row["child_cpu_ms"].append(children / n * 1000)
        row["in_flight"].append(meter.mean())
        row["server_cpu"].append((stats["cpu_seconds"] - before) / wall)
        row["requests"].append(stats["requests"])
        row["connections"].append(stats["accepted"])

    def __getitem__(self, name: str) -> dict[str, list[float]]:
        return self.values[name]

    def last(self, name: str, digits: int) -> str:
        row = self.values[name]
        child = f" + {row['child_cpu_ms'][-1]:.3f} ms in child processes" if row["child_cpu_ms"][-1] else ""
        return (
            f"{name} {row['rate'][-1]:.{digits}f}/s ({row['cpu_ms'][-1]:.3f} ms CPU{child}, "
            f"{row['in_flight'][-1]:.1f} in flight, server CPU {row['server_cpu'][-1]:.0%})"
        )

    def summary(self, name: str, digits: int) -> str:
        row = self.values[name]
        child = median(row["child_cpu_ms"])
        return (
            f"{median(row['rate']):.{digits}f}/s; {median(row['cpu_ms']):.3f} ms CPU each"
            + (f" (+ {child:.3f} ms in the writer process)" if child else "")
            + "; "
            f"{median(row['in_flight']):.1f} in flight; server CPU {median(row['server_cpu']):.0%}"
        )

    def ratios(self, top: str, bottom: str) -> list[float]:
        return [a / b for a, b in zip(self.values[top]["rate"], self.values[bottom]["rate"], strict=True)]


# --- 1. small -----------------------------------------------------------------------------------


async def scenario_small(args: argparse.Namespace, rows: Rows, report: dict[str, Any], work: Path) -> None:
    import openai

    import stepfun_openai
    from stepfun_openai import batch

    n = args.small_n or (600 if args.quick else 3000)
    rounds = args.rounds or (3 if args.quick else 5)
    concurrency = 64
    rpm = batch_rpm()
    names = ["openai", "stepfun", "batch"]
    measures = Measures(names)
    meter = SendMeter()
    try:
        with NodeServer("small") as server:
            plain = openai.AsyncOpenAI(api_key="x", base_url=server.api)
            ours = stepfun_openai.AsyncStepFun(api_key="x", base_url=server.api)
            runner_client = stepfun_openai.AsyncStepFun(api_key="x", base_url=server.api)

            async def call_plain(index: int) -> None:
                await plain.images.generate(
                    model=MODEL, prompt="a cat", response_format="b64_json", extra_body={"seed": 1}
                )

            async def call_ours(index: int) -> None:
                await ours.images.generate(model=MODEL, prompt="a cat", response_format="b64_json")

            async def run_batch(out: Path, jobs: list[str]) -> None:
                result = await batch.arun(
                    jobs, out=out, client=runner_client, concurrency=concurrency, rpm=rpm, progress=False
                )
                check_batch(result, len(jobs), "small batch")

            async def variant(name: str, count: int, tag: str, record: bool = True) -> None:
                if name == "batch":
                    out = fresh_dir(work, "small-batch")  # made before, removed after the timing
                    jobs = [f"a cat {tag}-{i}" for i in range(count)]

                    def go() -> Awaitable[None]:
                        return run_batch(out, jobs)
                else:
                    call = call_plain if name == "openai" else call_ours

                    def go() -> Awaitable[None]:
                        return closed_loop(call, count, concurrency)

                if record:
                    await measures.run(name, count, server, meter, go)
                else:
                    await asyncio.wait_for(go(), CALL_TIMEOUT)
                if name == "batch":
                    remove_synced(out)

            for name in names:  # warm-up: connections, lazy imports, caches
                await variant(name, 256, "warm", record=False)
            deadline = time.monotonic() + (60 if args.quick else 150)
            for round_index in range(rounds):
                if round_index and time.monotonic() > deadline:
                    print(f"  small: time budget spent after {round_index} rounds")
                    break
                for name in rotate(names, round_index):
                    await variant(name, n, f"r{round_index}")
                print(
                    f"  small round {round_index + 1}: " + ", ".join(measures.last(name, 0) for name in names),
                    flush=True,
                )
            await plain.close()
            await ours.close()
            await runner_client.close()
    finally:
        meter.close()

    sf_over_oa = measures.ratios("stepfun", "openai")
    batch_over_sf = measures.ratios("batch", "stepfun")
    report["small"] = {
        "n_per_round": n,
        "concurrency": concurrency,
        "rpm": rpm,
        "measures": measures.values,
        "stepfun_over_openai": sf_over_oa,
        "batch_over_stepfun": batch_over_sf,
    }
    label = f"{len(sf_over_oa)} rounds x {n}, concurrency {concurrency}"
    for name, title in (("openai", "plain AsyncOpenAI"), ("stepfun", "AsyncStepFun"), ("batch", "batch.arun")):
        rows.add("small", f"{title}, requests/s ({label})", measures.summary(name, 0))
    ratio = median(sf_over_oa)
    rows.add("small", "StepFun / OpenAI", "", f"**{ratio:.3f}** ({spread(sf_over_oa)})", goal_text(ratio, 0.95, True))
    ratio = median(batch_over_sf)
    rows.add("small", "batch / StepFun", "", f"**{ratio:.3f}** ({spread(batch_over_sf)})", goal_text(ratio, 0.85, True))


# --- 2. large -----------------------------------------------------------------------------------


async def scenario_large(args: argparse.Namespace, rows: Rows, report: dict[str, Any], work: Path) -> None:
    import base64

    import openai

    import stepfun_openai
    from stepfun_openai import batch

    n = args.large_n or (96 if args.quick else 320)
    rounds = args.rounds or (3 if args.quick else 5)
    concurrency = 16
    rpm = batch_rpm()
    names = ["plain", "batch"]
    measures = Measures(names)
    meter = SendMeter()
    try:
        with NodeServer("large") as server:
            print(f"  large server: {server.info}")
            info = server.info
            plain = openai.AsyncOpenAI(api_key="x", base_url=server.api)
            runner_client = stepfun_openai.AsyncStepFun(api_key="x", base_url=server.api)

            async def run_plain(out: Path, count: int) -> None:
                async def call(index: int) -> None:
                    response = await plain.images.generate(
                        model=MODEL, prompt="a cat", response_format="b64_json", extra_body={"seed": index + 1}
                    )
                    data = base64.b64decode(response.data[0].b64_json or "")
                    await asyncio.to_thread(write_synced, out / f"{index}.png", data)

                await closed_loop(call, count, concurrency)

            async def run_batch(out: Path, jobs: list[str]) -> None:
                result = await batch.arun(
                    jobs, out=out, client=runner_client, concurrency=concurrency, rpm=rpm, progress=False
                )
                check_batch(result, len(jobs), "large batch")

            async def variant(name: str, count: int, tag: str, record: bool = True) -> None:
                out = fresh_dir(work, f"large-{name}")  # made before, removed after the timing
                jobs = [f"a cat {tag}-{i}" for i in range(count)]

                def go() -> Awaitable[None]:
                    return run_plain(out, count) if name == "plain" else run_batch(out, jobs)

                if record:
                    await measures.run(name, count, server, meter, go)
                else:
                    await asyncio.wait_for(go(), CALL_TIMEOUT)
                written = sum(1 for entry in out.iterdir() if entry.suffix == ".png")
                shutil.rmtree(out, ignore_errors=True)
                if written != count:
                    raise RuntimeError(f"large {name}: {written} images written of {count}")

            for name in names:
                await variant(name, 32, "warm", record=False)
            deadline = time.monotonic() + (40 if args.quick else 100)
            for round_index in range(rounds):
                if round_index and time.monotonic() > deadline:
                    print(f"  large: time budget spent after {round_index} rounds")
                    break
                for name in rotate(names, round_index):
                    await variant(name, n, f"r{round_index}")
                print(
                    f"  large round {round_index + 1}: " + ", ".join(measures.last(name, 1) for name in names),
                    flush=True,
                )
            await plain.close()
            await runner_client.close()
    finally:
        meter.close()

    ratios = measures.ratios("batch", "plain")
    report["large"] = {
        "n_per_round": n,
        "concurrency": concurrency,
        "server": info,
        "measures": measures.values,
        "batch_over_plain": ratios,
    }
    label = f"{len(ratios)} rounds x {n}, concurrency {concurrency}"
    rows.add("large", f"plain openai + b64decode + fsynced write, images/s ({label})", measures.summary("plain", 1))
    rows.add("large", f"batch.arun, images/s ({label})", measures.summary("batch", 1))
    ratio = median(ratios)
    rows.add("large", "batch / plain", "", f"**{ratio:.3f}** ({spread(ratios)})", goal_text(ratio, 0.95, True))


# --- 3. in flight -------------------------------------------------------------------------------


def raise_nofile() -> tuple[int, int, int]:
    """The open-file limit raised to its hard limit: (soft before, soft after, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard


async def scenario_inflight(args: argparse.Namespace, rows: Rows, report: dict[str, Any], work: Path) -> None:
    import stepfun_openai
    from stepfun_openai import batch

    n, concurrency, delay_ms = 2500, 2000, 2000
    before, after, hard = raise_nofile()
    note = f"RLIMIT_NOFILE soft {before} -> {after} (hard {hard})"
    print(f"  inflight: {note}")
    with NodeServer("small", delay_ms=delay_ms) as server:
        client = stepfun_openai.AsyncStepFun(api_key="x", base_url=server.api)
        out = fresh_dir(work, "inflight")
        jobs = [f"a cat in flight {i}" for i in range(n)]
        server.reset()
        error = None
        try:
            wall, _, result = await timed(
                lambda: asyncio.wait_for(
                    batch.arun(jobs, out=out, client=client, concurrency=concurrency, rpm=HUGE_RPM, progress=False),
                    120,
                )
            )
        except (asyncio.TimeoutError, TimeoutError):
            wall, result, error = float("nan"), None, "timed out after 120 s"
        stats = server.stats()
        await client.close()
        shutil.rmtree(out, ignore_errors=True)
    succeeded = getattr(result, "succeeded", 0)
    failures = dict(getattr(result, "failures", {}) or {})
    report["inflight"] = {
        "jobs": n,
        "concurrency": concurrency,
        "delay_ms": delay_ms,
        "nofile": {"before": before, "after": after, "hard": hard},
        "server": stats,
        "wall": wall,
        "succeeded": succeeded,
        "failures": failures,
        "error": error,
    }
    outcome = f"{succeeded} of {n} succeeded" + (f", failures {failures}" if failures else "") + (error or "")
    rows.add(
        "inflight",
        f"max requests in flight at the server ({n} jobs, concurrency={concurrency}, {delay_ms} ms answers; {note})",
        f"**{stats['max_in_flight']}** (max connections {stats['max_connections']}; {wall:.1f} s; {outcome})",
        "",
        f"~{concurrency}: {'met' if stats['max_in_flight'] >= 0.95 * concurrency else 'NOT met'}",
    )


# --- 4. resume ----------------------------------------------------------------------------------

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import asyncio
import stepfun_openai
from stepfun_openai import batch
args = json.loads(sys.argv[1])
jobs = [f"resume job {i}" for i in range(args["n"])]
client = stepfun_openai.AsyncStepFun(api_key="x", base_url=args["api"])
rpm = None if args["rpm"] is None else int(args["rpm"])

marks = {}

async def main():
    began = time.perf_counter()
    try:
        return await asyncio.wait_for(
            batch.arun(jobs, out=args["out"], client=client, concurrency=64, rpm=rpm, progress=False), args["cap"]
        )
    except (asyncio.TimeoutError, TimeoutError):
        return None
    finally:
        marks["arun_seconds"] = time.perf_counter() - began  # with a cap: the cap plus the stop
        await client.close()
        marks["closed_at"] = time.perf_counter()

def peak_rss_kb():
    # VmHWM: the peak RSS of this process's own memory. ru_maxrss is not: Linux carries the
    # parent's RSS at fork over the exec, so a child of a large parent reports at least that.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

run_start = time.perf_counter()
result = asyncio.run(main())
end = time.perf_counter()
print(json.dumps({
    "run_seconds": end - run_start,
    "process_seconds": end - start,
    "maxrss_kb": peak_rss_kb(),
    "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "arun_seconds": marks.get("arun_seconds"),
    "loop_shutdown_seconds": end - marks["closed_at"] if "closed_at" in marks else None,
    "capped": result is None,
    "total": getattr(result, "total", None),
    "skipped": getattr(result, "skipped", None),
    "succeeded": getattr(result, "succeeded", None),
    "generated": getattr(result, "generated", None),
}))
"""


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STEPFUN_"))}


def run_child(api: str, out: Path, n: int, cap: float, rpm: int | None) -> dict[str, Any]:
    payload = json.dumps({"api": api, "out": str(out), "n": n, "cap": cap, "rpm": rpm})
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, payload],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=cap + 120,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = done.stdout.strip().splitlines()[-1]
    value: dict[str, Any] = json.loads(line)
    value["wall_seconds"] = wall
    return value


def job_ids(prompts: list[str]) -> list[str]:
    """The ids the batch gives these jobs (its own code, so they match whatever it computes)."""
    try:
        from stepfun_openai.batch import _jobs
    except ImportError as exc:
        raise SystemExit(f"resume: cannot import stepfun_openai.batch._jobs to compute job ids ({exc})") from exc
    prepare = getattr(_jobs, "_prepare", None) or getattr(_jobs, "prepare", None)
    if prepare is not None:
        try:
            return [work.id for work in prepare(prompts, {})]
        except Exception as exc:
            print(f"  resume: _jobs._prepare failed ({exc!r}); trying content_id")
    content_id = getattr(_jobs, "content_id", None)
    models = getattr(_jobs, "DEFAULT_MODELS", None)
    if content_id is None or models is None:
        raise SystemExit(
            "resume: stepfun_openai.batch._jobs has neither _prepare nor content_id/DEFAULT_MODELS; "
            "update job_ids() in benchmarks/bench_path.py to the new way of computing job ids"
        )
    return [content_id("generate", {"prompt": p, "model": models["generate"]}) for p in prompts]


def complete_manifest(out: Path, prompts: list[str]) -> dict[str, int]:
    """Append a finished line (and write a file) for every job the manifest lacks, copying a line
    the batch itself wrote, so the format is the batch's own."""
    manifest = out / "manifest.jsonl"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    finished = {e["id"] for e in events if e.get("status") == "succeeded"}
    template = next((e for e in events if e.get("status") == "succeeded" and e.get("file")), None)
    if template is None:
        raise SystemExit(f"resume: the first run wrote no succeeded line with a file in {manifest}; nothing to copy")
    image = (out / template["file"]).read_bytes()
    ids = job_ids(prompts)
    missing = set(ids) - {e["id"] for e in events}
    if not finished & set(ids):
        raise SystemExit("resume: the ids computed here do not match the manifest's; update job_ids()")
    added = 0
    with open(manifest, "a", encoding="utf-8") as handle:
        for index, (prompt, job_id) in enumerate(zip(prompts, ids, strict=True)):
            if job_id in finished:
                continue
            event = dict(template)
            seed = index + 1
            event.update(
                id=job_id,
                index=index,
                params={**template["params"], "prompt": prompt, "seed": seed},
                seed=seed,
                file=(
                    template["file"].replace(template["id"], job_id)
                    if template["id"] in template["file"]
                    else f"{job_id}.png"
                ),
                trace_id=f"synthetic{index:08d}",
            )
            handle.write(json.dumps(event, ensure_ascii=False) + "\n")
            (out / event["file"]).write_bytes(image)
            added += 1
    return {"from_batch": len(finished), "synthesised": added, "missing_before": len(missing)}


async def scenario_resume(args: argparse.Namespace, rows: Rows, report: dict[str, Any], work: Path) -> None:
    n = args.resume_n or 50_000
    cap = 10.0 if args.quick else 45.0
    rpm = batch_rpm()
    prompts = [f"resume job {i}" for i in range(n)]
    with NodeServer("small") as server:
        out = fresh_dir(work, "resume")
        # The first run, for real (a fresh process), capped in time: its peak memory is the
        # comparison, and the lines it writes are the template for the jobs it did not reach.
        first = run_child(server.api, out, n, cap, rpm)
        if first["capped"]:
            first["stop_seconds"] = first["arun_seconds"] - cap  # from the cancellation to arun's return
        print(f"  resume: first run {first}")
        start = time.perf_counter()
        made = complete_manifest(out, prompts)
        print(f"  resume: manifest completed in {time.perf_counter() - start:.1f} s: {made}")
        server.reset()
        resumed = run_child(server.api, out, n, 120.0, rpm)
        resumed["server_requests"] = server.stats()["requests"]
        print(f"  resume: resumed run {resumed}")
        shutil.rmtree(out, ignore_errors=True)
    report["resume"] = {"jobs": n, "first": first, "manifest": made, "resumed": resumed}
    first_label = f"first run of the same {n:,} jobs, fresh process, to the end"
    if first["capped"]:
        first_label = (
            f"first run of the same {n:,} jobs, fresh process, stopped after {cap:.0f} s "
            f"(manifest then completed: {made['from_batch']:,} lines by the batch, {made['synthesised']:,} copied)"
        )
    rows.add(
        "resume",
        first_label,
        f"peak RSS {first['maxrss_kb'] / 1024:.1f} MB",
    )
    skipped_ok = resumed["skipped"] == n and resumed["generated"] == 0 and resumed["server_requests"] == 0
    rows.add(
        "resume",
        f"resume, all {n:,} finished (fresh process; skipped {resumed['skipped']}, "
        f"generated {resumed['generated']}, requests {resumed['server_requests']})",
        f"run() **{resumed['run_seconds']:.2f} s**, whole process {resumed['wall_seconds']:.2f} s, "
        f"peak RSS {resumed['maxrss_kb'] / 1024:.1f} MB",
        f"RSS {resumed['maxrss_kb'] / first['maxrss_kb']:.2f}x the first run's",
        f"< 2 s: {'met' if resumed['run_seconds'] < 2 and skipped_ok else 'NOT met'}; RSS <= first run: "
        f"{'met' if resumed['maxrss_kb'] <= first['maxrss_kb'] else 'NOT met'}",
    )


# --- 5. ready -----------------------------------------------------------------------------------

READY = {
    "stepfun": "from stepfun_openai import StepFun; StepFun(api_key='x').images",
    "openai": "from openai import OpenAI; OpenAI(api_key='x').images",
}


async def scenario_ready(args: argparse.Namespace, rows: Rows, report: dict[str, Any], work: Path) -> None:
    runs = args.ready_runs or (7 if args.quick else 15)
    env = child_env()
    times: dict[str, list[float]] = {name: [] for name in READY}
    cpu: dict[str, list[float]] = {name: [] for name in READY}
    for code in READY.values():  # warm the OS file cache once
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    for index in range(runs):
        for name in rotate(list(READY), index):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", READY[name]], env=env, check=True, timeout=60)
            times[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    ratios = [s / o for s, o in zip(times["stepfun"], times["openai"], strict=True)]
    report["ready"] = {"runs": runs, "seconds": times, "cpu_seconds": cpu, "ratios": ratios}
    for name in READY:
        rows.add(
            "ready",
            f'`python -c "{READY[name]}"` ({runs} runs)',
            f"{median(times[name]) * 1000:.1f} ms wall, {median(cpu[name]) * 1000:.1f} ms CPU",
        )
    ratio = median(times["stepfun"]) / median(times["openai"])
    cpu_ratio = median(cpu["stepfun"]) / median(cpu["openai"])
    rows.add(
        "ready",
        "StepFun / OpenAI",
        "",
        f"**{ratio:.3f}** wall (pairs {spread(ratios)}); {cpu_ratio:.3f} CPU",
        goal_text(ratio, 1.10, False),
    )


# --- profile ------------------------------------------------------------------------------------


async def profile_batch(args: argparse.Namespace, work: Path) -> None:
    import cProfile
    import pstats

    import stepfun_openai
    from stepfun_openai import batch

    n = args.small_n or 3000
    with NodeServer("small") as server:
        client = stepfun_openai.AsyncStepFun(api_key="x", base_url=server.api)
        rpm = batch_rpm()
        warm = fresh_dir(work, "profile-warm")
        await batch.arun(
            [f"warm {i}" for i in range(256)], out=warm, client=client, concurrency=64, rpm=rpm, progress=False
        )
        out = fresh_dir(work, "profile")
        jobs = [f"a cat {i}" for i in range(n)]
        profiler = cProfile.Profile()
        cpu, main_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        profiler.enable()
        result = await batch.arun(jobs, out=out, client=client, concurrency=64, rpm=rpm, progress=False)
        profiler.disable()
        cpu, main_cpu = time.process_time() - cpu, time.thread_time() - main_cpu
        wall = time.perf_counter() - wall
        check_batch(result, n, "profile")
        await client.close()
    print(
        f"one batch.arun of {n} jobs, concurrency 64, under cProfile: {wall:.2f} s wall, {cpu:.2f} s CPU "
        f"of which {main_cpu:.2f} s on the event loop's thread (cProfile sees only that one)"
    )
    print("(coroutines count one call per resumption in ncalls)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(15)
    print("the package's own functions, by cumulative time:")
    stats.sort_stats("cumulative").print_stats("stepfun_openai", 30)
    print("by internal time:")
    stats.sort_stats("tottime").print_stats(20)


# --- main ---------------------------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    import openai

    import stepfun_openai

    commit = ""
    package_dir = Path(stepfun_openai.__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "-C", str(package_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.platform(),
        "openai": openai.__version__,
        "node": node,
        "stepfun_openai": str(package_dir),
        "commit": commit,
    }


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-path-", dir=tempfile.gettempdir()))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument(
        "--scenario", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--rounds", type=int, default=0, help="rounds of the small and large scenarios")
    parser.add_argument("--small-n", type=int, default=0, help="requests per variant and round (small)")
    parser.add_argument("--large-n", type=int, default=0, help="images per variant and round (large)")
    parser.add_argument("--resume-n", type=int, default=0, help="jobs in the resumed batch (default 50,000)")
    parser.add_argument("--ready-runs", type=int, default=0, help="fresh processes per variant (ready)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--profile", action="store_true", help="only: cProfile one small-scenario batch")
    args = parser.parse_args()
    chosen = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if shutil.which("node") is None:
        raise SystemExit("bench_path.py needs Node.js (node) for its server: install it with `apt-get install nodejs`")

    machine = describe_machine()
    print(
        f"CPython {machine['python']} {machine['machine']}, {machine['cpus']} CPUs, openai {machine['openai']}, "
        f"node {machine['node']}; stepfun_openai from {machine['stepfun_openai']} (commit {machine['commit'] or '?'})"
    )
    functions = {
        "small": scenario_small,
        "large": scenario_large,
        "inflight": scenario_inflight,
        "resume": scenario_resume,
        "ready": scenario_ready,
    }
    rows = Rows()
    report: dict[str, Any] = {"machine": machine, "quick": args.quick, "argv": sys.argv[1:]}
    started = time.perf_counter()
    with workdir() as work:
        if args.profile:
            asyncio.run(profile_batch(args, work))
            return
        for name in chosen:
            print(f"{name} ...", flush=True)
            scenario_start = time.perf_counter()
            asyncio.run(functions[name](args, rows, report, work))
            report.setdefault("seconds", {})[name] = time.perf_counter() - scenario_start
            print(f"{name}: {time.perf_counter() - scenario_start:.1f} s", flush=True)
    report["total_seconds"] = time.perf_counter() - started
    rows.print()
    print(f"\ntotal {report['total_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"raw numbers in {args.json}")


if __name__ == "__main__":
    main()
