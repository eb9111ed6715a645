"""The README and docs/ link to files that exist: a reader following a relative link never lands nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def relative_links(page: Path) -> list[str]:
    """Link targets in a Markdown page that point into the repository (not URLs, not in-page anchors)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#")[0]).exists()]
    assert broken == []


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    for command in ("make run", "make test"):
        assert command in text
    linked = {Path(t).name for t in relative_links(REPO / "README.md")}
    assert {"architecture.md", "experiment.md", "engine.md", "app.md", "scale.md", "bench.md"} <= linked


def test_the_link_check_sees_links():
    assert "docs/architecture.md" in relative_links(REPO / "README.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_name_no_machine_path(page):
    """A reader has the repository, not the machine it was written on: paths are relative to the repository."""
    assert re.findall(r"/(?:work|home|Users)/[\w./-]+", page.read_text()) == []
