"""The README and the docs tell the truth about the catalog, and their links lead somewhere."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

from stepfun_openai import catalog

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def test_the_models_page_is_generated_from_the_catalog() -> None:
    generator = runpy.run_path(str(DOCS / "_gen.py"))
    page = (DOCS / "reference" / "models.md").read_text(encoding="utf-8")
    assert page == generator["models_page"](), "docs/reference/models.md is stale: run python docs/_gen.py"
    assert catalog.parameter_table_markdown() in page


def test_every_catalog_model_is_named_in_the_readme_and_has_a_section_in_the_docs() -> None:
    readme = README.read_text(encoding="utf-8")
    page = (DOCS / "reference" / "models.md").read_text(encoding="utf-8")
    for name in catalog.MODELS:
        assert f"`{name}`" in readme, name
        assert f"\n## {name}\n" in page, name


def test_the_readme_stays_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert 120 <= lines <= 250, f"README.md has {lines} lines: details belong in docs/"


def test_every_relative_link_in_the_readme_and_the_docs_leads_to_a_file() -> None:
    """mkdocs build --strict checks the site's links; this checks the README's too, and runs in
    the test suite where the docs tools may not be installed."""
    for page in [README, *DOCS.rglob("*.md")]:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"


def test_every_page_of_the_docs_is_in_the_site_navigation() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        assert f" {page.relative_to(DOCS).as_posix()}\n" in config, f"{page} is missing from mkdocs.yml's nav"


def test_the_development_commands_are_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    contributing = (DOCS / "contributing.md").read_text(encoding="utf-8")
    for command in (
        "ruff check .",
        "ruff format --check stepfun_openai tests benchmarks",
        "mypy --strict stepfun_openai",
        "mkdocs build --strict",
    ):
        assert command in ci, command
        assert command in contributing, command
        assert command in README.read_text(encoding="utf-8"), command
