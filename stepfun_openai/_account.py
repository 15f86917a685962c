"""``client.account``: the balance of the account behind the key (``GET /v1/accounts``)."""

from __future__ import annotations

from ._compat import AsyncAPIResource, SyncAPIResource, make_request_options
from .types import Account

__all__ = ["Account", "AccountResource", "AsyncAccountResource"]


class AccountResource(SyncAPIResource):
    def retrieve(self, *, timeout: float | None = None) -> Account:
        """The account's balance and type (``GET /v1/accounts``), under the client's retry policy."""
        return self._get("/accounts", options=make_request_options(timeout=timeout), cast_to=Account)


class AsyncAccountResource(AsyncAPIResource):
    async def retrieve(self, *, timeout: float | None = None) -> Account:
        """Async :meth:`AccountResource.retrieve`."""
        return await self._get("/accounts", options=make_request_options(timeout=timeout), cast_to=Account)
