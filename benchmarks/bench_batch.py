"""Batch throughput at the account's limits, against the emulator (a few minutes).

    /work/venv/bin/python benchmarks/bench_batch.py [--jobs 200] [--rpm-jobs 200] [--quick]

1. Concurrency-bound: emulator with concurrency 5 and latency 0.5 s (at most 600 images/minute).
   ``batch.arun`` vs. a sequential loop (sync client) vs. a plain ``asyncio.gather`` over
   ``AsyncStepFun``: images/minute as a fraction of 600, failed jobs, 429s.
2. RPM-bound: the same emulator with rpm 120: the fraction of 120/minute, failed jobs, 429s.
3. Resume: the CLI in a subprocess, SIGKILLed halfway, run again; on the emulator's side no
   finished job is generated twice and every image exists once.
4. 429-bound (about 1.5 minutes; ``--scenario 429`` runs only this one, ``--quick`` skips it):
   the emulator allows 60/minute but the batch is told 300/minute and 10 concurrent, so StepFun's
   429 names the real limit mid-burst: the fraction of 60/minute achieved, 429s seen.

Generation jobs are 256x256, b64_json. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from stepfun_openai import AsyncStepFun, StepFun, batch
from stepfun_openai.emulator import Emulator

LATENCY = 0.5
CONCURRENCY = 5
RPM = 120
NAMED_RPM = 60
"""The 429-bound scenario: the account's real RPM (the batch is told 300)."""
KEY = "sk-bench"


def jobs(count: int, tag: str) -> list[dict[str, Any]]:
    return [{"prompt": f"{tag} lighthouse {i}", "model": "step-2x-large", "size": "256x256"} for i in range(count)]


def four_twenty_nines(emu: Emulator) -> int:
    return int(emu.stats()["by_status"].get("429", 0))


def run_batch(emu: Emulator, work: list[dict[str, Any]], out: Path, **limits: Any) -> dict[str, Any]:
    client = AsyncStepFun(api_key=KEY, base_url=emu.base_url)
    emu.reset()
    started = time.monotonic()
    result = batch.run(work, out=out, client=client, progress=False, **limits)
    elapsed = time.monotonic() - started
    return {
        "done": result.succeeded,
        "failed": result.total - result.succeeded,
        "per_minute": result.succeeded / elapsed * 60,
        "429s": four_twenty_nines(emu),
        "elapsed": elapsed,
    }


def run_sequential(emu: Emulator, work: list[dict[str, Any]]) -> dict[str, Any]:
    emu.reset()
    done = failed = 0
    started = time.monotonic()
    with StepFun(api_key=KEY, base_url=emu.base_url) as client:
        for job in work:
            try:
                client.images.generate(**job, response_format="b64_json")
                done += 1
            except Exception:
                failed += 1
    elapsed = time.monotonic() - started
    return {"done": done, "failed": failed, "per_minute": done / elapsed * 60, "429s": four_twenty_nines(emu),
            "elapsed": elapsed}  # fmt: skip


def run_gather(emu: Emulator, work: list[dict[str, Any]]) -> dict[str, Any]:
    """What people write first: every request at once, the client's default retries."""

    async def main() -> tuple[int, int]:
        async with AsyncStepFun(api_key=KEY, base_url=emu.base_url) as client:
            results = await asyncio.gather(
                *(client.images.generate(**job, response_format="b64_json") for job in work), return_exceptions=True
            )
        failed = sum(isinstance(r, BaseException) for r in results)
        return len(results) - failed, failed

    emu.reset()
    started = time.monotonic()
    done, failed = asyncio.run(main())
    elapsed = time.monotonic() - started
    return {"done": done, "failed": failed, "per_minute": done / elapsed * 60, "429s": four_twenty_nines(emu),
            "elapsed": elapsed}  # fmt: skip


