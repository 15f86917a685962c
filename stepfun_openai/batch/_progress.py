"""The batch's progress display: a tqdm bar when tqdm is installed, else a plain periodic line.

tqdm is imported here, lazily (``pip install 'stepfun-openai[progress]'``); ``tqdm.auto`` picks
the notebook widget in Jupyter and the text bar in a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = ["Progress", "format_duration"]

PLAIN_INTERVAL = 5.0
"""Seconds between two plain progress lines."""


def format_duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """``update()`` after every job; ``close()`` at the end. ``enabled=False`` shows nothing."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        enabled: bool = True,
        description: str = "images",
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        use_tqdm: bool | None = None,
    ) -> None:
        self.total = total
        self.done = initial
        self._initial = initial
        self._enabled = enabled
        self._stream = stream
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._description = description
        self._bar: Any = None
        if enabled and use_tqdm is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                if use_tqdm:
                    raise ImportError("the progress bar needs tqdm: pip install 'stepfun-openai[progress]'") from None
            else:
                self._bar = tqdm(
                    total=total,
                    initial=initial,
                    unit="img",
                    desc=description,
                    dynamic_ncols=True,
                    file=stream,
                    smoothing=0.1,
                )

    @property
    def uses_tqdm(self) -> bool:
        return self._bar is not None

    def update(self, *, succeeded: int, failed: int, rate_limited: int, advance: int = 1) -> None:
        self.done += advance
        if not self._enabled:
            return
        if self._bar is not None:
            postfix = {"ok": succeeded, "failed": failed}
            if rate_limited:
                postfix["429s"] = rate_limited
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(advance)
            return
        now = self._clock()
        if now - self._last_line >= PLAIN_INTERVAL or self.done >= self.total:
            self._last_line = now
            self._write(self.line(succeeded=succeeded, failed=failed, rate_limited=rate_limited, now=now))

    def line(self, *, succeeded: int, failed: int, rate_limited: int, now: float | None = None) -> str:
        """The plain progress line: counts, rate and ETA."""
        now = self._clock() if now is None else now
        elapsed = max(now - self._started, 1e-9)
        per_second = (self.done - self._initial) / elapsed
        remaining = self.total - self.done
        eta = format_duration(remaining / per_second) if per_second > 0 else "?"
        text = (
            f"{self._description}: {self.done}/{self.total} done ({succeeded} ok, {failed} failed), "
            f"{per_second * 60:.1f} images/min, ETA {eta}"
        )
        if rate_limited:
            text += f", {rate_limited} 429s"
        return text

    def write(self, message: str) -> None:
        """A message that does not break the bar."""
        if self._bar is not None:
            self._bar.write(message, file=self._stream or sys.stderr)
        else:
            self._write(message)

    def _write(self, message: str) -> None:
        stream = self._stream or sys.stderr
        print(message, file=stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
