"""Files written so that a final name never holds a partial file, and nothing unrelated is overwritten.

The package's one atomic writer: results (``save()``), the batch and the agent tools all write
through it. Data goes to an exclusively created temporary file beside the target, is flushed and
fsynced, and only then gets its final name, by a rename (``atomic_write``: replaces the target)
or a hard link (``exclusive_write``: takes the first free name, never replaces a file);
``write_group`` writes many files with one sync for all of them (the batch's writer).
"""

from __future__ import annotations

import itertools
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "candidate_names",
    "claim_temps",
    "discard_temps",
    "exclusive_write",
    "fsync_dir",
    "sync_filesystem",
    "sync_temps",
    "write_all",
    "write_group",
    "write_temps",
]

TEMP_SUFFIX = ".part"
"""Temporary files are ``.<final name>.<random hex>.part``: hidden, and never a final name."""


def fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable (a no-op where directories cannot be synced)."""
    if os.name != "posix":  # pragma: no cover - directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_NAME_ATTEMPTS = 10_000


_temp_prefix = secrets.token_hex(4)
_temp_numbers = itertools.count(1)


def _temp_token() -> str:
    """Hex unique to this process and call: a random prefix (new after a fork) and a counter, so a
    temporary name costs no system call (``O_EXCL`` still refuses a name that exists)."""
    return f"{_temp_prefix}{next(_temp_numbers):x}"


def _new_temp_prefix() -> None:
    global _temp_prefix
    _temp_prefix = secrets.token_hex(4)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_temp_prefix)


def _temp_file(directory: Path, name: str) -> tuple[int, Path]:
    """A new, exclusively created temporary file beside the final name. Created with mode 0o666,
    so the umask applies as for any other file the user writes (``mkstemp`` would give 0600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        temp = directory / f".{name}.{_temp_token()}{TEMP_SUFFIX}"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file in {directory}")  # pragma: no cover


def write_all(fd: int, data: bytes | memoryview) -> None:
    """All of ``data`` written to ``fd`` (a loop: the system may take it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_temp(path: Path, data: bytes) -> Path:
    """``data`` fully written and fsynced to a temporary file beside ``path``; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = _temp_file(path.parent, path.name)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        _discard(temp)
        raise
    return temp


def write_group(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write many files atomically and durably, paying for durability once per group rather
    than once per file where the system allows (Linux ``syncfs``): every temporary file written,
    synced, then every rename, then the directories synced. A final name never holds a partial
    file, even after a power cut; on error, no temporary file is left. The steps are separate
    functions for a caller that runs the slow ones (the syncs) on another thread."""
    temps = write_temps(files)
    try:
        sync_temps(temps)
        directories = claim_temps(temps)
    except BaseException:
        discard_temps(temps)
        raise
    for directory in directories:
        fsync_dir(directory)


def write_temps(files: Sequence[tuple[Path, bytes]]) -> list[tuple[Path, Path]]:
    """``(temporary file, final name)`` for each file, written but not yet synced (cheap: the data
    goes to the page cache). On error, the temporary files already written are removed."""
    temps: list[tuple[Path, Path]] = []
    try:
        for directory in {path.parent for path, _ in files}:
            directory.mkdir(parents=True, exist_ok=True)
        for path, data in files:
            fd, temp = _temp_file(path.parent, path.name)
            temps.append((temp, path))
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
    except BaseException:
        discard_temps(temps)
        raise
    return temps


def sync_temps(temps: Sequence[tuple[Path, Path]]) -> None:
    """Make the temporary files durable: one ``syncfs`` per file system, or else an fsync each."""
    if _group_sync() is not None:
        for directory in {path.parent for _, path in temps}:
            sync_filesystem(directory)
        return
    for temp, _ in temps:  # pragma: no cover - not Linux
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def claim_temps(temps: Sequence[tuple[Path, Path]]) -> set[Path]:
    """Rename each temporary file to its final name (replacing a file there); the directories,
    whose renames :func:`fsync_dir` makes durable."""
    for temp, path in temps:
        os.replace(temp, path)
    return {path.parent for _, path in temps}


def discard_temps(temps: Sequence[tuple[Path, Path]]) -> None:
    for temp, _ in temps:
        _discard(temp)


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):  # pragma: no cover - a libc without syncfs
        return None
    return function


_SYNCFS_UNKNOWN: Any = object()
_syncfs: Callable[[int], int] | None = _SYNCFS_UNKNOWN
"""libc's ``syncfs``, looked up on first use (``ctypes`` is not imported with the package)."""


def _group_sync() -> Callable[[int], int] | None:
    global _syncfs
    if _syncfs is _SYNCFS_UNKNOWN:
        _syncfs = _load_syncfs()
    return _syncfs


def sync_filesystem(directory: Path) -> None:
    """Flush everything written to the file system that holds ``directory`` (one ``syncfs``)."""
    syncfs = _group_sync()
    assert syncfs is not None
    fd = os.open(directory, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            import ctypes

            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error), str(directory))
    finally:
        os.close(fd)


def _discard(temp: Path) -> None:
    try:
        os.unlink(temp)
    except OSError:
        pass


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename over ``path`` (an existing file is
    replaced): a crash mid-write never leaves a half-written file under the final name (the
    temporary file is removed)."""
    temp = _write_temp(path, data)
    try:
        os.replace(temp, path)
    except BaseException:
        _discard(temp)
        raise


def candidate_names(path: Path) -> Iterator[Path]:
    """``name.png``, ``name-2.png``, ``name-3.png``, ..."""
    yield path
    for number in range(2, _NAME_ATTEMPTS):
        yield path.with_name(f"{path.stem}-{number}{path.suffix}")


def _claim(temp: Path, candidate: Path) -> bool:
    """Give the complete ``temp`` file the name ``candidate`` unless that name is taken (then
    ``False``). A hard link claims the name atomically and never replaces a file; where hard
    links are not supported, an ``O_EXCL`` placeholder reserves the name before the rename."""
    try:
        os.link(temp, candidate)
    except FileExistsError:
        return False
    except (OSError, NotImplementedError, AttributeError):
        # No hard links here (some network and FUSE file systems): the fallback raises real errors.
        return _claim_exclusive(temp, candidate)
    os.unlink(temp)
    return True


def _claim_exclusive(temp: Path, candidate: Path) -> bool:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(candidate, flags, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    try:
        os.replace(temp, candidate)
    except BaseException:
        _discard(candidate)  # the empty placeholder is ours: never leave it under the final name
        raise
    return True


def exclusive_write(path: Path, data: bytes, companion: tuple[Callable[[Path], Path], bytes] | None = None) -> Path:
    """Write ``data`` under ``path``, or ``name-2.png``, ``name-3.png``, ... if taken, and return
    the name used. Never overwrites a file, even when several threads or tasks save into the
    same folder at once; the file is complete before it gets its name.

    ``companion`` is ``(name_of, data)`` for a file that goes with it (a sidecar: ``name_of(path)``
    is its name): a name is used only if the companion's is free too, so neither overwrites."""
    temps = [_write_temp(path, data)]
    try:
        if companion is not None:
            temps.append(_write_temp(path, companion[1]))
        for candidate in candidate_names(path):
            if not _claim(temps[0], candidate):
                continue
            if companion is None:
                return candidate
            try:
                claimed = _claim(temps[1], companion[0](candidate))
            except BaseException:
                _discard(candidate)  # ours, a moment ago: no image is left without its companion
                raise
            if claimed:
                return candidate
            os.replace(candidate, temps[0])  # ours, a moment ago; the companion's name is taken: next name
    except BaseException:
        for temp in temps:
            _discard(temp)
        raise
    for temp in temps:
        _discard(temp)
    raise FileExistsError(f"too many files named like {path}")
