"""The project's pages: README stays short, every relative link resolves, and every results block
is exactly what `benchmarks/report.py` renders from the results files (no number typed by hand)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def test_readme_is_short_enough_to_read_top_to_bottom():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    missing = [target for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
               if not target.startswith(("http://", "https://")) and not (page.parent / target).exists()]
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_results_blocks_are_rendered_from_the_results_files():
    from benchmarks.report import PAGES_WITH_RESULTS, project_blocks, with_blocks

    blocks = project_blocks()
    assert {"reference", "claims", "map"} <= set(blocks)
    for name in PAGES_WITH_RESULTS:
        text = (ROOT / name).read_text()
        for block in re.findall(r"<!-- results:(\w+) -->", text):
            assert block in blocks, f"{name}: no results file renders block {block!r}"
        assert text == with_blocks(text, blocks), f"{name}: a results block differs from its results file; run benchmarks/report.py"
