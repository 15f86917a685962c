"""A batch job's retries: the client's RetryPolicy, run by tenacity, inside the batch's limiter."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stepfun_openai import AsyncStepFun, RetryPolicy, batch
from stepfun_openai.emulator import Emulator

KEY = "sk-batch-retries-test"
JOB = {"prompt": "a lighthouse in the rain", "model": "step-2x-large", "size": "256x256"}

Factory = Callable[..., Emulator]


def fault_seed(*pattern: bool, probability: float = 0.5) -> int:
    """A ``fault_seed`` whose first draws fail (True) or pass (False) in ``pattern``: the
    emulator draws one number per image request and fails it when the number is < probability."""
    for seed in range(10_000):
        draws = random.Random(seed)
        if all((draws.random() < probability) == fails for fails in pattern):
            return seed
    raise AssertionError("no such seed")  # pragma: no cover


class Waits(list[float]):
    """The backoffs the batch asked the policy to sleep (recorded, not spent)."""

    async def sleep(self, seconds: float) -> None:
        self.append(seconds)


def run_one(emu: Emulator, out: Path, waits: Waits, **policy: Any) -> tuple[batch.BatchResult, dict[str, Any]]:
    retry_policy = RetryPolicy(initial_backoff=0.2, max_backoff=1.0, async_sleep=waits.sleep, **policy)
    client = AsyncStepFun(api_key=KEY, base_url=emu.base_url, retry_policy=retry_policy)
    result = batch.run([JOB], out=out, client=client, concurrency=1, rpm=None, progress=False)
    (line,) = [json.loads(text) for text in (out / "manifest.jsonl").read_text().splitlines()]
    return result, line


def test_two_503s_are_retried_with_the_clients_backoff_and_the_job_succeeds(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(faults="503=0.5", fault_seed=fault_seed(True, True, False))
    waits = Waits()
    result, line = run_one(emu, tmp_path, waits, max_retries=3)

    assert result.succeeded == 1 and line["status"] == "succeeded"
    assert line["attempts"] == 3 == emu.stats()["requests"] == result.requests
    assert emu.stats()["by_status"] == {"503": 2, "200": 1}
    # Full jitter under the policy's ceilings (0.2 s, then 0.4 s), waited through policy.async_sleep.
    assert len(waits) == 2 and 0 <= waits[0] <= 0.2 and 0 <= waits[1] <= 0.4


def test_max_retries_of_the_client_policy_bounds_a_batch_job(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(faults="503=0.5", fault_seed=fault_seed(True, True, False))
    waits = Waits()
    result, line = run_one(emu, tmp_path, waits, max_retries=1)

    assert result.failed == 1 and result.failures == {"InternalServerError": 1}
    assert line["status"] == "failed" and line["error"]["status"] == 503
    assert line["attempts"] == 2 == emu.stats()["requests"]  # one try plus max_retries=1, not more
    assert len(waits) == 1
    assert result.pending == 1  # recorded as failed: a resumed batch runs it again


def test_429s_are_paced_by_the_limiter_and_do_not_use_up_the_retries(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(
        rpm=6000, retry_after=0.01, faults="429=0.5", fault_seed=fault_seed(True, True, False)
    )
    waits = Waits()
    result, line = run_one(emu, tmp_path, waits, max_retries=0)

    assert result.succeeded == 1 and result.rate_limited == 2
    assert line["attempts"] == 3 == emu.stats()["requests"]
    assert waits == [0.0, 0.0]  # no backoff on top of the limiter's pause


def test_a_blocked_prompt_is_recorded_once_and_not_retried(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(block_words=("rain",))
    waits = Waits()
    result, line = run_one(emu, tmp_path, waits)

    assert line["status"] == "blocked" and result.blocked == 1
    assert line["attempts"] == 1 == emu.stats()["requests"] and waits == []
