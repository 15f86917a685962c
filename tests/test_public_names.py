"""The public names are stated once (``_LAZY``) and every other list agrees with it: ``__all__``, the
imports type checkers read, the docs' list, and the version the installed package reports."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import types
from pathlib import Path

import stepfun_openai

ROOT = Path(__file__).resolve().parent.parent
INIT = ROOT / "stepfun_openai" / "__init__.py"


def test_all_is_the_lazy_table_plus_the_version() -> None:
    assert sorted(stepfun_openai.__all__) == sorted([*stepfun_openai._LAZY, "__version__"])
    assert len(stepfun_openai.__all__) == len(set(stepfun_openai.__all__))
    assert not stepfun_openai._LAZY_MODULES & set(stepfun_openai._LAZY)


def test_type_checkers_see_the_same_names_from_the_same_modules() -> None:
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    seen: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom)
        for alias in node.names:
            seen[alias.asname or alias.name] = "." * node.level + (node.module or "")
    modules = {name: "." for name in stepfun_openai._LAZY_MODULES}
    assert seen == {**stepfun_openai._LAZY, **modules}


def test_every_public_name_resolves_in_a_fresh_interpreter() -> None:
    code = (
        "import stepfun_openai as s\n"
        "names = [*s.__all__, *s._LAZY_MODULES]\n"
        "missing = [n for n in names if getattr(s, n, None) is None]\n"
        "print(missing, sorted(set(names) - set(dir(s))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] []"
    for name in stepfun_openai._LAZY:
        assert getattr(stepfun_openai, name) is getattr(
            sys.modules[f"stepfun_openai{stepfun_openai._LAZY[name]}"], name
        )
    for name in stepfun_openai._LAZY_MODULES:
        assert isinstance(getattr(stepfun_openai, name), types.ModuleType)


def test_the_docs_list_exactly_the_exported_names() -> None:
    text = (ROOT / "docs" / "reference" / "api" / "index.md").read_text(encoding="utf-8")
    start = text.index("<!-- exports:start -->")
    end = text.index("<!-- exports:end -->")
    listed = re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", text[start:end])
    assert len(listed) == len(set(listed)), "a name is listed twice"
    assert set(listed) == {*stepfun_openai.__all__, *stepfun_openai._LAZY_MODULES}


def test_the_version_is_stated_once_and_the_installed_package_reports_it() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    project = pyproject.split("[project]", 1)[1].split("\n[", 1)[0]
    assert 'dynamic = ["version"]' in project and not re.search(r"^version\s*=", project, re.MULTILINE)
    assert '[tool.hatch.version]\npath = "stepfun_openai/__init__.py"' in pyproject
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?\w+)*", stepfun_openai.__version__)
    # An editable install records the version when installed: reinstall after changing it.
    assert importlib.metadata.version("stepfun-openai") == stepfun_openai.__version__
