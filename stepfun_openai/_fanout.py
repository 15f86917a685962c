"""``n > 1``: StepFun makes one image per request, so the client sends ``n`` requests at once.

OpenAI SDK users pass ``n=4``; StepFun refuses it. With fan-out on (the default;
``StepFun(fan_out=False)`` refuses ``n > 1`` locally instead), the call is prepared once with one
image, then sent ``n`` times concurrently, each request under the client's retry policy and with its
own stable seed: ``seed, seed + 1, ...`` when the caller gave one (so the set is reproducible), a
fresh stable seed each otherwise. The images come back in one response, in order; its ``cost`` is
the total. When some requests fail, :class:`PartialImagesError` carries the images that succeeded.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from openai import NotGiven, Omit, omit

from . import catalog
from ._compat import RAW_RESPONSE_HEADER
from ._exceptions import PartialImagesError, StepFunValidationError

if TYPE_CHECKING:
    from ._requests import PreparedRequest
    from .types import StepFunImagesResponse

__all__ = ["MAX_N", "FanOut", "plan"]

MAX_N = 10
"""The most images one call may ask for (``n``), as in OpenAI's image API: ``n`` requests at once."""


@dataclasses.dataclass
class FanOut:
    """``n`` requests for one call: the first as prepared, the others with their own seeds."""

    n: int
    user_seed: int | None

    def requests(self, first: PreparedRequest) -> list[PreparedRequest]:
        from ._requests import next_seed

        seeds: list[int | None]
        if self.user_seed is not None:
            seeds = [(self.user_seed - 1 + i) % catalog.SEED_MAX + 1 for i in range(self.n)]
        elif first.seed is not None:  # the client's stable seed: one each
            seeds = [first.seed, *(next_seed() for _ in range(self.n - 1))]
        else:  # stable_seed=False and no seed: the server picks each
            seeds = [None] * self.n
        return [first if i == 0 and seeds[0] == first.seed else first.with_seed(seed) for i, seed in enumerate(seeds)]

    def combine(self, outcomes: Sequence[StepFunImagesResponse | BaseException]) -> StepFunImagesResponse:
        """One response with every image in order, or :class:`PartialImagesError` (the first error
        itself when all failed)."""
        responses = [o for o in outcomes if not isinstance(o, BaseException)]
        errors = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        if errors and not responses:
            raise errors[0][1]
        combined = responses[0].model_copy()
        combined.data = [image for response in responses for image in response.images]
        combined._trace_id = responses[0].trace_id
        if errors:
            raise PartialImagesError(combined, errors, self.n)
        return combined


def plan(client: Any, kwargs: dict[str, Any]) -> FanOut | None:
    """A :class:`FanOut` when ``kwargs`` ask for ``n > 1`` and the client fans out (``kwargs`` then
    ask for one image), else ``None`` (the call goes as it is; validation judges ``n``)."""
    n = kwargs.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 1:
        return None
    settings = getattr(client, "_stepfun_settings", None)
    headers = kwargs.get("extra_headers") or {}
    if not getattr(settings, "fan_out", False) or RAW_RESPONSE_HEADER in headers:
        return None  # refused by validation, as StepFun would refuse it
    if n > MAX_N:
        raise StepFunValidationError(
            "n", n, f"1..{MAX_N} (StepFun makes one image per request; the client sends n requests at once)"
        )
    seed = kwargs.get("seed")
    user_seed = seed if isinstance(seed, int) and not isinstance(seed, bool) and seed > 0 else None
    if isinstance(seed, (Omit, NotGiven)) or seed is None:
        user_seed = None
    kwargs["n"] = omit
    return FanOut(n, user_seed)


def send_all(
    requests: Sequence[PreparedRequest], send: Callable[[PreparedRequest], StepFunImagesResponse]
) -> list[Any]:
    """Send each request in its own thread (the sync client blocks per request)."""

    def outcome(request: PreparedRequest) -> Any:
        try:
            return send(request)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(requests), thread_name_prefix="stepfun-n") as pool:
        return list(pool.map(outcome, requests))


async def asend_all(
    requests: Sequence[PreparedRequest], send: Callable[[PreparedRequest], Awaitable[StepFunImagesResponse]]
) -> list[Any]:
    """Send every request concurrently on the running loop."""
    return list(await asyncio.gather(*(send(request) for request in requests), return_exceptions=True))
