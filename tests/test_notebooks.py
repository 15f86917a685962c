"""The notebooks run, top to bottom, against the emulator; and git holds them without outputs.

Each notebook asserts what it shows (image sizes, echoed seeds, the expected errors), so a
notebook that runs but shows nothing useful fails here too."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from stepfun_openai.emulator import Emulator

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 120
NOTEBOOK_KEY = "notebook-emulator-key"


def test_there_are_notebooks() -> None:
    assert {path.name for path in NOTEBOOKS} >= {"01_text2image_guide.ipynb", "02_image2image_edits_batch.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: cell {cell.id} has outputs"
            assert cell.execution_count is None, f"{path.name}: cell {cell.id} has an execution count"
    assert "widgets" not in notebook.metadata


def test_the_notebooks_match_their_build_script() -> None:
    check = subprocess.run(
        [sys.executable, str(NOTEBOOK_DIR / "_build.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.fixture(params=["keyed", "keyless"])
def emulator_environment(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on loopback; the kernel inherits STEPFUN_BASE_URL / STEPFUN_API_KEY pointing at it.
    ``keyless``: one started without ``--api-key``, which takes any key (a notebook must not
    count on a wrong key being refused)."""
    with Emulator(api_key=NOTEBOOK_KEY if request.param == "keyed" else None) as emulator:
        monkeypatch.setenv("STEPFUN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("STEPFUN_API_KEY", NOTEBOOK_KEY)
        monkeypatch.delenv("STEP_API_KEY", raising=False)
        monkeypatch.setenv("STEPFUN_TIER", "V5")  # the batch cell's limits: the emulator has none
        # The kernel must be this interpreter, whatever `python` is first on PATH.
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        yield emulator


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_twice_in_a_row_against_the_emulator(
    path: Path, emulator_environment: Emulator, tmp_path: Path
) -> None:
    """ "Run All", then "Run All" again in the same kernel: the second run finds the first one's
    files, manifest and state (the batch resumes) and every cell still holds."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )

    requests = []
    with client.setup_kernel():
        for run in ("first", "second"):
            for index, cell in enumerate(notebook.cells):
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError as error:
                    pytest.fail(f"{path.name}, {run} run, cell {cell.get('id')} failed:\n{error}")
            requests.append(sum(emulator_environment.stats()["by_status"].values()))
            code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
            assert all(
                cell.execution_count for cell in code_cells if cell.source.strip() and not cell.source.startswith("#")
            )

    assert requests[0] > 5, requests  # it really talked to the emulator
    assert (tmp_path / "output").is_dir() and any((tmp_path / "output").iterdir())  # where the notebooks write


def test_the_notebooks_output_folder_is_ignored_by_git() -> None:
    """The notebooks write into notebooks/output/ when run from their folder: git never sees it."""
    repo = NOTEBOOK_DIR.parent
    if not (repo / ".git").exists():
        pytest.skip("not a git checkout")
    check = subprocess.run(
        ["git", "-C", str(repo), "check-ignore", "-q", "notebooks/output/cat.png"], capture_output=True, timeout=30
    )
    assert check.returncode == 0, "notebooks/output/ is not in .gitignore"
    assert 'OUTPUT = Path("output")' in (NOTEBOOK_DIR / "_build.py").read_text(encoding="utf-8")
