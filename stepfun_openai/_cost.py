"""What images cost: the catalog's price per image, per region, summed; unknown stays unknown.

StepFun bills each generated image (``content_filtered`` ones included) at a price that depends on
the model and on the region whose cash balance pays it (mainland in yuan, international in dollars);
a failed request is not billed, and images paid from a Step Plan's monthly credit have no cash price.
The region comes from the host (``api.stepfun.com``, ``api.stepfun.ai``) or, for any other host (the
emulator, a proxy), from ``StepFun(region=...)``; without either, the cost is unknown, not guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from . import catalog

__all__ = ["Cost", "image_cost"]

_SYMBOLS = {"CNY": "¥", "USD": "$"}


@dataclass(frozen=True)
class Cost:
    """The cost of some images: ``amount`` in ``currency``, or unknown (both ``None``, with a
    ``note`` saying why). Costs add up; a sum with an unknown part is unknown."""

    amount: Decimal | None
    currency: Literal["CNY", "USD"] | None
    images: int = 1
    note: str = ""

    @property
    def known(self) -> bool:
        """Whether the amount is known (nothing at all, zero images, is known: it costs 0)."""
        return self.amount is not None and (self.currency is not None or self.images == 0)

    def __add__(self, other: Cost) -> Cost:
        images = self.images + other.images
        if not other.images:
            return Cost(self.amount, self.currency, images, self.note)
        if not self.images:
            return Cost(other.amount, other.currency, images, other.note)
        if self.known and other.known and self.currency == other.currency:
            assert self.amount is not None and other.amount is not None
            return Cost(self.amount + other.amount, self.currency, images)
        note = self.note or other.note or "the images are billed in different currencies"
        return Cost(None, None, images, note)

    @classmethod
    def zero(cls, currency: Literal["CNY", "USD"] | None = None) -> Cost:
        return cls(Decimal(0), currency, 0) if currency else cls(None, None, 0)

    @classmethod
    def total(cls, costs: Iterable[Cost]) -> Cost:
        result = cls(Decimal(0), None, 0)
        for cost in costs:
            result = result + cost
        return result

    def __str__(self) -> str:
        if not self.known:
            return f"unknown ({self.note})" if self.note else "unknown"
        if self.currency is None:
            return "0 (no images)"
        return f"{_SYMBOLS[self.currency]}{self.amount}"

    def as_dict(self) -> dict[str, Any]:
        """For manifests and tool results: the amount as a string (exact), or ``None``."""
        return {
            "amount": None if self.amount is None else str(self.amount),
            "currency": self.currency,
            "images": self.images,
            **({"note": self.note} if self.note and not self.known else {}),
        }


def image_cost(model: object, host: catalog.Host, region: catalog.Region | None = None) -> Cost:
    """What one image of ``model`` costs when sent to ``host`` (``region`` overrides the host's)."""
    if host.step_plan:
        return Cost(None, None, note="paid from the Step Plan's monthly credit")
    region = region or host.region
    if region is None:
        return Cost(None, None, note="unknown region: not a StepFun host; pass StepFun(region=...)")
    price = catalog.price_of(model, region) if isinstance(model, str) else None
    if price is None:
        return Cost(None, None, note=f"no published {region} price for {model}")
    return Cost(price.amount, price.currency)
