"""The batch's one writer: image files and manifest lines committed in groups.

A finished job hands its outcome to :meth:`GroupWriter.commit` and waits until it is durable, so
a crash repeats at most the jobs in flight. The jobs that finish while groups are being committed
form the next group, which shares one sync. A group is committed in order (the crash safety):
every image written to a temporary file, the file system synced once, every file renamed into
place, the directory synced, then the group's manifest lines appended with one write and one
fsync. So a line is only written once its files are complete and durable: a crash leaves either
no line (the job runs again on resume) or a line whose files are whole.

Where the work runs. :class:`ProcessWriter` (a batch of ``PROCESS_MIN_JOBS`` jobs or more, on two
cores or more): in a writer process (:mod:`stepfun_openai._writer_process`), names, provenance,
files, syncs and lines alike; the event loop only pickles each group and writes it to a pipe, so
none of it holds the loop's GIL (measured: a batch of small images at 0.69 of ``AsyncStepFun``'s
speed with the thread, about 0.9 with the process). :class:`GroupWriter` alone (smaller batches,
one core, distributed workers, fsspec outputs): names and provenance on the event loop, every
system call (creating and writing the files, the syncs, the renames and the manifest append) on
a worker thread, one hand-off a group. Creating a file on the loop cost about 130 us while a sync
was running (it waits for the journal), 19 us otherwise.

Bounded: a group holds at most ``max_group`` jobs; images are decoded once, on the event loop,
and released once written; the writer process is waited for at most ``PROCESS_CLOSE_TIMEOUT``
when the batch ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import selectors
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import claim_temps, discard_temps, fsync_dir, sync_temps, write_group, write_temps
from .._group_files import GroupFiles, ImageParts
from .._writer_process import READY, encode, take_message
from ._manifest import Manifest, remove_stale_temp_files

__all__ = ["Commit", "GroupWriter", "ProcessWriter", "open_writer"]

log = logging.getLogger("stepfun_openai")

DEFAULT_MAX_GROUP = 512
DEFAULT_PARALLEL = 1
"""Groups committed at once. One is fastest here (measured, 3,000 small jobs at concurrency 64:
723 jobs/s with 1, 685 with 2, 632 with 4, 507 with 16): the jobs that finish during a commit
all go into the next group, and larger groups cost less per job."""


@dataclass
class _Group:
    commits: list[Commit]
    temps: list[tuple[Path, Path]] = field(default_factory=list)
    files: list[tuple[Path, bytes]] = field(default_factory=list)
    """The files to write (names and bytes), until the sync thread has written them."""
    durable: bool = False
    """Its lines are in the manifest (set by the sync thread)."""
    since: int | None = None
    """The manifest's size when the group went to the writer process: its lines come after."""


@dataclass
class Commit:
    """One job's outcome: its manifest line, and the images to write first (each its bytes, request
    and seed; ``stem`` names them:
    ``<stem>.png``, ``<stem>-1.png``, ...; the writer fills in the line's ``file``/``files``)."""

    event: dict[str, Any]
    images: list[ImageParts] = field(default_factory=list)
    stem: str = ""
    reason: str | None = None
    files: list[Path] = field(default_factory=list)
    done: asyncio.Future[None] | None = field(default=None, repr=False)
    handed: Callable[[], None] | None = field(default=None, repr=False)
    """Called once the writer has the commit (at once, or when a writer process's pipe has it:
    from then on a crash of the batch does not lose it); the job's request slot is freed then."""


