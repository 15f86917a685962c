"""The one atomic writer: many files written with one sync, never a partial file under a final name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stepfun_openai import _files


@pytest.mark.parametrize("group_sync", [True, False], ids=["syncfs", "fsync-each"])
def test_a_group_of_files_is_written_whole_and_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group_sync: bool
) -> None:
    if not group_sync:
        monkeypatch.setattr(_files, "_syncfs", None)
    elif _files._group_sync() is None:  # pragma: no cover - not Linux
        pytest.skip("no syncfs here")
    (tmp_path / "b.png").write_bytes(b"old")
    _files.write_group([(tmp_path / "a.png", b"A" * 1000), (tmp_path / "b.png", b"B"), (tmp_path / "sub" / "c", b"")])
    assert (tmp_path / "a.png").read_bytes() == b"A" * 1000
    assert (tmp_path / "b.png").read_bytes() == b"B"  # replaced atomically
    assert (tmp_path / "sub" / "c").read_bytes() == b""
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.png", "b.png", "c"]


def test_a_failing_group_leaves_neither_temporary_files_nor_new_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace
    calls: list[str] = []

    def failing_replace(src: object, dst: object) -> None:
        calls.append(str(dst))
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        _files.write_group([(tmp_path / "a.png", b"A"), (tmp_path / "b.png", b"B")])
    # the first file got its name complete; the second never did; no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
    assert (tmp_path / "a.png").read_bytes() == b"A"
