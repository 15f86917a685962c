"""What a batch did: counts, reasons, files; and the Ctrl-C exception that carries it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from .._cost import Cost
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
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    """The first few jobs that did not produce an image (:data:`PROBLEMS_SHOWN`, in the order
    they were recorded; earlier runs' first): ``(job id, status, message)``. Every one is in the
    manifest; these are what :meth:`summary` shows."""
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
    """Why the batch stopped early (a key, balance or permission error, the budget), if it did."""
    spent: Cost = field(default_factory=lambda: Cost.total([]))
    """What the batch's images cost at the catalog's prices, earlier runs (from the manifest)
    included; unknown (with the reason) when a price is."""
    max_spend: Decimal | None = None
    budget_reached: bool = False
    """The budget stopped the batch from starting more jobs (they stay pending)."""
    unreadable_lines: int = 0
    """Manifest lines skipped when resuming: cut short, not UTF-8 or JSON, too long or deep, or
    not a job event. The jobs they were about run (again) unless a readable line says otherwise."""
    missing_files: int = 0
    """Jobs the manifest recorded as succeeded whose image file is gone: they ran again."""

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
                reasons.append(f"{not_started} not started" + (" (budget)" if self.budget_reached else ""))
            lines.append(f"not done: {', '.join(reasons)}")
            lines += [f"  {status} job {job_id}: {_one_line(message)}" for job_id, status, message in self.problems]
            shown, recorded = len(self.problems), self.total - self.succeeded - not_started
            if recorded > shown:
                more = f"{recorded - shown} more" if shown else f"{recorded} jobs"
                lines.append(f"  ... {more}: every reason is in {self.manifest}")
        # An unknown spend would only say "no prices": shown when known, or when there is a budget.
        if (self.spent.images and self.spent.known) or self.max_spend is not None:
            budget = f" of a {Cost(self.max_spend, self.spent.currency)} budget" if self.max_spend is not None else ""
            budget = budget if self.spent.known or self.max_spend is None else f" (budget {self.max_spend})"
            lines.append(f"spent: {self.spent}{budget}")
        if self.location is not None:
            lines.append(f"images in {self.location}, manifest in {self.manifest}")
        else:
            lines.append(f"images in {self.out}/, manifest {self.manifest}")
        if self.unreadable_lines or self.missing_files:
            notes = []
            if self.unreadable_lines:
                notes.append(f"{self.unreadable_lines} unreadable line(s) skipped")
            if self.missing_files:
                notes.append(f"{self.missing_files} succeeded job(s) run again: their image file was missing")
            lines.append(f"manifest: {'; '.join(notes)}")
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


PROBLEMS_SHOWN = 5
"""Jobs without an image whose reason the summary shows (the manifest holds them all)."""
_MESSAGE_CHARS = 300


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 3] + "..."


def note_problem(result: BatchResult, job_id: str, status: str, error: object) -> None:
    """Keep a job's reason for the summary, while fewer than :data:`PROBLEMS_SHOWN` are kept."""
    if len(result.problems) >= PROBLEMS_SHOWN:
        return
    message = error.get("message") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    text = message if isinstance(message, str) else status
    if isinstance(kind, str) and kind not in text and kind != "StepFunValidationError":
        text = f"{kind}: {text}"
    result.problems.append((job_id, status, text))


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