class GroupWriter:
    """Commits :class:`Commit`\\ s in groups; ``on_committed`` is called on the event loop with
    each committed group, in order."""

    def __init__(
        self,
        manifest: Manifest,
        out: Path,
        *,
        on_committed: Callable[[list[Commit]], None],
        max_group: int = DEFAULT_MAX_GROUP,
        parallel: int = DEFAULT_PARALLEL,
        relative_to: Path | None = None,
    ) -> None:
        self._manifest = manifest
        self._out = out
        self._names = GroupFiles(out, manifest.path.parent if relative_to is None else relative_to)
        self._on_committed = on_committed
        self._max_group = max_group
        self._parallel = parallel
        self._loop = asyncio.get_running_loop()
        self._waiting: list[Commit] = []
        self._running: dict[asyncio.Future[None], _Group] = {}
        self._error: BaseException | None = None
        self._disk = ThreadPoolExecutor(parallel, thread_name_prefix="stepfun-batch-sync")

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the writer (a full disk, a lost permission), if any."""
        return self._error

    @property
    def outlives_the_batch(self) -> bool:
        """Whether a commit handed over is made durable even if the batch's process is killed
        (only a writer process's are): then jobs may wait for their commit beyond the concurrency."""
        return False

    async def commit(self, commit: Commit) -> None:
        """Hand ``commit`` to the writer and wait until it is committed (its files in place, its
        line durable); raises the writer's error if it stopped."""
        if self._error is not None:
            raise self._error
        commit.done = self._loop.create_future()
        self._waiting.append(commit)
        if not self.outlives_the_batch:
            _hand([commit])  # a crash loses it whenever: nothing to wait for
        self._start_groups()
        await commit.done

    async def drain(self) -> None:
        """Wait until everything handed over is committed (and raise the writer's error, if any)."""
        while self._running and self._error is None:
            await asyncio.wait(list(self._running))
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Stop, then commit what was handed over and not yet committed, synchronously (callable
        in any state of the loop, e.g. after Ctrl-C): finished images are not thrown away."""
        self._disk.shutdown(wait=True)  # the syncs in progress end first
        unfinished: list[Commit] = []
        for group in self._running.values():
            self._discard(group)  # a group cut short is written again below
            if group.durable:  # its lines were written, but the loop never saw it
                self._finish(group.commits)
            else:
                unfinished += group.commits
        self._running.clear()
        unfinished += self._waiting
        self._waiting = []
        self._release(unfinished)  # their names are chosen again below (the same ones, free again)
        if unfinished and self._error is None:
            try:
                files = [file for commit in unfinished for file in self._files_of(commit)]
                self._write_now(files, self._manifest.lines([commit.event for commit in unfinished]))
            except BaseException as exc:  # the caller reports its own error, if any
                self._error = exc
            else:
                self._finish(unfinished)

    # -- on the event loop --

    def _start_groups(self) -> None:
        # Called from a job's commit() or when a group is done, and started right here (no task to
        # schedule): each round trip through a busy loop would cost the waiting jobs an iteration.
        while self._waiting and len(self._running) < self._parallel and self._error is None:
            group = _Group(self._waiting[: self._max_group])
            del self._waiting[: len(group.commits)]
            try:
                done = self._launch(group)
            except BaseException as exc:
                self._fail(exc, group.commits)
                return
            self._running[done] = group
            done.add_done_callback(self._group_done)

    def _launch(self, group: _Group) -> asyncio.Future[None]:
        """Start making ``group`` durable; the future is done when it is."""
        files = [file for commit in group.commits for file in self._files_of(commit)]
        text = self._manifest.lines([commit.event for commit in group.commits])
        # Only handed over: creating a file waits for the journal while a sync runs (the thread's).
        group.files = files
        return self._loop.run_in_executor(self._disk, self._make_durable, group, text)

    def _group_done(self, done: asyncio.Future[None]) -> None:
        group = self._running.pop(done, None)
        if group is None or done.cancelled():
            return
        error = done.exception()
        if error is not None:
            self._discard(group)
            self._fail(error, group.commits)
            return
        self._finish(group.commits)
        self._start_groups()

    # -- where the files go: a local folder here (``_store.StoreWriter``: any fsspec location) --

    def _discard(self, group: _Group) -> None:
        group.files = []
        discard_temps(group.temps)
        group.temps = []

    def _write_now(self, files: list[tuple[Path, bytes]], text: str) -> None:
        """Files then lines, durably, on the calling thread (``close``)."""
        write_group(files)
        self._manifest.append_lines(text)

    def _make_durable(self, group: _Group, text: str) -> None:
        """On a worker thread: the group's files written to temporary names, synced and renamed
        into place, the renames synced, then its lines appended (and synced) to the manifest."""
        group.temps = write_temps(group.files)
        group.files = []
        sync_temps(group.temps)
        directories = claim_temps(group.temps)
        group.temps = []
        for directory in directories:
            fsync_dir(directory)  # the renames are durable before the lines that vouch for them
        self._manifest.append_lines(text)
        group.durable = True

    def _finish(self, group: list[Commit]) -> None:
        self._release(group)
        for commit in group:
            commit.images = []  # the response can go: its image is on disk
        self._on_committed(group)
        for commit in group:
            if commit.done is not None:
                _settle(commit.done)

    def _fail(self, exc: BaseException, group: list[Commit]) -> None:
        self._release(group)
        if self._error is None:
            self._error = exc
        failed, self._waiting = [*group, *self._waiting], []
        for commit in failed:
            if commit.done is not None:
                _settle(commit.done, self._error)

    def _files_of(self, commit: Commit) -> list[tuple[Path, bytes]]:
        """The files of one job: each image (decoded on the event loop, cached on the image) with
        its provenance, exactly as ``save()`` stores it."""
        files, commit.files = self._names.files_of(commit.event, commit.stem, commit.images)
        return files

    def _release(self, group: list[Commit]) -> None:
        for commit in group:
            self._names.release(commit.files)


PROCESS_MIN_JOBS = 256
"""A batch with at least this many jobs to run commits through a writer process (the 40 ms it
takes to start pays for itself after a few hundred small images); a smaller one uses the thread."""
PROCESS_CLOSE_TIMEOUT = 300.0
"""Seconds ``close()`` waits for the writer process to commit what it was sent; the groups it
has not confirmed by then are committed by the batch's own process."""


class ProcessWriter(GroupWriter):
    """A :class:`GroupWriter` whose groups are made durable by a writer process
    (:mod:`stepfun_openai._writer_process`): once a turn, the event loop pickles the jobs that
    finished in it (their images out of band: not copied) and writes them to a pipe, and it reads
    the process's answers; the files' names, provenance, system calls and syncs, and the manifest's
    lines run on another core. A process that does not start leaves the groups to the thread."""

    def __init__(
        self,
        manifest: Manifest,
        out: Path,
        *,
        on_committed: Callable[[list[Commit]], None],
        max_group: int = DEFAULT_MAX_GROUP,
        relative_to: Path | None = None,
    ) -> None:
        # Every turn of the event loop sends what finished in it: the process groups them itself.
        super().__init__(
            manifest, out, on_committed=on_committed, max_group=max_group, parallel=sys.maxsize, relative_to=relative_to
        )
        self._process = _start_process(out, self._names.relative_base, manifest.fileno())
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to, self._from = self._process.stdin.fileno(), self._process.stdout.fileno()
        self._outbox: deque[tuple[memoryview, list[Commit]]] = deque()
        """The pieces to write to the pipe, each with the commits handed over once it is written
        (a message's last piece carries its group's)."""
        self._inbox = bytearray()
        self._replies: dict[int, tuple[asyncio.Future[None], _Group]] = {}
        self._sequence = itertools.count()
        self._writing = False
        self._ready = False
        """The process has said it started (its first message); groups sent before wait in the pipe."""
        self._send_soon = False
        self._thread = False
        """The process did not start: groups are committed on the writer thread."""
        os.set_blocking(self._to, False)
        os.set_blocking(self._from, False)
        _widen_pipe(self._to)
        self._loop.add_reader(self._from, self._readable)

    @property
    def outlives_the_batch(self) -> bool:
        return not self._thread

    def _start_groups(self) -> None:
        # Once a turn of the event loop: the jobs that finished in it go in one message. Sent at
        # once, not when the last group is done: a job handed over is the process's, so a batch
        # killed now loses only what is in flight.
        if not self._send_soon:
            self._send_soon = True
            self._loop.call_soon(self._send_waiting)

    def _send_waiting(self) -> None:
        self._send_soon = False
        super()._start_groups()

    def _launch(self, group: _Group) -> asyncio.Future[None]:
        if self._thread:
            return super()._launch(group)
        sequence = next(self._sequence)
        items = [
            (
                commit.event,
                commit.stem,
                [(pickle.PickleBuffer(data), context, seed) for data, context, seed in commit.images],
            )
            for commit in group.commits
        ]
        pieces = encode((sequence, items))
        group.since = self._manifest.size()
        done: asyncio.Future[None] = self._loop.create_future()
        self._replies[sequence] = (done, group)
        last = len(pieces) - 1
        self._outbox.extend((memoryview(piece), group.commits if n == last else []) for n, piece in enumerate(pieces))
        if not self._writing:
            self._flush()
        return done

    # -- the pipes, on the event loop --

    def _flush(self) -> None:
        try:
            while self._outbox:
                self._write_some()
        except BlockingIOError:  # the pipe is full: the rest when the process has read some
            if not self._writing:
                self._loop.add_writer(self._to, self._flush)
                self._writing = True
            return
        except OSError as exc:  # the process has ended
            self._ended(exc)
            return
        if self._writing:
            self._loop.remove_writer(self._to)
            self._writing = False

    def _readable(self) -> None:
        try:
            dones = self._receive()
        except (OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
            self._ended(exc)
            return
        if dones is None:
            self._ended(None)
            return
        for done in dones:
            _settle(done)
            self._group_done(done)  # at once, not an iteration of the busy loop later

    def _receive(self) -> list[asyncio.Future[None]] | None:
        """Read what the process has answered and apply it (:meth:`_answers`); the futures of the
        groups it answered about, or ``None`` at the end of its output. Raises for a broken pipe
        or a message that is not the process's."""
        try:
            data = os.read(self._from, 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        self._inbox += data
        dones: list[asyncio.Future[None]] = []
        while (taken := take_message(self._inbox)) is not None:
            message, used = taken
            del self._inbox[:used]
            dones += self._answers(message)
        return dones

    def _answers(self, message: Any) -> list[asyncio.Future[None]]:
        """The process's answers (about the groups it committed together), each applied to its
        group (its files, or the error set on its future); those groups' futures."""
        if not self._ready:
            if message != READY:
                raise ValueError(f"the writer process did not start as expected: {message!r}")
            self._ready = True
            return []
        return [done for answer in message if (done := self._answer(*answer)) is not None]

    def _answer(
        self, sequence: int, error: BaseException | None, paths: list[list[str]] | None
    ) -> asyncio.Future[None] | None:
        entry = self._replies.pop(sequence, None)
        if entry is None:
            return None
        done, group = entry
        if error is not None or paths is None:
            _settle(done, error or RuntimeError("the writer process answered without the files' names"))
            return done
        for commit, files in zip(group.commits, paths, strict=True):
            commit.files = [Path(file) for file in files]
        group.durable = True
        return done

    def _release(self, group: list[Commit]) -> None:
        """Names are chosen and given back in the process (here only by ``close()``'s fallback)."""
        if self._names.in_flight:
            super()._release(group)

    def _ended(self, exc: BaseException | None) -> None:
        """The process has ended (or its pipe broke): every group it has not confirmed fails; if it
        never started (an interpreter that cannot import the package, say), the batch commits on
        the writer thread instead, those groups first."""
        self._unwatch()
        code = self._process.poll()
        reason = f"exit code {code}" if code is not None else f"{type(exc).__name__}: {exc}" if exc else "pipe closed"
        pending, self._replies = list(self._replies.values()), {}
        if not self._ready and not self._thread:
            log.warning("the batch's writer process did not start (%s): the batch commits on a thread", reason)
            self._thread = True
            self._parallel = DEFAULT_PARALLEL
            self._outbox.clear()
            _hand([commit for _, group in pending for commit in group.commits] + self._waiting)
            for done, group in pending:
                _chain(super()._launch(group), done)
            return
        error = RuntimeError(f"the batch's writer process ended before committing every group ({reason})")
        for done, _ in pending:
            _settle(done, error)

    def _unwatch(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._from)
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._to)
            self._writing = False

    # -- the end --

    def close(self) -> None:
        """Send what is queued, wait (at most :data:`PROCESS_CLOSE_TIMEOUT`) for the process to
        confirm every group it was sent and to end, then as :meth:`GroupWriter.close`: what was
        handed over and not confirmed is committed here."""
        self._unwatch()
        try:
            self._drain_process(time.monotonic() + PROCESS_CLOSE_TIMEOUT)
        finally:
            self._end_process()
        self._replies.clear()
        self._adopt_unconfirmed()
        super().close()  # a group the process never committed is committed here

    def _adopt_unconfirmed(self) -> None:
        """After the process has ended: the jobs of the groups it did not confirm whose lines it
        appended all the same (it was stopped between its append and its answer) are committed;
        their files are those the lines name."""
        unconfirmed = [g for g in self._running.values() if not g.durable and g.since is not None]
        if not unconfirmed:
            return
        written = {event["id"]: event for event in self._manifest.events(min(g.since or 0 for g in unconfirmed))}
        base = self._names.relative_base
        for group in unconfirmed:
            adopted: list[Commit] = []
            left: list[Commit] = []
            for commit in group.commits:
                line = written.get(commit.event.get("id"))
                if line is None or line.get("status") != commit.event.get("status"):
                    left.append(commit)
                    continue
                files = line.get("files")
                names = files if isinstance(files, list) else [line.get("file")]
                commit.files = [base / name for name in names if isinstance(name, str)]
                adopted.append(commit)
            group.commits = left
            if adopted:
                self._finish(adopted)

    def _drain_process(self, deadline: float) -> None:
        """Blocking: the rest of the outbox written, the input closed, the answers read to the end."""
        with selectors.DefaultSelector() as selector:
            if self._outbox:
                selector.register(self._to, selectors.EVENT_WRITE)
            else:
                self._close_input()
            selector.register(self._from, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning("the batch's writer process did not finish in %.0f s", PROCESS_CLOSE_TIMEOUT)
                    return
                for key, _ in selector.select(remaining):
                    if key.fd == self._to:
                        try:
                            self._write_some()
                        except BlockingIOError:
                            continue
                        except OSError:
                            self._outbox.clear()
                        if not self._outbox:
                            selector.unregister(self._to)
                            self._close_input()
                    elif not self._read_some():
                        selector.unregister(self._from)

    def _write_some(self) -> None:
        """One write of the outbox's first piece (``BlockingIOError`` when the pipe is full)."""
        view, commits = self._outbox[0]
        written = os.write(self._to, view)
        if written < len(view):
            self._outbox[0] = (view[written:], commits)
        else:
            self._outbox.popleft()
            _hand(commits)

    def _read_some(self) -> bool:
        """Read and apply what the process has answered; ``False`` at the end of its output."""
        try:
            dones = self._receive()
        except (OSError, ValueError, TypeError, pickle.UnpicklingError):
            return False
        # The loop is not running: the futures are not resolved here (close() goes on).
        for done in dones or []:
            if done.done() and not done.cancelled() and self._error is None:
                self._error = done.exception()
        return dones is not None

    def _close_input(self) -> None:
        assert self._process.stdin is not None
        with contextlib.suppress(OSError):
            self._process.stdin.close()

    def _end_process(self) -> None:
        self._close_input()
        try:
            self._process.wait(timeout=max(0.0, min(5.0, PROCESS_CLOSE_TIMEOUT)))
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.returncode != 0 and not self._thread:  # killed (by us or anyone) or failed
            remove_stale_temp_files(self._out)  # those of the group it was writing
            self._manifest.end_line()  # a line it was cut off inside stays on a line of its own
        assert self._process.stdout is not None
        self._process.stdout.close()


PIPE_BYTES = 1 << 20
"""The pipe to the writer process holds this much where the system allows (Linux: up to
``/proc/sys/fs/pipe-max-size``, 1 MiB by default) instead of 64 KiB: a 2 MB image goes over in
2 writes of the event loop, not 32."""


def _settle(future: asyncio.Future[None], error: BaseException | None = None) -> None:
    """``future``'s outcome (``error``, or done), unless it has one. Not checked first: Ctrl-C
    cancels the batch's tasks, and their futures, between any two steps of the loop's callbacks."""
    with contextlib.suppress(asyncio.InvalidStateError):
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _hand(commits: list[Commit]) -> None:
    """Tell each commit's job that the writer has it (once: see ``Commit.handed``)."""
    for commit in commits:
        handed, commit.handed = commit.handed, None
        if handed is not None:
            handed()


def _chain(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    """``target`` gets ``source``'s outcome when it has one."""

    def copy(done: asyncio.Future[None]) -> None:
        if done.cancelled():
            target.cancel()
        else:
            _settle(target, done.exception())

    source.add_done_callback(copy)


def _widen_pipe(fd: int) -> None:
    import fcntl

    setting = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setting is not None:
        with contextlib.suppress(OSError):  # above the system's limit: the pipe stays as it is
            fcntl.fcntl(fd, setting, PIPE_BYTES)


def _writer_environment() -> dict[str, str]:
    """The batch's environment without its API keys and base URLs (``STEPFUN_*``, ``OPENAI_*``):
    the writer process sends nothing, and a key has no business in another process's memory."""
    return {name: value for name, value in os.environ.items() if not name.startswith(("STEPFUN_", "OPENAI_"))}


def _start_process(out: Path, relative_base: Path, manifest_fd: int) -> subprocess.Popen[bytes]:
    """The writer process, started (its first message says when it is ready: the batch does not
    wait for it, the groups sent meanwhile wait in the pipe)."""
    import stepfun_openai

    root = str(Path(stepfun_openai.__file__).resolve().parent.parent)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from stepfun_openai._writer_process import main; raise SystemExit(main(sys.argv[2:]))"
    )
    return subprocess.Popen(
        [sys.executable, "-I", "-c", code, root, str(out), str(relative_base), str(manifest_fd)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=(manifest_fd,),
        start_new_session=True,  # Ctrl-C in the terminal is the batch's to handle, not the writer's
        env=_writer_environment(),
    )


def _cores() -> int:
    """CPUs this process may run on (the writer process only helps with a second one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def open_writer(
    manifest: Manifest, out: Path, *, on_committed: Callable[[list[Commit]], None], jobs: int
) -> GroupWriter:
    """The writer of a local batch of ``jobs`` jobs: a :class:`ProcessWriter` from
    :data:`PROCESS_MIN_JOBS` jobs on (where processes can be started), else a :class:`GroupWriter`."""
    if jobs >= PROCESS_MIN_JOBS and os.name == "posix" and sys.executable and _cores() > 1:
        try:
            return ProcessWriter(manifest, out, on_committed=on_committed)
        except OSError as exc:
            log.info("the batch commits on a thread: %s", exc)
    return GroupWriter(manifest, out, on_committed=on_committed)
