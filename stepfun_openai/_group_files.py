"""A batch group's files: each image's name and bytes (with its provenance), as ``save()`` stores it.

Used where a group is committed: on the batch's event loop (the writer thread then writes the
files) and in the batch's writer process (:mod:`._writer_process`), which imports nothing but this,
``_files``, ``_metadata`` and the standard library (no ``openai``: it starts in about 40 ms).
An image arrives as its bytes, the request it answered (``StepFunImage._context``) and its seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from ._files import candidate_names, write_all
from ._metadata import sidecar_path, with_provenance, written_by_package
from ._sniff import EXTENSIONS, sniff

__all__ = ["GroupFiles", "ImageParts", "append_durably", "extension_of", "manifest_lines"]

_HEAD_BYTES = 64

ImageParts = tuple[bytes, "Mapping[str, Any] | None", "int | None"]
"""One image of a job: its bytes, the request it answered (its ``_context``) and its seed."""


def extension_of(data: bytes) -> str:
    """``.png``, ``.jpg``, ``.webp`` or ``.gif``, from the image's first bytes."""
    return EXTENSIONS.get(sniff(data[:_HEAD_BYTES]).format or "", ".png")


def manifest_lines(events: Sequence[Mapping[str, Any]]) -> str:
    """The manifest's JSONL lines of ``events``."""
    return "".join(json.dumps(event, ensure_ascii=False, default=str) + "\n" for event in events)


def append_durably(fd: int, text: str) -> None:
    """Append ``text`` (whole lines) to the file open at ``fd`` (in append mode): one write (a
    loop if the system takes it in parts), then one fsync."""
    # A lone surrogate (from a str given by the caller) is written as its JSON escape.
    write_all(fd, text.encode("utf-8", "backslashreplace"))
    os.fsync(fd)


def _replaceable(path: Path) -> bool:
    return not os.path.lexists(path) or (path.is_file() and written_by_package(path))


def _relative_to(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


class GroupFiles:
    """Names files in ``out`` and records them in a manifest event (``file``/``files``, relative
    to ``relative_base``: the manifest's folder). Names in use by a group not yet committed are
    never given twice."""

    def __init__(self, out: Path, relative_base: Path) -> None:
        self.out = out
        self.relative_base = relative_base
        relative_out = _relative_to(out, relative_base)
        self._out_prefix = "" if relative_out == "." else relative_out + os.sep
        self.in_flight: set[Path] = set()

    def files_of(
        self, event: MutableMapping[str, Any], stem: str, images: Sequence[ImageParts]
    ) -> tuple[list[tuple[Path, bytes]], list[Path]]:
        """The files of one job (each image with its provenance, and a sidecar where the format
        has no text chunk) and the images' paths; fills in ``event``'s ``file``/``files``."""
        files: list[tuple[Path, bytes]] = []
        paths: list[Path] = []
        for number, (data, context, seed) in enumerate(images):
            suffix = "" if number == 0 else f"-{number}"
            data, sidecar = with_provenance(data, context, seed)
            path = self._free_name(self.out / f"{stem}{suffix}{extension_of(data)}", sidecar is not None)
            files.append((path, data))
            if sidecar is not None:
                files.append((sidecar_path(path), sidecar))
            paths.append(path)
        if paths:
            event["file"] = self.relative(paths[0])
            if len(paths) > 1:
                event["files"] = [self.relative(path) for path in paths]
        return files, paths

    def release(self, paths: Sequence[Path]) -> None:
        """The names of committed (or abandoned) files may be given again."""
        for path in paths:
            self.in_flight.discard(path)
            self.in_flight.discard(sidecar_path(path))

    def _free_name(self, path: Path, sidecar: bool) -> Path:
        """``path``, or ``name-2.png``, ``name-3.png``, ...: the first name (and sidecar name) that
        is free or holds a file this package wrote (the same job's image, written before a crash
        or before its manifest line was lost). A file of anyone else is never replaced."""
        for candidate in candidate_names(path):
            names = [candidate, sidecar_path(candidate)] if sidecar else [candidate]
            if all(name not in self.in_flight and _replaceable(name) for name in names):
                self.in_flight.update(names)
                return candidate
        raise FileExistsError(f"too many files named like {path}")

    def relative(self, path: Path) -> str:
        """``path`` as the manifest records it: relative to the manifest's folder."""
        if path.parent == self.out:
            return self._out_prefix + path.name
        return _relative_to(path, self.relative_base)
