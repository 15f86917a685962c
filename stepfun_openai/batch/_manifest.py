"""The batch's durable state: the JSONL manifest, and the clean-up of temporary image files.

Crash safety comes from the order of writes: an image is written (``_files``) to a temporary name, fsynced
and renamed into place; only then is its manifest line appended, flushed and fsynced. A crash
at any point leaves either no line (the job runs again on resume and overwrites the file, also
atomically) or a line whose file is complete. A line cut short by a crash is skipped on reading.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .._files import TEMP_SUFFIX

__all__ = [
    "FINISHED",
    "Manifest",
    "ManifestLockedError",
    "finished_of",
    "parse_events",
    "remove_stale_temp_files",
]

FINISHED = frozenset({"succeeded", "content_filtered", "blocked", "invalid"})
"""Statuses that are final: a resumed batch does not run these jobs again. ``failed`` (a transient
or account error that outlived the retries) runs again."""

_STALE_TEMP = re.compile(
    r"^\..+\.(png|jpg|jpeg|webp|gif)(\.json)?\.[0-9a-f]+" + re.escape(TEMP_SUFFIX) + r"$"  # _files' temp names
    r"|^\..+\.stepfun-tmp-[0-9a-f]+$"  # those of versions that wrote the batch's files themselves
)
"""Temporary files a killed run leaves: ``StepFunImage.save`` writes the batch's images and sidecars
through ``_files`` (``.<name>.<hex>.part``). Only names this package makes are matched, so no other
hidden file is touched."""


class ManifestLockedError(RuntimeError):
    """Another process is running a batch with the same manifest."""


def remove_stale_temp_files(directory: Path) -> int:
    """Delete temporary files a killed run left behind; returns how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    for entry in directory.iterdir():
        if _STALE_TEMP.match(entry.name) and entry.is_file():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    return removed


class Manifest:
    """One JSON object a line, one line per job event; the last line of a job id wins."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()

    def read(self) -> dict[str, dict[str, Any]]:
        """The last event of every job id (lines cut short by a crash are skipped)."""
        latest: dict[str, dict[str, Any]] = {}
        for event in self.events():
            latest[event["id"]] = event
        return latest

    def events(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            yield from parse_events(handle)

    def finished(self) -> dict[str, tuple[str, str | None]]:
        """``job id -> (status, error type)`` of the jobs a resumed batch skips. Only these two
        strings are kept per job, so resuming a long manifest costs little memory."""
        return finished_of(self.events())

    def open(self) -> None:
        """Open for appending, holding an exclusive lock so two batches cannot share the manifest."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            _lock_exclusive(handle, self.path)
            handle.seek(0, os.SEEK_END)
            if handle.tell() > 0:
                handle.seek(handle.tell() - 1)
                if handle.read(1) != "\n":
                    handle.write("\n")  # a line cut short by a crash stays on a line of its own
        except BaseException:
            handle.close()
            raise
        self._handle = handle

    def append(self, event: Mapping[str, Any]) -> None:
        """Write one event durably: the line is on disk when this returns. Thread-safe."""
        self.append_many([event])

    def append_many(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Write events durably, one flush and one fsync for all: on disk when this returns."""
        self.append_lines(self.lines(events))

    @staticmethod
    def lines(events: Sequence[Mapping[str, Any]]) -> str:
        return "".join(json.dumps(event, ensure_ascii=False, default=str) + "\n" for event in events)

    def append_lines(self, text: str) -> None:
        """Append ``text`` (whole lines from :meth:`lines`) durably: one write, one flush, one fsync."""
        with self._lock:
            if self._handle is None:
                raise RuntimeError("the manifest is not open")
            self._handle.write(text)
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def parse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The events of manifest lines; a line cut short by a crash (or any other non-event) is skipped."""
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("id"), str):
            yield event


def finished_of(events: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """``job id -> (status, error type)`` of the finished jobs among ``events`` (in order: a later
    event of a job that is not final means it runs again)."""
    latest: dict[str, tuple[str, str | None]] = {}
    for event in events:
        status = event.get("status")
        if status in FINISHED:
            error = event.get("error")
            kind = error.get("type") if isinstance(error, Mapping) else None
            latest[event["id"]] = (str(status), kind if isinstance(kind, str) else None)
        else:
            latest.pop(event["id"], None)
    return latest


def _lock_exclusive(handle: IO[str], path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ManifestLockedError(
            f"another batch is already writing {path}; wait for it or use a different --manifest"
        ) from None
