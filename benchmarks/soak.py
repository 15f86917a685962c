"""Soak: many calls through ``AsyncStepFun`` against an emulator that fails a third of attempts.

    /work/venv/bin/python benchmarks/soak.py                 # 500 calls, concurrency 16
    /work/venv/bin/python benchmarks/soak.py --calls 2000 --seed 3

The emulator injects "503=0.15,429=0.1,reset=0.05,malformed=0.03" (33% of attempts fail, each
fault transient) and answers 429/503 with ``Retry-After: 0``. The client uses the default
policy's ``max_retries`` with the backoff shrunk (10-50 ms) so the run is quick. Reported: calls
that succeeded, calls that failed by exception type, HTTP attempts per call (counted on the client
by a request hook, and checked against the emulator's own count), and whether any call took more
attempts than the policy allows.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import statistics
import sys
import time
from typing import Any

import httpx2

from stepfun_openai import AsyncStepFun, RetryPolicy
from stepfun_openai.emulator import Emulator

FAULTS = "503=0.15,429=0.1,reset=0.05,malformed=0.03"
MODEL = "step-image-edit-2"


def fault_rate(spec: str) -> float:
    return sum(float(part.split("=")[1]) for part in spec.split(","))


def expected_failure_rate(rate: float, attempts: int) -> float:
    """Chance that one call fails every attempt, faults drawn independently per attempt."""
    return float(rate**attempts)


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.retries += 1


async def _soak(emulator: Emulator, calls: int, concurrency: int, policy: RetryPolicy) -> dict[str, Any]:
    attempts: collections.Counter[str] = collections.Counter()

    async def count(request: httpx2.Request) -> None:
        attempts[request.headers["X-Request-Tag"]] += 1

    client = AsyncStepFun(
        api_key=emulator.api_key,
        base_url=emulator.base_url,
        retry_policy=policy,
        http_client=httpx2.AsyncClient(event_hooks={"request": [count]}, limits=httpx2.Limits(max_connections=64)),
    )
    retry_logs = _CountingHandler()
    logger = logging.getLogger("stepfun_openai")
    logger.addHandler(retry_logs)
    logger.propagate = False  # counted, not printed
    gate = asyncio.Semaphore(concurrency)
    outcomes: dict[str, str] = {}

    async def one(index: int) -> None:
        tag = f"soak-{index}"
        async with gate:
            try:
                result = await client.images.generate(
                    model=MODEL, prompt=f"soak {index}", size="1024x1024", extra_headers={"X-Request-Tag": tag}
                )
                outcomes[tag] = "ok" if result.data and result.data[0].url else "empty"
            except Exception as exc:  # the report counts them by type
                outcomes[tag] = type(exc).__name__

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    elapsed = time.perf_counter() - started
    await client.close()
    logger.removeHandler(retry_logs)
    logger.propagate = True

    per_call = [attempts[tag] for tag in outcomes]
    failed = collections.Counter(v for v in outcomes.values() if v != "ok")
    deadline = time.monotonic() + 5.0  # the emulator logs a request just after answering it
    while emulator.stats()["requests"] < sum(per_call) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    stats = emulator.stats()
    return {
        "calls": calls,
        "concurrency": concurrency,
        "succeeded": sum(1 for v in outcomes.values() if v == "ok"),
        "failed": dict(failed),
        "max_attempts": max(per_call),
        "mean_attempts": round(statistics.fmean(per_call), 3),
        "attempts_histogram": dict(sorted(collections.Counter(per_call).items())),
        "policy_max_attempts": policy.max_attempts,
        "over_budget_calls": sum(1 for n in per_call if n > policy.max_attempts),
        "http_requests": sum(per_call),
        "retry_warnings_logged": retry_logs.retries,
        "emulator_requests": stats["requests"],
        "emulator_faults": stats["by_fault"],
        "seconds": round(elapsed, 2),
        "calls_per_second": round(calls / elapsed, 1),
    }


def run(
    *,
    calls: int = 500,
    concurrency: int = 16,
    faults: str = FAULTS,
    fault_seed: int | None = 1,
    policy: RetryPolicy | None = None,
) -> dict[str, Any]:
    """Start an emulator with ``faults``, soak it, stop it, return the report."""
    policy = policy or RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
    with Emulator(faults=faults, fault_seed=fault_seed, retry_after=0) as emulator:
        report = asyncio.run(_soak(emulator, calls, concurrency, policy))
    rate = fault_rate(faults)
    per_call = expected_failure_rate(rate, policy.max_attempts)
    report["faults"] = faults
    report["fault_rate_per_attempt"] = round(rate, 3)
    report["expected_failed_calls"] = round(per_call * calls, 4)
    report["chance_all_succeed"] = round((1 - per_call) ** calls, 4)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--faults", default=FAULTS)
    parser.add_argument("--seed", type=int, default=1, help="the emulator's fault seed")
    parser.add_argument("--max-retries", type=int, default=None, help="default: the default policy's")
    args = parser.parse_args(argv)
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
    if args.max_retries is not None:
        policy = policy.with_max_retries(args.max_retries)
    report = run(
        calls=args.calls, concurrency=args.concurrency, faults=args.faults, fault_seed=args.seed, policy=policy
    )
    # The same calls without faults, in the same process: what the retries cost in wall time.
    with Emulator() as emulator:
        baseline = asyncio.run(_soak(emulator, args.calls, args.concurrency, policy))
    report["baseline_seconds_without_faults"] = baseline["seconds"]
    report["time_ratio_vs_baseline"] = round(report["seconds"] / baseline["seconds"], 2)
    print(json.dumps(report, indent=2))
    ok = (
        not report["failed"]
        and report["over_budget_calls"] == 0
        and report["http_requests"] == report["emulator_requests"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
