"""The README tells the truth about the catalog."""

from __future__ import annotations

from pathlib import Path

from stepfun_openai import catalog

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_parameter_table_matches_the_catalog() -> None:
    text = README.read_text(encoding="utf-8")
    start = text.index("<!-- parameter-table:start -->") + len("<!-- parameter-table:start -->")
    end = text.index("<!-- parameter-table:end -->")
    assert text[start:end].strip() == catalog.parameter_table_markdown(), (
        "README's table is stale: paste catalog.parameter_table_markdown() between the markers"
    )


def test_every_catalog_model_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for name in catalog.MODELS:
        assert f"| {name} |" in text
