"""Injected failures: what a flaky gateway, an overloaded backend or a broken proxy sends.

Random faults draw from one ``random.Random(fault_seed)`` under a lock, one draw per image
request, so a run with the same seed and the same request order fails the same way.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping

__all__ = ["BODY_FAULTS", "FAULT_KINDS", "STATUS_FAULTS", "FaultInjector", "parse_faults"]

STATUS_FAULTS: dict[str, tuple[int, str, str]] = {
    "500": (500, "server_error", "internal server error"),
    "502": (502, "server_error", "bad gateway"),
    "503": (503, "server_error", "service unavailable, please retry later"),
    "504": (504, "server_error", "gateway timeout"),
    "408": (408, "request_timeout", "request timeout"),
    "429": (429, "rate_limited", ""),  # message filled in from the account's limits
    "429-quota": (
        429,
        "quota_exceeded",
        "Your account balance is insufficient (quota exceeded). Please top up at https://platform.stepfun.com/top-up.",
    ),
    "402": (
        402,
        "insufficient_balance",
        "Your account balance is insufficient. Please top up at https://platform.stepfun.com/top-up.",
    ),
    "451": (451, "censorship_blocked", "The content you provided or machine outputted is blocked."),
    "error-200": (200, "server_error", "internal server error"),
}
"""Faults answered at once with an error envelope: kind -> (status, type, message)."""

BODY_FAULTS = ("reset", "slow", "malformed", "html", "empty-data", "bad-b64")
"""Faults that damage the transport or the body rather than answer with an error envelope."""

FAULT_KINDS: tuple[str, ...] = (*STATUS_FAULTS, *BODY_FAULTS)


def parse_faults(spec: str | Mapping[str, float] | None) -> dict[str, float]:
    """``"503=0.1,reset=0.02"`` (or a mapping) -> ``{"503": 0.1, "reset": 0.02}``, checked."""
    if not spec:
        return {}
    items: list[tuple[str, str | float]]
    if isinstance(spec, str):
        items = []
        for part in spec.split(","):
            if not part.strip():
                continue
            name, sep, text = part.partition("=")
            if not sep:
                raise ValueError(f"fault {part.strip()!r} needs a probability, e.g. {part.strip()}=0.05")
            items.append((name.strip(), text.strip()))
    else:
        items = list(spec.items())
    faults: dict[str, float] = {}
    for kind, value in items:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
        probability = float(value)
        if not 0 <= probability <= 1:
            raise ValueError(f"fault {kind}: probability {probability} is not in [0, 1]")
        faults[kind] = probability
    if sum(faults.values()) > 1 + 1e-9:
        raise ValueError(f"fault probabilities add up to {sum(faults.values()):.3f}, more than 1")
    return faults


class FaultInjector:
    def __init__(self, faults: Mapping[str, float], seed: int | None) -> None:
        self._faults = dict(faults)
        self._seed = seed
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def draw(self) -> str | None:
        """The fault for the next request, or ``None``."""
        if not self._faults:
            return None
        with self._lock:
            roll = self._random.random()
        for kind, probability in self._faults.items():
            if roll < probability:
                return kind
            roll -= probability
        return None

    def reset(self) -> None:
        """Restart the sequence, so a test can replay it after ``/_emulator/reset``."""
        with self._lock:
            self._random = random.Random(self._seed)
