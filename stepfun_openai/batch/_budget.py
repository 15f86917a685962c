"""Money in a batch: what it will cost, what it has spent, and a budget it never passes.

Each job costs the catalog's price of one image of its model in the client's region (see
``_cost``). With ``max_spend``, a job starts only while what was spent (in this run and, from the
manifest, in earlier ones) plus what the jobs in flight may cost plus its own price stays within
the budget; the first job that does not fit stops the batch from starting more (the ones in flight
finish), and the rest stay pending. A budget needs known prices: a job whose price is unknown is an
error before anything is sent. A job is billed once StepFun answered it with an image
(``content_filtered`` ones included); a failed request is not.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

from .. import catalog
from .._cost import Cost, image_cost
from ._jobs import DEFAULT_MODELS, _Work

if TYPE_CHECKING:
    from .._client import AsyncStepFun, StepFun
    from ..types import Account
    from ._manifest import Manifest

__all__ = ["Budget", "BudgetError", "Estimate", "estimate", "job_cost", "money", "spent_in"]

BILLED = frozenset({"succeeded", "content_filtered"})


class BudgetError(RuntimeError):
    """The batch cannot keep its budget or pay for itself: said before anything is sent."""


def money(value: object, name: str = "max_spend") -> Decimal:
    """An amount as an exact, finite, non-negative ``Decimal`` (``ValueError`` naming ``name``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an amount of money, got {value!r}")
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be an amount of money, got {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{name} must be a finite amount >= 0, got {value!r}")
    return amount


def _model(work: _Work) -> object:
    model = work.params.get("model")
    return model if model is not None else DEFAULT_MODELS.get(work.endpoint)


def job_cost(work: _Work, host: catalog.Host, region: catalog.Region | None) -> Cost:
    """What one job's image costs (unknown with the reason when the catalog cannot say)."""
    return image_cost(_model(work), host, region)


def spent_in(book: Manifest) -> Cost:
    """What the jobs the manifest records as billed cost (their ``cost`` fields), for a resume."""
    # One streaming pass keeping a small tuple per job (a resumed manifest may hold 100,000s).
    latest: dict[str, tuple[object, object] | None] = {}
    for event in book.events():
        recorded = event.get("cost")
        if event.get("status") not in BILLED:
            latest[event["id"]] = None
        elif isinstance(recorded, Mapping):
            latest[event["id"]] = (recorded.get("amount"), recorded.get("currency"))
        else:
            latest[event["id"]] = (None, None)
    total = Cost.total([])
    unknown = Cost(None, None, note="an earlier run's cost is not in the manifest")
    for entry in latest.values():
        if entry is None:
            continue
        amount, currency = entry
        try:
            value = money(amount) if amount is not None else None
        except ValueError:
            value = None
        total = total + (Cost(value, currency) if value is not None and currency in ("CNY", "USD") else unknown)
    return total


@dataclass
class Budget:
    """The batch's spend and, with ``limit``, the budget it keeps (see the module docstring)."""

    limit: Decimal | None
    earlier: Cost
    spent: Cost = field(default_factory=lambda: Cost.total([]))
    """Billed in this run."""
    _reserved: Decimal = Decimal(0)

    @property
    def total(self) -> Cost:
        return self.earlier + self.spent

    def check(self, costs: Iterable[Cost]) -> None:
        """Before the batch starts: a budget needs every price, in one currency."""
        if self.limit is None:
            return
        for cost in [self.earlier, *costs]:
            if cost.images and not cost.known:
                raise BudgetError(f"max_spend cannot be kept: a job's cost is {cost}")

    def reserve(self, cost: Cost) -> bool:
        """Whether a job of ``cost`` may start now (its price then counts as in flight)."""
        if self.limit is None:
            return True
        assert cost.amount is not None
        used = (self.total.amount or Decimal(0)) + self._reserved
        if used + cost.amount > self.limit:
            return False
        self._reserved += cost.amount
        return True

    def settle(self, cost: Cost, billed: Cost | None) -> None:
        """A job has ended: its reservation is released, and what it was billed (if any) is spent."""
        if self.limit is not None and cost.amount is not None:
            self._reserved -= cost.amount
        if billed is not None:
            self.spent = self.spent + billed

    def stop_reason(self, cost: Cost) -> str:
        used = Cost((self.total.amount or Decimal(0)) + self._reserved, cost.currency)
        return f"max_spend {_amount(self.limit, cost)} reached: {used} spent or in flight, the next image costs {cost}"


def _amount(limit: Decimal | None, like: Cost) -> str:
    return str(Cost(limit, like.currency)) if limit is not None and like.currency else str(limit)


@dataclass
class Estimate:
    """What :func:`~stepfun_openai.batch.estimate` found: nothing is generated to find it."""

    jobs: int
    """Every job of the batch."""
    todo: int
    """Those the manifest does not record as finished (what a run would send)."""
    invalid: int
    """Jobs that could not be read (never sent, never billed)."""
    cost: Cost
    """What the ``todo`` jobs would cost at the catalog's prices (unknown with the reason)."""
    spent: Cost
    """What the manifest records as already billed."""
    balance: Account | None = None
    balance_error: str | None = None

    def __str__(self) -> str:
        lines = [
            f"{self.jobs} job(s), {self.todo} to run"
            + (f" ({self.jobs - self.todo} finished earlier)" if self.jobs > self.todo else "")
            + (f", {self.invalid} unreadable" if self.invalid else ""),
            f"estimated cost: {self.cost}" + (f" (already spent: {self.spent})" if self.spent.images else ""),
        ]
        if self.balance is not None:
            kind = self.balance.type or "unknown"
            lines.append(f"balance: {self.balance.balance} ({kind} account)")
        elif self.balance_error:
            lines.append(f"balance: unknown ({self.balance_error})")
        return "\n".join(lines)

    @property
    def affordable(self) -> bool | None:
        """Whether the balance covers the estimate: ``None`` when either is unknown or the account
        is postpaid (billed afterwards)."""
        if self.balance is None or not self.balance.prepaid or self.balance.balance is None or not self.cost.known:
            return None
        assert self.cost.amount is not None
        return Decimal(str(self.balance.balance)) >= self.cost.amount


def host_and_region(client: StepFun | AsyncStepFun) -> tuple[catalog.Host, catalog.Region | None]:
    return catalog.host_of(client.base_url), client.region


def estimate(
    jobs: Iterable[Any],
    *,
    out: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    client: StepFun | AsyncStepFun | None = None,
    defaults: Mapping[str, Any] | None = None,
    balance: bool = True,
) -> Estimate:
    """What a batch of ``jobs`` would cost, without generating anything (``--dry-run``): the job
    count, what the jobs not yet finished (per the manifest in ``out``, if any) cost at the
    catalog's prices, what earlier runs spent, and, with ``balance``, the account's balance (one
    ``GET /v1/accounts``; an error reading it is reported, not raised)."""
    from .._client import StepFun
    from ._jobs import _check_defaults, _prepare

    _check_defaults(defaults or {})
    works = _prepare(list(jobs), defaults or {})
    sync = client if isinstance(client, StepFun) else client.to_sync() if client is not None else StepFun()
    host, region = catalog.host_of(sync.base_url), sync.region
    path = Path(manifest) if manifest is not None else Path(out) / "manifest.jsonl" if out is not None else None
    finished: Mapping[str, Any] = {}
    spent = Cost.total([])
    if path is not None and path.exists():
        from ._manifest import Manifest

        book = Manifest(path)
        finished, spent = book.finished(), spent_in(book)
    todo = [work for work in works if work.id not in finished]
    readable = [work for work in todo if work.invalid is None]
    found = Estimate(
        jobs=len(works),
        todo=len(todo),
        invalid=len(todo) - len(readable),
        cost=Cost.total(job_cost(work, host, region) for work in readable),
        spent=spent,
    )
    if balance:
        try:
            found.balance = sync.with_options(max_retries=0, timeout=30).account.retrieve()
        except openai.APIError as exc:
            found.balance_error = f"{type(exc).__name__}: {exc}"
    if sync is not client:
        sync.close()
    return found
