"""What a batch did: counts, reasons, files; and the Ctrl-C exception that carries it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ._progress import format_duration
from ._ratelimit import Limits

# --- results ----------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What a batch did. Counts cover every job, including those finished by an earlier run."""

    total: int = 0
    succeeded: int = 0
    skipped: int = 0
    """Jobs already finished in an earlier run (not requested again)."""
    content_filtered: int = 0
    blocked: int = 0
    invalid: int = 0
    failed: int = 0
    """Jobs whose request failed (they run again when the batch is resumed)."""
    failures: Counter[str] = field(default_factory=Counter)
    """Why jobs did not produce an image, by reason (error type, ``content_filtered``, ...)."""
    generated: int = 0
    """Images generated in this run."""
    rate_limited: int = 0
    """429s seen in this run."""
    requests: int = 0
    """HTTP requests made in this run."""
    elapsed: float = 0.0
    out: Path = Path(".")
    manifest: Path = Path("manifest.jsonl")
    files: list[Path] = field(default_factory=list)
    """The images written in this run."""
    location: str | None = None
    """Where the images went when that is not a local folder (``s3://...``; a distributed batch)."""
    limits: Limits | None = None
    interrupted: bool = False
    stopped: str | None = None
    """Why the batch stopped early (a key, balance or permission error), if it did."""

    @property
    def pending(self) -> int:
        """Jobs without a final outcome yet (failed, interrupted, or never started)."""
        return self.total - self.succeeded - self.content_filtered - self.blocked - self.invalid

    @property
    def ok(self) -> bool:
        """Every job produced its image."""
        return self.succeeded == self.total

    @property
    def images_per_minute(self) -> float:
        return self.generated / self.elapsed * 60 if self.elapsed > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.succeeded} of {self.total} images done"
            + (f" ({self.skipped} finished in an earlier run)" if self.skipped else "")
            + f"; {self.generated} generated in {format_duration(self.elapsed)}"
            + f" ({self.images_per_minute:.1f} images/minute, {self.rate_limited} 429s seen)"
        ]
        not_started = self.not_started
        if self.failures or not_started:
            reasons = [f"{count} {reason}" for reason, count in self.failures.most_common()]
            if not_started:
                reasons.append(f"{not_started} not started")
            lines.append(f"not done: {', '.join(reasons)}")
        if self.location is not None:
            lines.append(f"images in {self.location}, manifest in {self.manifest}")
        else:
            lines.append(f"images in {self.out}/, manifest {self.manifest}")
        if self.stopped:
            lines.append(
                f"stopped early: {self.stopped}; {self.pending} job(s) pending: "
                "run the same batch again (same manifest) to resume"
            )
        return "\n".join(lines)

    @property
    def not_started(self) -> int:
        """Jobs with no outcome at all in this run or an earlier one (after an early stop or Ctrl-C)."""
        return self.pending - self.failed


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`. ``result`` holds what was done; finished jobs are in the manifest,
    so running the same batch again resumes it."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result
        super().__init__(
            f"batch interrupted: {result.succeeded} of {result.total} done; run it again with the same "
            f"manifest ({result.manifest}) to resume"
        )


def _count(result: BatchResult, status: str, reason: str | None = None) -> None:
    if status == "succeeded":
        result.succeeded += 1
    elif status == "content_filtered":
        result.content_filtered += 1
    elif status == "blocked":
        result.blocked += 1
    elif status == "invalid":
        result.invalid += 1
    else:
        result.failed += 1
    if status != "succeeded":
        result.failures[reason or status] += 1