def run_resume(emu: Emulator, count: int, root: Path) -> dict[str, Any]:
    emu.reset()
    prompts = root / "prompts.txt"
    prompts.write_text("".join(f"resume lighthouse {i}\n" for i in range(count)))
    out, manifest = root / "resume", root / "resume" / "manifest.jsonl"
    entry = "import sys; from stepfun_openai.cli import main; sys.exit(main())"
    command = [sys.executable, "-c", entry, "batch", str(prompts), "--out", str(out), "--concurrency",
               str(CONCURRENCY), "--model", "step-2x-large", "--size", "256x256", "--no-progress",
               "--base-url", emu.base_url]  # fmt: skip
    env = {**os.environ, "STEPFUN_API_KEY": KEY}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not manifest.exists() or len(manifest.read_text().splitlines()) < count // 2:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = [json.loads(line) for line in manifest.read_text().splitlines() if line.startswith("{")]
    finished_first = {line["params"]["prompt"] for line in first if line.get("status") == "succeeded"}
    rerun = subprocess.run(command, env=env, capture_output=True, text=True)
    served = Counter(e["fields"]["prompt"] for e in emu.requests() if e["status"] == 200 and "fields" in e)
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.startswith("{")]
    succeeded = Counter(line["id"] for line in lines if line["status"] == "succeeded")
    pngs = [p for p in out.iterdir() if p.suffix == ".png"]
    leftovers = [p for p in out.iterdir() if p.name.startswith(".")]
    return {
        "rerun_exit": rerun.returncode,
        "finished_before_kill": len(finished_first),
        "finished_generated_twice": sum(served[p] > 1 for p in finished_first),
        "generated_total": sum(served.values()),
        "jobs_succeeded_once": sum(v == 1 for v in succeeded.values()),
        "pngs": len(pngs),
        "temp_leftovers": len(leftovers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--sequential-jobs", type=int, default=60, help="the sequential loop's sample (a rate)")
    parser.add_argument("--rpm-jobs", type=int, default=200)
    parser.add_argument("--rpm429-jobs", type=int, default=90, help="jobs of the 429-bound scenario")
    parser.add_argument("--quick", action="store_true", help="small numbers, to check the script runs")
    parser.add_argument("--scenario", choices=["all", "429"], default="all", help="429: only the 429-bound run")
    args = parser.parse_args()
    logging.getLogger("stepfun_openai").setLevel(logging.ERROR)  # the gather baseline's retry warnings
    if args.quick:
        args.jobs, args.sequential_jobs, args.rpm_jobs = 40, 10, 12
    limit = CONCURRENCY / LATENCY * 60
    rows: list[tuple[str, dict[str, Any], float]] = []
    if args.scenario == "429":
        with tempfile.TemporaryDirectory() as tmp, Emulator(rpm=NAMED_RPM) as emu:
            row = run_batch(emu, jobs(args.rpm429_jobs, "n"), Path(tmp), concurrency=10, rpm=300)
        name = f"batch.run(concurrency=10, rpm=300), {args.rpm429_jobs} jobs, account {NAMED_RPM}/min"
        print("| runner | jobs done | failed | images/min | fraction of limit | 429s | seconds |")
        print("|---|---|---|---|---|---|---|")
        fraction = f"{row['per_minute'] / NAMED_RPM:.3f} (of {NAMED_RPM})"
        print(f"| {name} | {row['done']} | {row['failed']} | {row['per_minute']:.1f} | {fraction} | "
              f"{row['429s']} | {row['elapsed']:.1f} |")  # fmt: skip
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with Emulator(latency=LATENCY, concurrency=CONCURRENCY) as emu:
            rows.append(
                (
                    "batch.arun(concurrency=5)",
                    run_batch(emu, jobs(args.jobs, "b"), root / "b", concurrency=CONCURRENCY),
                    limit,
                )
            )
            rows.append(
                (
                    f"sequential loop ({args.sequential_jobs} jobs)",
                    run_sequential(emu, jobs(args.sequential_jobs, "s")),
                    limit,
                )
            )
            rows.append(("asyncio.gather over AsyncStepFun", run_gather(emu, jobs(args.jobs, "g")), limit))
            resume = run_resume(emu, args.jobs, root)
        with Emulator(latency=LATENCY, concurrency=CONCURRENCY, rpm=RPM) as emu:
            rows.append(
                (
                    f"batch.arun(concurrency=5, rpm={RPM})",
                    run_batch(emu, jobs(args.rpm_jobs, "r"), root / "r", concurrency=CONCURRENCY, rpm=RPM),
                    RPM,
                )
            )
            rows.append(("asyncio.gather over AsyncStepFun (rpm 120)", run_gather(emu, jobs(args.rpm_jobs, "rg")), RPM))
    print(f"emulator latency {LATENCY}s, concurrency {CONCURRENCY} (limit {limit:.0f}/min); rpm scenario: {RPM}/min\n")
    print("| runner | jobs done | failed | images/min | fraction of limit | 429s | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, row, row_limit in rows:
        fraction = f"{row['per_minute'] / row_limit:.3f} (of {row_limit:.0f})"
        print(f"| {name} | {row['done']} | {row['failed']} | {row['per_minute']:.1f} | {fraction} | "
              f"{row['429s']} | {row['elapsed']:.1f} |")  # fmt: skip
    print("\nresume after SIGKILL:", json.dumps(resume))


if __name__ == "__main__":
    main()
