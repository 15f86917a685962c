"""Where a distributed batch writes: a local folder or any fsspec location, and what is done there.

Images. A local folder gets them as ``batch.run`` writes them (``_files``: a temporary name,
one sync, a rename), so a final name never holds a partial file. Any other fsspec location
(``s3://bucket/prefix``, ``gs://...``, ``memory://`` in tests) gets each file with one put: an
object store makes an object visible whole or not at all, so there too a final name never holds
a partial image. Provenance is the same PNG text chunk (``StepFunImage._with_provenance``).

The record of what is done: one manifest shard per worker and run, under ``<out>/manifest.d/``,
written after the images it vouches for. Locally a shard is a JSONL file appended and fsynced a
group at a time (:class:`~._manifest.Manifest`). An object cannot be appended to, so in an object
store each group of lines is one object (``manifest.d/<shard>/<seq>.jsonl``, put after the group's
images), merged into ``manifest.d/<shard>.jsonl`` when the worker ends (a crash between the
merge and the clean-up only leaves lines twice, which resume reads the same). Resume reads every
shard, and ``<out>/manifest.jsonl`` too, so a batch begun with ``batch.run`` in a local folder
continues on many workers, and the reverse needs only ``--manifest`` pointing at a merged file.

fsspec (and s3fs for ``s3://``) load only here: ``pip install 'stepfun-openai[s3]'``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ._manifest import Manifest, finished_of, parse_events, remove_stale_temp_files
from ._writer import Commit, GroupWriter, _Group

__all__ = ["Output", "open_output"]

SHARDS = "manifest.d"
"""The folder (or prefix) of the manifest shards, inside the output."""

INSTALL_HINT = "pip install 'stepfun-openai[s3]'"


_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "r2"})


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _is_local(out: str) -> bool:
    return "://" not in out or out.startswith("file://")


def open_output(out: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Output:
    """``out`` as an :class:`Output`: a local path (or ``file://``), or an fsspec URL whose
    file system gets ``storage_options`` (e.g. ``{"client_kwargs": {"endpoint_url": ...}}``)."""
    text = os.fspath(out)
    if _is_local(text):
        return Output(text, Path(text.removeprefix("file://")), None, "", {})
    try:
        import fsspec
    except ImportError:
        raise ImportError(f"writing to {text!r} needs fsspec: {INSTALL_HINT}") from None
    try:
        fs, root = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    except ImportError as exc:  # the protocol's own package (s3fs, gcsfs, ...) is missing
        raise ImportError(f"writing to {text!r}: {exc}") from None
    return Output(text, None, fs, root.rstrip("/"), dict(storage_options or {}))


class Output:
    """A batch's output location: the images, the manifest shards, resume."""

    def __init__(self, url: str, local: Path | None, fs: Any, root: str, storage_options: dict[str, Any]) -> None:
        self.url = url
        self.local = local
        self.fs = fs
        self.root = root
        self.storage_options = storage_options

    def __repr__(self) -> str:  # storage options may hold credentials
        return f"Output({self.url!r})"

    @property
    def folder(self) -> Path:
        """Where the images go, as the writer names them (the fsspec path for a remote output)."""
        return self.local if self.local is not None else Path(self.root)

    @property
    def shards(self) -> str:
        return f"{self.url.rstrip('/')}/{SHARDS}/"

    def prepare(self) -> None:
        """Make the folder (locally, and remove the temporary files a killed run left)."""
        if self.local is not None:
            (self.local / SHARDS).mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.local)
        elif _OBJECT_STORES & set(_protocols(self.fs)):
            # No folders to make; and a missing bucket is the user's to create (makedirs would).
            bucket = self.root.split("/", 1)[0]
            if not self.fs.exists(bucket):
                raise FileNotFoundError(f"the bucket of {self.url!r} ({bucket!r}) does not exist: create it first")
        else:
            self.fs.makedirs(self.root, exist_ok=True)

    def finished(self) -> dict[str, tuple[str, str | None]]:
        """``job id -> (status, error type)`` of every job any run recorded as finished."""
        done: dict[str, tuple[str, str | None]] = {}
        if self.local is not None:
            paths = [self.local / "manifest.jsonl", *sorted((self.local / SHARDS).glob("*.jsonl"))]
            for path in paths:
                done.update(Manifest(path, files_root=self.local).finished())
            return done
        self.fs.invalidate_cache()
        names = []
        if self.fs.exists(f"{self.root}/manifest.jsonl"):
            names.append(f"{self.root}/manifest.jsonl")
        if self.fs.exists(f"{self.root}/{SHARDS}"):
            names += sorted(name for name in self.fs.find(f"{self.root}/{SHARDS}") if name.endswith(".jsonl"))
        if names:
            contents = self.fs.cat(names)
            for name in names:
                text = contents[name].decode("utf-8", errors="replace")
                done.update(finished_of(parse_events(text.splitlines())))
        return done

    def writer(self, shard: str, *, on_committed: Callable[[list[Commit]], None]) -> GroupWriter:
        """The writer of one worker's shard (call on the worker's event loop; ``close()`` it, then
        :meth:`close_shard`)."""
        if self.local is not None:
            book = Manifest(self.local / SHARDS / f"{shard}.jsonl", files_root=self.local)
            book.open()
            return GroupWriter(book, self.local, on_committed=on_committed, relative_to=self.local)
        return StoreWriter(
            _ObjectShard(self.fs, self.root, shard), self.folder, on_committed=on_committed, relative_to=self.folder
        )

    def close_shard(self, writer: GroupWriter) -> None:
        """After ``writer.close()``: close the shard file, or merge the shard's objects into one."""
        book = writer._manifest
        if isinstance(book, _ObjectShard):
            book.merge()
        else:
            book.close()


class _ObjectShard(Manifest):
    """A manifest shard in an object store: each appended group of lines is one object."""

    def __init__(self, fs: Any, root: str, shard: str) -> None:
        super().__init__(Path(root) / SHARDS / f"{shard}.jsonl")
        self._fs = fs
        self._prefix = f"{root}/{SHARDS}/{shard}"
        self._sequence = 0
        self._sequence_lock = threading.Lock()

    def append_lines(self, text: str) -> None:
        with self._sequence_lock:
            self._sequence += 1
            name = f"{self._prefix}/{self._sequence:08d}.jsonl"
        self._fs.pipe_file(name, text.encode("utf-8"))

    def merge(self) -> None:
        """The shard's group objects as one object, then the groups removed."""
        if not self._sequence:
            return
        self._fs.invalidate_cache(self._prefix)
        pieces = sorted(self._fs.find(self._prefix))
        if not pieces:
            return
        contents = self._fs.cat(pieces)
        merged = b"".join(contents[name] for name in pieces)
        self._fs.pipe_file(f"{self._prefix}.jsonl", merged)
        self._fs.rm(pieces)


class StoreWriter(GroupWriter):
    """The group writer for an fsspec location: the group's files with one put each (the puts of
    a group run together where the file system is asynchronous, as s3fs is), then its lines."""

    def __init__(self, shard: _ObjectShard, out: Path, **options: Any) -> None:
        super().__init__(shard, out, **options)
        self._fs = shard._fs

    def _put(self, files: list[tuple[Path, bytes]]) -> None:
        if files:
            self._fs.pipe({path.as_posix(): data for path, data in files})

    def _write_now(self, files: list[tuple[Path, bytes]], text: str) -> None:
        self._put(files)
        self._manifest.append_lines(text)

    def _make_durable(self, group: _Group, text: str) -> None:
        self._put(group.files)
        group.files = []
        self._manifest.append_lines(text)
        group.durable = True
