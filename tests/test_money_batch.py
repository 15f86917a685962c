"""Money in batches and on the command line: a budget never passed, an empty balance, estimates."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from stepfun_openai import StepFun, batch
from stepfun_openai.cli import main
from stepfun_openai.emulator import Emulator

KEY = "sk-money-batch-0123456789"
Factory = Callable[..., Emulator]


def _jobs(count: int) -> list[dict[str, str]]:
    return [{"prompt": f"a cat number {i}", "model": "step-2x-large", "size": "256x256"} for i in range(count)]


def _client(emu: Emulator, **options: object) -> StepFun:
    return StepFun(api_key=KEY, base_url=emu.base_url, region="mainland", **options)  # type: ignore[arg-type]


def test_a_budget_is_never_passed_and_a_resume_counts_what_was_spent(
    stepfun_emulator_factory: Factory, tmp_path: Path
) -> None:
    emu = stepfun_emulator_factory(balance="100", latency=0.05)
    client = _client(emu)
    first = batch.run(_jobs(8), out=tmp_path, client=client, concurrency=4, rpm=None, progress=False, max_spend="0.35")

    # Four in flight at once, yet never more than the budget allows: 3 images of ¥0.1.
    assert (first.succeeded, first.not_started, first.budget_reached) == (3, 5, True)
    assert emu.stats()["requests"] == 3 and emu.account["balance"] == pytest.approx(99.7)
    assert first.spent.amount == Decimal("0.3") and "max_spend ¥0.35 reached" in (first.stopped or "")
    assert "5 not started (budget)" in first.summary() and "spent: ¥0.3 of a ¥0.35 budget" in first.summary()
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert all(line["cost"] == {"amount": "0.1", "currency": "CNY", "images": 1} for line in lines)

    again = batch.run(_jobs(8), out=tmp_path, client=client, concurrency=4, rpm=None, progress=False, max_spend="0.5")
    assert (again.succeeded, again.generated) == (5, 2)  # the earlier ¥0.3 counts against the budget
    assert again.spent.amount == Decimal("0.5")
    rest = batch.run(_jobs(8), out=tmp_path, client=client, concurrency=4, rpm=None, progress=False)
    assert rest.ok and rest.spent.amount == Decimal("0.8") and emu.stats()["requests"] == 8


def test_a_budget_needs_known_prices_and_says_so_before_sending(stepfun_emulator: Emulator, tmp_path: Path) -> None:
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url)  # a loopback host: no region, no price
    with pytest.raises(batch.BudgetError, match="max_spend cannot be kept"):
        batch.run(_jobs(2), out=tmp_path, client=client, progress=False, max_spend=1)
    with pytest.raises(ValueError, match="max_spend"):
        batch.run(_jobs(2), out=tmp_path, client=_client(stepfun_emulator), progress=False, max_spend="-1")
    assert stepfun_emulator.stats()["requests"] == 0


def test_an_empty_balance_stops_the_batch_cleanly(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(balance="0.25")
    client = _client(emu)
    with pytest.raises(batch.BudgetError, match="lower than the batch's estimated cost"):
        batch.run(_jobs(5), out=tmp_path, client=client, progress=False, check_balance=True)
    assert emu.stats()["by_path"].get("/v1/images/generations") is None  # nothing generated

    result = batch.run(
        _jobs(5), out=tmp_path, client=client, concurrency=1, rpm=None, progress=False, check_balance=True,
        allow_partial=True,
    )  # fmt: skip
    assert result.succeeded == 2 and "InsufficientBalanceError" in (result.stopped or "")
    assert result.failures["InsufficientBalanceError"] == 1 and result.not_started == 2
    assert emu.stats()["by_status"]["402"] == 1  # a 402 is not retried
    assert result.spent.amount == Decimal("0.2")


def test_estimate_counts_the_jobs_the_cost_and_the_balance(stepfun_emulator_factory: Factory, tmp_path: Path) -> None:
    emu = stepfun_emulator_factory(balance="0.5")
    client = _client(emu)
    jobs = [*_jobs(3), {"prompt": "an edit", "endpoint": "edit", "image": str(tmp_path / "missing.png")}]
    found = batch.estimate(jobs, out=tmp_path, client=client)
    assert (found.jobs, found.todo) == (4, 4)
    assert found.cost.amount == Decimal("0.32")  # three ¥0.1 images and one ¥0.02 edit
    assert found.balance is not None and found.balance.balance == 0.5 and found.affordable is True
    assert "estimated cost: ¥0.32" in str(found) and "balance: 0.5 (prepaid account)" in str(found)
    assert emu.stats()["by_path"].get("/v1/images/generations") is None

    batch.run(_jobs(3)[:1], out=tmp_path, client=client, progress=False)
    resumed = batch.estimate(jobs, out=tmp_path, client=client, balance=False)
    assert resumed.todo == 3 and resumed.spent.amount == Decimal("0.1") and resumed.cost.amount == Decimal("0.22")


def test_the_cli_balance_doctor_dry_run_and_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["balance", "--emulator"]) == 0
    assert "postpaid account" in capsys.readouterr().out
    assert main(["doctor", "--emulator"]) == 0
    out = capsys.readouterr().out
    assert "ok   the key is accepted" in out and "FAIL" not in out

    monkeypatch.setenv("STEPFUN_API_KEY", KEY)
    assert main(["doctor", "--base-url", "http://127.0.0.1:9/v1"]) == 1  # nothing listens there
    out = capsys.readouterr().out
    assert "key: from $STEPFUN_API_KEY" in out and "FAIL the base URL does not answer" in out and KEY not in out

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\na fox\n")
    common = [str(prompts), "--out", str(tmp_path / "out"), "--emulator", "--model", "step-2x-large", "--no-progress"]
    assert main(["batch", *common, "--size", "256x256", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing generated" in out and "3 job(s), 3 to run" in out and "estimated cost: ¥0.3" in out
    assert not (tmp_path / "out" / "manifest.jsonl").exists()

    assert main(["batch", *common, "--size", "256x256", "--max-spend", "0.15"]) == 1
    out = capsys.readouterr().out
    assert "1 of 3 images done" in out and "2 not started (budget)" in out and "max_spend ¥0.15 reached" in out

    assert main(["generate", "a cat", "--emulator", "--size", "16:9", "--n", "2", "--out", f"{tmp_path}/gen/"]) == 0
    out = capsys.readouterr().out
    assert out.count("size 768x1360, cost ¥0.02") == 2
