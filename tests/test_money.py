"""Money: prices in the catalog, what each image costs, the account's balance, the emulator's wallet."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import openai
import pytest

from stepfun_openai import Account, AsyncStepFun, Cost, InsufficientBalanceError, StepFun, catalog
from stepfun_openai._cost import image_cost
from stepfun_openai.emulator import Emulator
from stepfun_openai.emulator.__main__ import build_parser, emulator_from_args

KEY = "sk-money-test"
Factory = Callable[..., Emulator]


def test_prices_are_the_published_ones_with_their_date_and_unknown_stays_unknown() -> None:
    edit2 = catalog.price_of("step-image-edit-2", "mainland")
    assert edit2 is not None and edit2.amount == Decimal("0.02") and edit2.currency == "CNY"
    assert edit2.read_on.isoformat() == "2026-06-19"
    intl = catalog.price_of("step-image-edit-2", "international")
    assert intl is not None and (intl.amount, intl.currency) == (Decimal("0.003"), "USD")
    large = catalog.price_of("step-2x-large", "mainland")
    assert large is not None and large.amount == Decimal("0.1")
    # Not listed on the pricing page: never guessed.
    assert catalog.price_of("step-2x-large", "international") is None
    assert catalog.price_of("step-1x-medium", "mainland") is None
    assert catalog.price_of("step-2x-large", None) is None


def test_the_host_says_the_region_and_step_plan() -> None:
    assert catalog.host_of("https://api.stepfun.com/v1") == catalog.Host("mainland")
    assert catalog.host_of("https://api.stepfun.ai/v1") == catalog.Host("international")
    assert catalog.host_of(catalog.STEP_PLAN_BASE_URL) == catalog.Host("mainland", step_plan=True)
    assert catalog.host_of(catalog.INTERNATIONAL_STEP_PLAN_BASE_URL) == catalog.Host("international", step_plan=True)
    assert catalog.host_of("http://127.0.0.1:8000/v1").region is None
    assert catalog.host_of("https://evil-stepfun.com.example/v1").region is None


def test_costs_add_up_and_an_unknown_part_makes_the_sum_unknown() -> None:
    two = Cost(Decimal("0.1"), "CNY") + Cost(Decimal("0.02"), "CNY")
    assert two.known and two.amount == Decimal("0.12") and two.images == 2 and str(two) == "¥0.12"
    unknown = two + image_cost("step-1x-medium", catalog.Host("mainland"))
    assert not unknown.known and unknown.images == 3 and "step-1x-medium" in str(unknown)
    mixed = Cost(Decimal("0.1"), "CNY") + Cost(Decimal("0.003"), "USD")
    assert not mixed.known and "currencies" in mixed.note
    assert Cost.total([]).images == 0
    plan = image_cost("step-image-edit-2", catalog.Host("mainland", step_plan=True))
    assert not plan.known and "Step Plan" in plan.note
    assert image_cost("step-image-edit-2", catalog.Host(None), "international").amount == Decimal("0.003")


def test_each_image_and_response_says_what_it_cost(stepfun_emulator: Emulator) -> None:
    client = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url, region="mainland")
    response = client.images.generate(prompt="a cat", model="step-2x-large", size="256x256")
    assert response.cost == Cost(Decimal("0.1"), "CNY") == response.images[0].cost
    edit2 = client.images.generate(prompt="a cat", model="step-image-edit-2")
    assert edit2.cost.amount == Decimal("0.02")
    # The twins and copies keep the region; without one, a loopback host's cost is unknown.
    assert client.to_async().region == "mainland" == client.with_options(timeout=5).region
    unknown = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url).images.generate(
        prompt="a cat", model="step-2x-large", size="256x256"
    )
    assert not unknown.cost.known and "region" in unknown.cost.note
    with pytest.raises(ValueError, match="region"):
        StepFun(api_key=KEY, base_url=stepfun_emulator.base_url, region="mars")  # type: ignore[arg-type]


def test_a_content_filtered_image_is_billed_and_a_failed_request_is_not(stepfun_emulator_factory: Factory) -> None:
    emu = stepfun_emulator_factory(filter_words=["forbidden"], balance="10")
    client = StepFun(api_key=KEY, base_url=emu.base_url, region="mainland", max_retries=0)
    filtered = client.images.generate(prompt="a forbidden cat", model="step-2x-large", size="256x256")
    assert filtered.images[0].content_filtered and filtered.cost.amount == Decimal("0.1")
    with pytest.raises(openai.BadRequestError):  # a 400 from the server: nothing generated, nothing billed
        client.with_options(validate=False).images.generate(prompt="a cat", model="step-2x-large", size="7x7")
    assert emu.account["balance"] == pytest.approx(9.9)


def test_the_account_balance_and_an_empty_one(stepfun_emulator_factory: Factory) -> None:
    emu = stepfun_emulator_factory(balance="0.25")
    client = StepFun(api_key=KEY, base_url=emu.base_url)
    account = client.account.retrieve()
    assert isinstance(account, Account) and account.prepaid
    assert (account.type, account.balance, account.total_cash_balance) == ("prepaid", 0.25, 0.25)
    client.images.generate(prompt="a", model="step-2x-large", size="256x256")
    client.images.generate(prompt="b", model="step-2x-large", size="256x256")
    with pytest.raises(InsufficientBalanceError, match="Insufficient balance") as caught:
        client.images.generate(prompt="c", model="step-2x-large", size="256x256")
    assert caught.value.attempts == 1  # type: ignore[attr-defined]  # a 402 is never retried
    assert asyncio.run(AsyncStepFun(api_key=KEY, base_url=emu.base_url).account.retrieve()).balance == pytest.approx(
        0.05
    )


def test_an_unlimited_emulator_is_a_postpaid_account(stepfun_emulator: Emulator) -> None:
    account = StepFun(api_key=KEY, base_url=stepfun_emulator.base_url).account.retrieve()
    assert account.type == "postpaid" and not account.prepaid


def test_the_emulator_cli_takes_a_balance_and_a_region() -> None:
    args = build_parser().parse_args(["--balance", "1.5", "--region", "international", "--port", "0"])
    with emulator_from_args(args) as emu:
        client = StepFun(api_key=KEY, base_url=emu.base_url, region="international")
        response = client.images.generate(prompt="a cat", model="step-image-edit-2")
        assert response.cost == Cost(Decimal("0.003"), "USD")
        assert emu.account["balance"] == pytest.approx(1.497)
    with pytest.raises(ValueError, match="balance"):
        Emulator(balance="-1")
