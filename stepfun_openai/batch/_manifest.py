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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from .._files import TEMP_SUFFIX
from .._group_files import append_durably, manifest_lines

__all__ = [
    "FINISHED",
    "MAX_LINE_BYTES",
    "Manifest",
    "ManifestLockedError",
    "finished_of",
    "parse_events",
    "remove_stale_temp_files",
]

FINISHED = frozenset({"succeeded", "content_filtered", "blocked", "invalid"})
"""Statuses that are final: a resumed batch does not run these jobs again. ``failed`` (a transient
or account error that outlived the retries) runs again, and so does an ``invalid`` job that was
refused locally (no HTTP status in its error): checking it again costs no request, and the fix
the refusal advised (``fit=True``, a corrected file, another default) then takes effect. A 400
from StepFun stays final: it cost a request, and the same request would get the same answer."""

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


MAX_LINE_BYTES = 1024 * 1024
"""The longest manifest line read; a longer one is skipped (and counted) without being held in
memory. The package writes lines of a few kilobytes (image payloads are never stored)."""


class Manifest:
    """One JSON object a line, one line per job event; the last line of a job id wins.

    Reading survives any file: a line that is cut short, not UTF-8, not JSON, nested too deeply,
    longer than ``MAX_LINE_BYTES``, or not an object with a string ``id`` and ``status`` is
    skipped and counted in ``skipped_lines``. A ``succeeded`` line counts only while the files it
    names exist: a job whose image was deleted runs again (counted in ``missing_files``).
    """

    def __init__(self, path: Path, *, files_root: Path | None = None) -> None:
        self.path = path
        self.files_root = files_root if files_root is not None else path.parent
        """What the file names of its lines are relative to (a shard's are its batch's folder)."""
        self._handle: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.skipped_lines = 0
        """Lines the last read skipped (unreadable, or not a job event)."""
        self.missing_files = 0
        """``succeeded`` jobs the last :meth:`finished` found without their image file."""

    def read(self) -> dict[str, dict[str, Any]]:
        """The last event of every job id (unreadable lines are skipped)."""
        latest: dict[str, dict[str, Any]] = {}
        for event in self.events():
            latest[event["id"]] = event
        return latest

    def events(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """Every readable job event, in order (from byte ``start`` on: a :meth:`size` taken
        earlier); ``skipped_lines`` counts the others."""
        self.skipped_lines = 0
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            handle.seek(start)
            for line in _lines(handle):
                if line is not None and not line.strip():
                    continue  # a blank line (one is added after a line cut short) is no event
                event = _event(line)
                if event is None:
                    self.skipped_lines += 1
                else:
                    yield event

    def finished(self) -> dict[str, tuple[str, str | None]]:
        """``job id -> (status, error type)`` of the jobs a resumed batch skips. Only these two
        strings are kept per job, so resuming a long manifest costs little memory. A ``succeeded``
        job counts only while its files exist (looked up as its line is read)."""
        self.missing_files = 0
        return finished_of(self.events(), exists=self._files_exist)

    def _files_exist(self, event: Mapping[str, Any]) -> bool:
        """Whether every file a ``succeeded`` line names (relative to the manifest's folder) is there."""
        files = event.get("files")
        names = files if isinstance(files, list) else [event.get("file")]
        base = os.fspath(self.files_root)  # str paths: a resume checks every finished job's files
        # isfile is False for a name the file system cannot hold (NUL, too long), as for a missing one.
        present = bool(names) and all(
            isinstance(name, str) and os.path.isfile(os.path.join(base, name)) for name in names
        )
        if not present:
            self.missing_files += 1
        return present

    def errors(self, ids: Collection[str]) -> dict[str, object]:
        """The ``error`` of each of ``ids`` on its last line: for the few reasons a resumed
        batch's summary shows (one more pass, holding only these)."""
        wanted = set(ids)
        found: dict[str, object] = {}
        for event in self.events():
            if event["id"] in wanted:
                found[event["id"]] = event.get("error")
        return found

    def open(self) -> None:
        """Open for appending, holding an exclusive lock so two batches cannot share the manifest."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab+")
        try:
            _lock_exclusive(handle, self.path)
            _end_line(handle.fileno())
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
        return manifest_lines(events)

    def fileno(self) -> int:
        """The open manifest's descriptor (the batch's writer process appends through it)."""
        if self._handle is None:
            raise RuntimeError("the manifest is not open")
        return self._handle.fileno()

    def size(self) -> int:
        """The open manifest's length in bytes (where the next line will start)."""
        return os.fstat(self.fileno()).st_size

    def end_line(self) -> None:
        """If the manifest ends inside a line (a writer killed while appending), end it there:
        the next line starts on a line of its own, and the piece is skipped on reading."""
        with self._lock:
            _end_line(self.fileno())

    def append_lines(self, text: str) -> None:
        """Append ``text`` (whole lines from :meth:`lines`) durably: one write, then one fsync."""
        with self._lock:
            if self._handle is None:
                raise RuntimeError("the manifest is not open")
            append_durably(self._handle.fileno(), text)

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def _end_line(fd: int) -> None:
    """Append a newline to the file open (for appending) at ``fd`` unless it is empty or ends with one."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    os.lseek(fd, size - 1, os.SEEK_SET)  # writes still go to the end: the file is open for appending
    if os.read(fd, 1) != b"\n":
        append_durably(fd, "\n")


def _lines(handle: IO[bytes]) -> Iterator[bytes | None]:
    """The lines of ``handle``, ``None`` for one longer than ``MAX_LINE_BYTES`` (read past in
    pieces, never held whole)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) <= MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = handle.readline(MAX_LINE_BYTES)
        yield None


def _event(line: bytes | None) -> dict[str, Any] | None:
    """A job event, or ``None`` for a line that is not one (any bytes may be on a line)."""
    if line is None:
        return None
    try:
        event = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than the parser goes
        return None
    if isinstance(event, dict) and isinstance(event.get("id"), str) and isinstance(event.get("status"), str):
        return event
    return None


def parse_events(lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
    """The job events among ``lines`` (a manifest shard read from any store): a line that is not
    one (cut short by a crash, not UTF-8, not JSON, too deep, too long) is skipped."""
    for line in lines:
        raw = line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line
        event = _event(raw if len(raw) <= MAX_LINE_BYTES else None)
        if event is not None:
            yield event


def finished_of(
    events: Iterable[Mapping[str, Any]], *, exists: Callable[[Mapping[str, Any]], bool] | None = None
) -> dict[str, tuple[str, str | None]]:
    """``job id -> (status, error type)`` of the finished jobs among ``events``, in order: a later
    event of a job that is not final means it runs again. A job refused locally (``invalid``
    without a server status) is checked again on resume, at no cost; with ``exists``, a
    ``succeeded`` job counts only while ``exists(event)`` says its files are there."""
    latest: dict[str, tuple[str, str | None]] = {}
    for event in events:
        status = event.get("status")
        error = event.get("error")
        refused_locally = status == "invalid" and not (isinstance(error, Mapping) and "status" in error)
        done = status in FINISHED and not refused_locally
        if done and (status != "succeeded" or exists is None or exists(event)):
            kind = error.get("type") if isinstance(error, Mapping) else None
            latest[event["id"]] = (str(status), kind if isinstance(kind, str) else None)
        else:
            latest.pop(event["id"], None)
    return latest


def _lock_exclusive(handle: IO[bytes], path: Path) -> None:
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
