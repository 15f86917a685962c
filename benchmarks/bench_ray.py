"""The batch on Ray: 1 worker vs 2 on this machine, and how much of a set account limit 2 workers use.

    python benchmarks/bench_ray.py [--quick] [--rounds N] [--jobs N] [--json PATH]

Needs ``pip install 'stepfun-openai[ray]'`` and Node.js (the server is ``benchmarks/fastserver.js``,
started and stopped here, as ``bench_path.py`` does: Python servers, the emulator included, are too
slow to show the client's ceiling). A local Ray of 2 CPUs is started once, on 127.0.0.1 only.

1. ``scale``: jobs/s of ``batch.run_distributed(workers=1)`` vs ``workers=2`` (and the one-process
   ``batch.run`` for reference), concurrency 64, tiny PNG answers, no RPM cap: the work is the
   client's CPU (HTTP, JSON, base64, PNG provenance, files), which is what more workers add.
   Steady state: while every worker is at work (the manifests' times), so the workers' start-up (a
   Python process each, importing the package: 1-3 s, not at the same moment) and the tail are not
   counted; the wall time, start-up included, is reported too. Variants interleave in rounds; medians. Goal: 2/1 >= 1.7.
2. ``limit``: 2 workers at a set account limit, each limit alone binding:
   (a) RPM 6,000 (the server answers at once): the rate reached / 6,000;
   (b) 32 in flight, the server answering after 200 ms: the server's time-weighted mean of requests
   in flight / 32 (and its maximum, which must not pass 32). Goals: >= 0.95 each, no failed job.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported: loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_path import NodeServer  # noqa: E402


def _span(out: Path) -> tuple[int, float]:
    """(jobs recorded, seconds) in the window where every worker was at work: from the last
    worker's first record to the first worker's last (every record for one worker or ``batch.run``),
    read from the manifests' times, so start-up and the tail are not counted."""
    shards = []
    for path in [out / "manifest.jsonl", *sorted((out / "manifest.d").glob("*.jsonl"))]:
        if path.exists():
            times = [
                dt.datetime.fromisoformat(json.loads(line)["time"]).timestamp()
                for line in path.read_text().splitlines()
            ]
            if times:
                shards.append(times)
    start, end = max(min(times) for times in shards), min(max(times) for times in shards)
    count = sum(1 for times in shards for time_ in times if start <= time_ <= end)
    return count, end - start


