"""The emulated account: ``GET /v1/accounts`` and a balance each generated image lowers.

DECIDED in the contract: the balance starts from ``--balance`` (default: unlimited, shown as a
postpaid account), each generated image (``content_filtered`` included) is charged at the catalog's
price for the emulator's region (a model without a published price is free here), and a request
that would take a prepaid balance below zero gets 402 ``insufficient_balance`` before it is generated.
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from .. import catalog
from ._params import ApiError

__all__ = ["Wallet"]


class Wallet:
    """The account's money; thread-safe (request threads charge it concurrently)."""

    def __init__(self, balance: Decimal | None, region: catalog.Region) -> None:
        self.initial = balance
        self.region = region
        self._lock = threading.Lock()
        self.spent = Decimal(0)
        self.images = 0

    def charge(self, model: str) -> Decimal:
        """Take one image of ``model`` from the balance, or raise the 402 a real account would."""
        price = catalog.price_of(model, self.region)
        amount = price.amount if price is not None else Decimal(0)
        with self._lock:
            if self.initial is not None and self.spent + amount > self.initial:
                left = self.initial - self.spent
                raise ApiError(
                    402,
                    "insufficient_balance",
                    f"Insufficient balance: {left} left, an image of {model} costs {amount}. "
                    "Please top up at https://platform.stepfun.com/top-up.",
                )
            self.spent += amount
            self.images += 1
        return amount

    def account(self) -> dict[str, Any]:
        with self._lock:
            spent = self.spent
        if self.initial is None:  # unlimited: billed afterwards, like a postpaid account
            balance, kind = -spent, "postpaid"
        else:
            balance, kind = self.initial - spent, "prepaid"
        return {
            "object": "account",
            "type": kind,
            "balance": float(balance),
            "total_cash_balance": float(balance),
            "total_voucher_balance": 0.0,
        }

    def reset(self) -> None:
        with self._lock:
            self.spent = Decimal(0)
            self.images = 0
