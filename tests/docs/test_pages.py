"""The README stays short and starts with the two commands; links between pages resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = sorted([README, REPO / "docker" / "README.md", *(REPO / "docs").glob("*.md")])
# Pages other issues write; a link to one is checked once the page exists.
WRITTEN_ELSEWHERE = {
    REPO / "docs" / name
    for name in ("delivery.md", "alerts.md", "security.md", "training.md", "performance.md")
}

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings.

    >>> sorted(anchors("# Run it: now\\n## A cluster\\n```\\n# not a heading\\n```"))
    ['a-cluster', 'run-it-now']
    """
    found = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#+ (.*)", line)):
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= 200


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_section = text.split("\n## ", 2)[1]
    assert first_section.startswith("The two commands")
    assert "scripts/demo     # the main job end to end" in first_section
    assert "scripts/test     # the whole test suite" in first_section


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            if path not in WRITTEN_ELSEWHERE:
                broken.append(target)
            continue
        if anchor and anchor not in anchors(path.read_text()):
            broken.append(target)
    assert not broken, broken