def _run(variant: str, server: NodeServer, jobs: int, out: Path, **limits: Any) -> dict[str, float]:
    from stepfun_openai import StepFun, batch

    shutil.rmtree(out, ignore_errors=True)
    prompts = [f"bench {variant} {number}" for number in range(jobs)]
    with StepFun(api_key="bench", base_url=server.api) as client:
        started = time.perf_counter()
        if variant == "batch.run":
            result = batch.run(prompts, out=out, client=client, progress=False, **limits)
        else:
            backend, workers = variant.split("=")
            result = batch.run_distributed(
                prompts, out=out, workers=int(workers), ray=backend == "ray", client=client, progress=False, **limits
            )
        wall = time.perf_counter() - started
    if result.succeeded != jobs:
        raise RuntimeError(f"{variant}: {result.succeeded} of {jobs} succeeded ({dict(result.failures)})")
    recorded, span = _span(out)
    return {
        "wall": wall,
        "span": span,
        "steady_jobs_per_s": (recorded - 1) / span if span > 0 else float("nan"),
        "wall_jobs_per_s": jobs / wall,
        "rate_limited": result.rate_limited,
        "failed": result.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small runs: a smoke test, not a measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--jobs", type=int, default=12000, help="jobs per scale run (a shorter run is mostly warm-up at 900 jobs/s)"
    )
    parser.add_argument("--json", help="write the raw numbers here")
    parser.add_argument("--only-limit", action="store_true", help="only the limit scenario")
    args = parser.parse_args()
    rounds, jobs = (1, 400) if args.quick else (args.rounds, args.jobs)

    import ray

    temp = tempfile.mkdtemp(prefix="rb", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", _temp_dir=temp, log_to_driver=False)
    print(f"load before: {os.getloadavg()}", file=sys.stderr)
    raw: dict[str, Any] = {"scale": {}, "limit": {}}
    try:
        out = Path(temp) / "out"
        with NodeServer("small") as server:
            variants = ["ray=1", "ray=2", "processes=1", "processes=2", "batch.run"]
            _run("ray=2", server, 200, out, concurrency=64)  # warm: Ray's worker processes, imports
            for number in range(0 if args.only_limit else rounds):
                shift = number % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    measured = _run(variant, server, jobs, out, concurrency=64)
                    raw["scale"].setdefault(variant, []).append(measured)
                    print(f"round {number + 1} {variant}: {measured}", file=sys.stderr)
            rpm = 6000
            limit_jobs = 300 if args.quick else 1500
            raw["limit"]["rpm"] = _run("ray=2", server, limit_jobs, out, concurrency=64, rpm=rpm)
            raw["limit"]["rpm"]["fraction"] = raw["limit"]["rpm"]["steady_jobs_per_s"] * 60 / rpm
            print(f"rpm {rpm}: {raw['limit']['rpm']}", file=sys.stderr)
        with NodeServer("small", delay_ms=200) as server:
            cap = 32
            measured = _run("ray=2", server, 200 if args.quick else 2400, out, concurrency=cap)
            stats = server.stats()
            measured.update(
                max_in_flight=stats["max_in_flight"],
                mean_in_flight=stats["mean_in_flight"],
                fraction=stats["mean_in_flight"] / cap,
            )
            raw["limit"]["concurrency"] = measured
            print(f"concurrency {cap}: {measured}", file=sys.stderr)
            server.reset()
            measured = _run("batch.run", server, 200 if args.quick else 2400, out, concurrency=cap)
            stats = server.stats()
            measured.update(mean_in_flight=stats["mean_in_flight"], fraction=stats["mean_in_flight"] / cap)
            raw["limit"]["concurrency_one_process"] = measured
            print(f"concurrency {cap}, batch.run: {measured}", file=sys.stderr)
        with NodeServer("small", delay_ms=1000) as server:
            cap = 64
            measured = _run("ray=2", server, 256 if args.quick else 1280, out, concurrency=cap)
            stats = server.stats()
            measured.update(
                max_in_flight=stats["max_in_flight"],
                mean_in_flight=stats["mean_in_flight"],
                fraction=stats["mean_in_flight"] / cap,
            )
            raw["limit"]["concurrency_1s"] = measured
            print(f"concurrency {cap}, 1 s answers: {measured}", file=sys.stderr)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    print(f"load after: {os.getloadavg()}", file=sys.stderr)

    if args.only_limit:
        return

    def median(variant: str, key: str) -> float:
        return statistics.median(run[key] for run in raw["scale"][variant])

    def ratios(kind: str) -> list[float]:
        pairs = zip(raw["scale"][f"{kind}=1"], raw["scale"][f"{kind}=2"], strict=True)
        return [two["steady_jobs_per_s"] / one["steady_jobs_per_s"] for one, two in pairs]

    print(f"\n{jobs} jobs a run, {rounds} rounds, concurrency 64, tiny PNGs (fastserver.js)\n")
    print("| runner | jobs/s, steady (median) | jobs/s, wall with start-up (median) | 2 workers / 1, per round |")
    print("|---|---|---|---|")
    labels = {
        "batch.run": "`batch.run` (one process)",
        "ray=1": "`run_distributed(workers=1)` on Ray",
        "ray=2": "`run_distributed(workers=2)` on Ray",
        "processes=1": "`run_distributed(workers=1, ray=False)` (processes)",
        "processes=2": "`run_distributed(workers=2, ray=False)` (processes)",
    }
    for variant, label in labels.items():
        cell = ", ".join(f"{r:.2f}" for r in ratios(variant[:-2])) if variant.endswith("=2") else ""
        steady, wall = median(variant, "steady_jobs_per_s"), median(variant, "wall_jobs_per_s")
        print(f"| {label} | {steady:.0f} | {wall:.0f} | {cell} |")
    for kind in ("ray", "processes"):
        one, two = median(f"{kind}=1", "steady_jobs_per_s"), median(f"{kind}=2", "steady_jobs_per_s")
        print(f"\n{kind}: 2 workers / 1 worker (steady, medians): **{two / one:.2f}** (goal >= 1.7)")
    rpm_run, cap_run = raw["limit"]["rpm"], raw["limit"]["concurrency"]
    one_run, slow_run = raw["limit"]["concurrency_one_process"], raw["limit"]["concurrency_1s"]
    print(
        f"RPM 6,000, 2 workers: {rpm_run['steady_jobs_per_s'] * 60:.0f}/min = **{rpm_run['fraction']:.3f}** "
        f"of the limit, {rpm_run['failed']} failed, {rpm_run['rate_limited']} 429s"
    )
    print(
        f"32 in flight, 2 workers: mean {cap_run['mean_in_flight']:.2f}, max {cap_run['max_in_flight']} = "
        f"**{cap_run['fraction']:.3f}** of the limit, {cap_run['failed']} failed"
    )
    print(f"32 in flight, batch.run (one process, for comparison): **{one_run['fraction']:.3f}**")
    print(
        f"64 in flight, answers after 1 s, 2 workers: mean {slow_run['mean_in_flight']:.2f}, "
        f"max {slow_run['max_in_flight']} = **{slow_run['fraction']:.3f}**, {slow_run['failed']} failed"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
