"""Every code example in README.md and docs/ runs as written, against the emulator.

Each page's ``python`` blocks run in order in one namespace (as a reader pastes them into one
script), in an empty temporary directory, with ``STEPFUN_API_KEY`` and ``STEPFUN_BASE_URL`` set to
a running emulator; its ``stepfun-openai ...`` shell commands run in between, and a ``console``
block's output lines (numbers aside) must be what the command prints. A block that cannot run
here (it needs a live key or a chat model) carries a visible marker on the line before it,
``<!-- no-run: why -->``; they are counted, listed, and kept few.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stepfun_openai.emulator import Emulator

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_docs_runner.py"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MAX_SKIPPED = 6  # a live key, a chat model, a Ray cluster with an S3 bucket
"""Blocks marked no-run, over all pages: a small number, so that the docs stay runnable."""

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
_NO_RUN = re.compile(r"<!--\s*no-run:\s*(.+?)\s*-->")
_SHELL = ("bash", "sh", "shell", "console")
_RUNS = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*(stepfun-openai\b|python -m stepfun_openai\b|printf\b)")
"""The shell commands that run: the package's, and ``printf`` for the files a page's commands read."""


@dataclass
class Block:
    page: str
    line: int
    lang: str
    code: str
    no_run: str | None
    commands: list[dict[str, Any]] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        return self.lang == "python" or bool(self.commands)


def _shell_commands(block: Block) -> list[dict[str, Any]]:
    """The commands of a shell block that the test runs, with the output a console block shows
    after each and the exit code a following ``echo $?`` states (else 0)."""
    lines = block.code.splitlines()
    commands: list[dict[str, Any]] = []
    index = 0
    while index < len(lines):
        raw = lines[index]
        number = block.line + 1 + index
        index += 1
        if block.lang == "console":
            if not raw.startswith("$ "):
                if commands:
                    commands[-1]["expected"].append(raw)
                continue
            text = raw[2:]
        else:
            text = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        while text.endswith("\\") and index < len(lines):
            text = text[:-1] + " " + lines[index].strip()
            index += 1
        text = text.strip()
        if not text:
            continue
        if text == "echo $?":
            code = next((line for line in lines[index:] if line.strip()), "0").strip()
            if commands:
                commands[-1]["exit_code"] = int(code)
            index += 1
            continue
        # `pip install -e . && stepfun-openai ...`: the package's part runs (installing is CI's job)
        for piece in text.split(" && "):
            command = {"text": piece.strip(), "line": number, "expected": [], "exit_code": 0}
            commands.append({**command, "runs": bool(_RUNS.match(piece.strip()))})
    return [command for command in commands if command["runs"]]


def blocks_of(page: Path) -> list[Block]:
    name = str(page.relative_to(ROOT))
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    previous = ""
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index].strip())
        if not match:
            if lines[index].strip():
                previous = lines[index]
            index += 1
            continue
        fence, lang = match.groups()
        start = index
        indent = len(lines[index]) - len(lines[index].lstrip())
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        marker = _NO_RUN.search(previous)
        block = Block(name, start + 1, lang.lower(), "\n".join(body) + "\n", marker.group(1) if marker else None)
        if block.lang in _SHELL:
            block.commands = _shell_commands(block)
        blocks.append(block)
        previous = ""
    return blocks


def _pages_with_examples() -> list[Path]:
    return [page for page in PAGES if any(b.runnable and not b.no_run for b in blocks_of(page))]


@pytest.fixture(scope="module")
def docs_emulator() -> Any:
    with Emulator() as emulator:
        yield emulator


@pytest.mark.slow  # about a minute on a busy machine: CI runs it once, with the newest openai
@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_page_s_examples_run_as_written(page: Path, docs_emulator: Emulator, tmp_path: Path) -> None:
    docs_emulator.reset()
    blocks = [b for b in blocks_of(page) if b.runnable and not b.no_run]
    payload = [
        {
            "page": b.page,
            "line": b.line,
            "kind": "python" if b.lang == "python" else "shell",
            "code": b.code,
            "commands": b.commands,
        }
        for b in blocks
    ]
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "blocks.json").write_text(json.dumps(payload), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "STEPFUN_", "STEP_API"))}
    env.update(
        STEPFUN_API_KEY=docs_emulator.api_key,
        STEPFUN_BASE_URL=docs_emulator.base_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        MPLBACKEND="Agg",
    )
    result_file = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(tmp_path / "blocks.json"), str(result_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result_file.exists(), f"the runner died:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(result_file.read_text(encoding="utf-8"))
    assert result["failed"] is None, (
        f"the example at {result['failed']} fails:\n{result['error']}\n--- output\n{done.stdout[-3000:]}"
        f"\n{done.stderr[-3000:]}"
    )
    assert result["ran"] == len(blocks) and done.returncode == 0


def test_few_examples_are_skipped_and_each_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    every = [b for page in PAGES for b in blocks_of(page)]
    python = [b for b in every if b.lang == "python"]
    shell = [b for b in every if b.commands]
    skipped = [b for b in every if b.no_run and b.runnable]
    with capsys.disabled():
        print(
            f"\ndocs examples: {len(python)} python blocks and {len(shell)} shell blocks with stepfun-openai "
            f"commands on {len(PAGES)} pages; {len(skipped)} marked no-run:"
        )
        for block in skipped:
            print(f"  {block.page}:{block.line} ({block.lang}): {block.no_run}")
    assert len(python) > 30, "the docs are expected to be made of runnable examples"
    assert len(skipped) <= MAX_SKIPPED, [f"{b.page}:{b.line}" for b in skipped]
    for block in every:
        if block.no_run:
            assert block.runnable, f"{block.page}:{block.line}: a no-run marker on a block that never runs"


def test_the_runner_checks_what_a_console_block_shows() -> None:
    """The parser behind the test above: commands, their shown output, and the exit code."""
    block = Block(
        "x.md",
        1,
        "console",
        '$ stepfun-openai generate "a fox" --emulator\nwrote ./a-fox-7.png (seed 7)\n'
        '$ STEPFUN_API_KEY= stepfun-openai generate "a fox"\nstepfun-openai: error: no API key\n$ echo $?\n2\n'
        "$ pip install stepfun-openai\n",
        None,
    )
    commands = _shell_commands(block)
    assert [(c["text"], c["expected"], c["exit_code"]) for c in commands] == [
        ('stepfun-openai generate "a fox" --emulator', ["wrote ./a-fox-7.png (seed 7)"], 0),
        ('STEPFUN_API_KEY= stepfun-openai generate "a fox"', ["stepfun-openai: error: no API key"], 2),
    ]
