"""The emulator and the client are separate rooms: neither imports the other, and what they share
(the catalog, format sniffing, the PNG codec) needs nothing beyond the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stepfun_openai"


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_emulator_runs_on_the_standard_library_alone() -> None:
    out = _run(
        "import sys\n"
        "from stepfun_openai.emulator import Emulator\n"
        "with Emulator() as emu:\n"
        "    assert emu.base_url.endswith('/v1')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openai', 'httpx2', 'pydantic', 'tenacity')"
        " or m == 'stepfun_openai._client'))"
    )
    assert out == "[]"


def test_the_client_never_imports_the_emulator() -> None:
    out = _run(
        "import sys, httpx2\n"
        "from stepfun_openai import StepFun\n"
        "def answer(request):\n"
        "    return httpx2.Response(200, json={'data': [{'url': 'https://x/y.png', 'seed': 1}]})\n"
        "client = StepFun(api_key='k', http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))\n"
        "client.images.generate(model='step-2x-large', prompt='a fox', seed=1)\n"
        "print([m for m in sys.modules if m.startswith('stepfun_openai.emulator')])"
    )
    assert out == "[]"


@pytest.mark.parametrize(
    "module", ["stepfun_openai.catalog", "stepfun_openai._sniff", "stepfun_openai._png", "stepfun_openai._urls"]
)
def test_the_modules_the_emulator_shares_need_only_the_standard_library(module: str) -> None:
    out = _run(
        "import sys\n"
        "before = set(sys.modules)\n"
        f"import {module}\n"
        "new = set(sys.modules) - before\n"
        "print(sorted(m for m in new if m.split('.')[0] not in sys.stdlib_module_names"
        f" and m not in ('stepfun_openai', {module!r})))"
    )
    assert out == "[]"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere: at the top, inside functions, and under
    ``TYPE_CHECKING`` (a cycle of annotations couples modules too). The package root's own
    ``TYPE_CHECKING`` imports are left out: they only tell type checkers what its lazy
    ``__getattr__`` returns, and the root imports nothing of the package when it runs."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if name == "stepfun_openai":
            tree.body = [node for node in tree.body if not isinstance(node, ast.If)]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name.split(".")[0] == "stepfun_openai"}
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                if target.split(".")[0] != "stepfun_openai":
                    continue
                edges |= {f"{target}.{a.name}" if f"{target}.{a.name}" in paths else target for a in node.names}
        graph[name] = edges - {name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in graph.get(todo.pop(), set()) - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_responses_results_and_provenance_import_one_way() -> None:
    graph = _import_graph()
    below_types = _reachable(graph, "stepfun_openai.types")
    assert {"stepfun_openai._results", "stepfun_openai._metadata", "stepfun_openai._download"} <= below_types
    in_a_cycle = sorted(m for m in {"stepfun_openai.types", *below_types} if m in _reachable(graph, m))
    assert in_a_cycle == []
    for helper in ("_download", "_metadata", "_files"):
        assert not {"stepfun_openai.types", "stepfun_openai._results"} & _reachable(graph, f"stepfun_openai.{helper}")
