"""The docs hold together: a short README, links that lead somewhere, and code that cites only them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [p for folder in ("archiver", "tests", "bench") for p in sorted((ROOT / folder).rglob("*"))
        if p.is_file() and p.suffix in (".py", ".md", ".html", ".toml", ".yaml", ".txt")]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`[^`\n]*`")
OLD_CITE = re.compile(r"design\.md\s*§")  # the design notes that were never in the repository
DOC_CITE = re.compile(r"\bdocs/[\w./-]+\.md\b")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#+\s+(.*)$", text, re.M)}


def test_the_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move the detail into docs/"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(doc: Path) -> None:
    prose = SPAN.sub("", FENCE.sub("", doc.read_text()))
    broken = []
    for target in LINK.findall(prose):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: outside the repository
        name, _, anchor = target.partition("#")
        path = (doc.parent / name).resolve() if name else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no such heading in {path.name}")
    assert broken == [], f"{doc.relative_to(ROOT)}: {broken}"


def test_the_code_cites_only_files_in_the_repository() -> None:
    old, missing = [], []
    for path in CODE:
        text = path.read_text(errors="replace")
        where = str(path.relative_to(ROOT))
        old += [where for _ in OLD_CITE.finditer(text)]
        missing += [f"{where}: {cite}" for cite in DOC_CITE.findall(text) if not (ROOT / cite).is_file()]
    assert old == [], "cite the docs/ file that covers it, e.g. (docs/design.md, commit points)"
    assert missing == [], "these cited docs do not exist"


def test_the_docs_are_there() -> None:
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {"configuration.md", "operations.md", "providers.md", "http-api.md", "archive-format.md",
            "design.md"} <= names
