"""The batch's one writer: image files and manifest lines committed in groups, off the event loop.

A finished job hands its outcome to :meth:`GroupWriter.commit` and waits for it to be durable
(so a crash repeats at most the jobs in flight); the event loop itself never waits for the disk.
One thread takes all that was handed over since its last round and commits it as a group, so
the jobs finished meanwhile share one sync: every image written
to a temporary file, the file system synced once, every file renamed into place, the directory
synced (:func:`stepfun_openai._files.write_group`), then the group's manifest lines appended with
one flush and one fsync. The order is the crash safety: a line is only written once its files are
complete and durable, so a crash leaves either no line (the job runs again on resume) or a line
whose files are whole.

Bounded: :meth:`~GroupWriter.submit` waits while more than ``max_pending_bytes`` of images wait
for the disk (at least one job is always let through), and a group holds at most ``max_group``
jobs. Each image is decoded once, on the event loop (CPU work on this thread would hold the GIL
against the loop; this thread mostly waits for the disk), and dropped once written.
"""

from __future__ import annotations

import asyncio
import collections
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._files import write_group
from .._metadata import embed_png_metadata, sidecar_path
from .._sniff import sniff
from ._manifest import Manifest

if TYPE_CHECKING:
    from ..types import StepFunImage

__all__ = ["Commit", "GroupWriter"]

DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Base64 of finished images waiting for the disk, at most (about 32 images of 1024x1024)."""
DEFAULT_MAX_GROUP = 512

_EXTENSIONS = {"jpeg": "jpg"}


@dataclass
class Commit:
    """One job's outcome: its manifest line, and the images to write first (``stem`` names them:
    ``<stem>.png``, ``<stem>-1.png``, ...; the writer fills in the line's ``file``/``files``)."""

    event: dict[str, Any]
    images: list[StepFunImage] = field(default_factory=list)
    stem: str = ""
    reason: str | None = None
    files: list[Path] = field(default_factory=list)
    done: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(len(image.b64_json or "") for image in self.images)


class GroupWriter:
    """Commits :class:`Commit`\\ s in groups from one thread; ``on_committed`` is called on the
    event loop with each committed group, in order."""

    def __init__(
        self,
        manifest: Manifest,
        out: Path,
        *,
        on_committed: Callable[[list[Commit]], None],
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_group: int = DEFAULT_MAX_GROUP,
    ) -> None:
        self._manifest = manifest
        self._out = out
        self._on_committed = on_committed
        self._max_pending_bytes = max_pending_bytes
        self._max_group = max_group
        self._queue: queue.SimpleQueue[Commit | None] = queue.SimpleQueue()
        self._done: collections.deque[list[Commit]] = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._pending = 0
        self._pending_bytes = 0
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._error: BaseException | None = None
        self._waiting: set[asyncio.Future[None]] = set()
        self._thread = threading.Thread(target=self._work, name="stepfun-batch-writer", daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the writer (a full disk, a lost permission), if any."""
        return self._error

    async def commit(self, commit: Commit) -> None:
        """Hand ``commit`` to the writer and wait until it is committed (its files in place, its line
        durable). Many jobs wait at once and are committed together, so a job's wait is one group's
        commit, and a crash repeats at most the jobs that were in flight."""
        done = await self.submit(commit)
        await done

    async def submit(self, commit: Commit) -> asyncio.Future[None]:
        """Hand ``commit`` to the writer (waiting only while too many image bytes are pending);
        the future is done once it is committed."""
        nbytes = commit.nbytes
        while self._pending and self._pending_bytes + nbytes > self._max_pending_bytes and self._error is None:
            self._room.clear()
            await self._room.wait()
        if self._error is not None:
            raise self._error
        self._pending += 1
        self._pending_bytes += nbytes
        self._idle.clear()
        commit.done = self._loop.create_future()
        self._waiting.add(commit.done)
        self._queue.put(commit)
        return commit.done

    async def drain(self) -> None:
        """Wait until everything submitted is committed (and raise the writer's error, if any)."""
        while self._pending and self._error is None:
            await self._idle.wait()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Commit what was submitted, stop the thread, and report the last groups (callable from
        any state of the loop, e.g. after Ctrl-C)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._apply()

    # -- the event loop side --

    def _apply(self) -> None:
        while self._done:
            group = self._done.popleft()
            self._pending -= len(group)
            self._pending_bytes -= sum(commit.nbytes for commit in group)
            for commit in group:
                commit.images = []  # the response can go: its image is on disk
            self._on_committed(group)
            for commit in group:
                if commit.done is not None:
                    self._waiting.discard(commit.done)
                    if not commit.done.done():
                        commit.done.set_result(None)
        if self._error is not None:
            for waiting in self._waiting:
                if not waiting.done():
                    waiting.set_exception(self._error)
            self._waiting.clear()
        self._room.set()
        if self._pending <= 0 or self._error is not None:
            self._idle.set()

    def _notify(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._apply)
        except RuntimeError:  # the loop is closed: close() applies what is left
            pass

    # -- the writer thread --

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < self._max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            try:
                self._commit(group)
            except BaseException as exc:
                self._error = exc
                self._notify()
                return
            self._done.append(group)
            self._notify()
            if stop:
                return

    def _commit(self, group: list[Commit]) -> None:
        files = [file for commit in group for file in self._files_of(commit)]
        # Every file complete and durable under its final name (one sync for the whole group)
        # before the lines that vouch for them.
        write_group(files)
        self._manifest.append_many([commit.event for commit in group])

    def _files_of(self, commit: Commit) -> list[tuple[Path, bytes]]:
        """The files of one job: each image (decoded on the event loop, cached on the image) with
        its provenance inside (PNG) or in a ``.json`` sidecar (other formats), as ``save()`` does."""
        files: list[tuple[Path, bytes]] = []
        for number, image in enumerate(commit.images):
            data = image.read()
            extension = sniff(data[:64]).format or "png"
            suffix = "" if number == 0 else f"-{number}"
            path = self._out / f"{commit.stem}{suffix}.{_EXTENSIONS.get(extension, extension)}"
            if extension == "png":
                files.append((path, embed_png_metadata(data, image.metadata)))
            else:
                files += [(path, data), (sidecar_path(path), image.metadata.to_json().encode("utf-8"))]
            commit.files.append(path)
        if commit.files:
            commit.event["file"] = self._relative(commit.files[0])
            if len(commit.files) > 1:
                commit.event["files"] = [self._relative(path) for path in commit.files]
        return files

    def _relative(self, path: Path) -> str:
        try:
            return os.path.relpath(path, self._manifest.path.parent)
        except ValueError:  # pragma: no cover - another drive on Windows
            return str(path)
