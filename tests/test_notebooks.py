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


@pytest.fixture
def emulator_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """An emulator on loopback; the kernel inherits STEPFUN_BASE_URL / STEPFUN_API_KEY pointing at it."""
    with Emulator(api_key=NOTEBOOK_KEY) as emulator:
        monkeypatch.setenv("STEPFUN_BASE_URL", emulator.base_url)
        monkeypatch.setenv("STEPFUN_API_KEY", NOTEBOOK_KEY)
        monkeypatch.delenv("STEP_API_KEY", raising=False)
        monkeypatch.setenv("STEPFUN_TIER", "V5")  # the batch cell's limits: the emulator has none
        # The kernel must be this interpreter, whatever `python` is first on PATH.
        monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        yield emulator


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_runs_against_the_emulator(path: Path, emulator_environment: Emulator, tmp_path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )

    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"{path.name} failed:\n{error}")

    stats = emulator_environment.stats()
    assert sum(stats["by_status"].values()) > 5, stats  # it really talked to the emulator
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code_cells if cell.source.strip() and not cell.source.startswith("#"))
    assert (tmp_path / "media").is_dir()
