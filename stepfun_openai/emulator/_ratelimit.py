"""Per-account limits as StepFun applies them: concurrent requests and requests per minute."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

__all__ = ["RateLimiter", "rate_limit_message"]

_TOP_UP = "Please top up at https://platform.stepfun.com/top-up."


def rate_limit_message(kind: str, current: int, limit: int) -> str:
    """StepFun's 429 text; ``kind`` is ``"concurrency"`` or ``"RPM"``."""
    return f"request limited {kind} reached, current: {current}, limit: {limit}. {_TOP_UP}"


class RateLimiter:
    """Admits a request or says which limit it breaks.

    ``current`` in the message counts the rejected request too, as StepFun's does
    (``current: 11, limit: 10`` for the eleventh request of a minute). Rejected requests do not
    use up the minute's budget. ``clock`` is injectable so tests need not wait a minute.
    """

    def __init__(self, *, rpm: int | None, concurrency: int | None, clock: Callable[[], float]) -> None:
        self.rpm = rpm
        self.concurrency = concurrency
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: collections.deque[float] = collections.deque()
        self.in_flight = 0

    def acquire(self) -> str | None:
        """``None`` if admitted (call :meth:`release` when done), else StepFun's 429 message."""
        with self._lock:
            if self.concurrency is not None and self.in_flight >= self.concurrency:
                return rate_limit_message("concurrency", self.in_flight + 1, self.concurrency)
            if self.rpm is not None:
                now = self._clock()
                while self._admitted and self._admitted[0] <= now - 60:
                    self._admitted.popleft()
                if len(self._admitted) >= self.rpm:
                    return rate_limit_message("RPM", len(self._admitted) + 1, self.rpm)
                self._admitted.append(now)
            self.in_flight += 1
            return None

    def release(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reset(self) -> None:
        """Forget the minute's requests; requests still in flight keep their slots."""
        with self._lock:
            self._admitted.clear()
