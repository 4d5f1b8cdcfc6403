"""The README is a front page and the docs/ pages hold together: every relative link and image in
README.md and docs/*.md names a file that exists (and, for a Markdown target, a heading that exists,
as GitHub spells its anchors), and the README keeps the two commands and the flag."""

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"
PAGES = sorted((PROJECT / "docs").glob("*.md"))
README_MAX_LINES = 250
COMMANDS = (
    "pip install torch==2.13.0 && pip install . && bash examples/toy_finetune.sh",
    'pip install torch==2.13.0 && pip install ".[test]" && python -m pytest',
)
FLAG = "--E0s=linear_system"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def links(path: Path) -> list:
    """The relative link targets of a Markdown file, outside fenced code blocks."""
    text = FENCE.sub("", path.read_text())
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set:
    text = FENCE.sub("", path.read_text())
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(PROJECT).as_posix())
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        resolved = (page.parent / file_part).resolve() if file_part else page
        if not resolved.exists():
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.name}")
    assert not broken, f"{page.name}: broken links:\n" + "\n".join(broken)


def test_link_checker_sees_links():
    """The checker would catch a broken link: the README has links, images among them."""
    targets = links(README)
    assert any(t.endswith(".png") for t in targets)
    assert {f"docs/{p.name}" for p in PAGES} <= {t.partition("#")[0] for t in targets}, \
        "every docs/ page is linked from the README"


def test_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    for command in COMMANDS:
        assert command in text
    assert FLAG in text
    assert len(PAGES) >= 3
