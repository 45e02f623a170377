"""The README is a front door and docs/ holds the rest: every relative link and ``#anchor`` in
README.md and docs/*.md leads to a file that exists and a heading it has (by GitHub's rules),
and the README stays short."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 260

# Markdown as GitHub reads it here: CommonMark with tables (links in table cells count too).
MARKDOWN = MarkdownIt("commonmark").enable("table")


def _tokens(page: Path) -> list[Token]:
    return MARKDOWN.parse(page.read_text(encoding="utf-8"))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, every character but letters, digits,
    ``_``, ``-`` and spaces dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated one gets -1, -2, ... as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    tokens = _tokens(page)
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        text = "".join(
            child.content
            for child in inline.children or []
            if child.type in ("text", "code_inline")
        )
        slug = github_slug(text)
        found.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return found


def links(page: Path) -> list[str]:
    """Every link and image target of a page (not those shown as code)."""
    targets = []
    for token in _tokens(page):
        for child in token.children or []:
            if child.type == "link_open":
                targets.append(str(child.attrs["href"]))
            elif child.type == "image":
                targets.append(str(child.attrs["src"]))
    return targets


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page):
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith("/"):
            continue  # another site (or a path of the service itself): not ours to check here
        where = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if not where.exists():
            broken.append(f"{target}: no such file")
        elif parts.fragment and (
            where.suffix != ".md" or unquote(parts.fragment) not in anchors(where)
        ):
            broken.append(f"{target}: no such heading in {where.name}")
    return broken


def test_the_slug_is_githubs() -> None:
    assert github_slug("The command-line client (`ocr-client`)".replace("`", "")) == (
        "the-command-line-client-ocr-client"
    )
    assert github_slug("Deployment (Docker compose)") == "deployment-docker-compose"
    assert github_slug("How many engines one MySQL primary feeds") == (
        "how-many-engines-one-mysql-primary-feeds"
    )
    assert github_slug("OCR_WORKERS & a 5 s grace, über") == "ocr_workers--a-5-s-grace-über"


def test_the_checker_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A part\n\n## A part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#a-part-1) [ok](#page) [ok](https://example.com/x#y) `[no](x.md)`\n"
        "[missing](gone.md) [bad anchor](other.md#b-part) | [in a](#nowhere) |\n"
    )
    assert broken_links(page) == [
        "gone.md: no such file",
        "other.md#b-part: no such heading in other.md",
        "#nowhere: no such heading in page.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_and_anchor_leads_somewhere(page: Path) -> None:
    assert broken_links(page) == []


def test_there_is_a_docs_folder_and_the_readme_links_every_page_of_it() -> None:
    docs = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert len(docs) >= 5
    linked = {
        Path(urlsplit(t).path).name for t in links(REPO / "README.md") if t.startswith("docs/")
    }
    assert set(docs) - linked == set()


def test_the_readme_stays_a_front_door() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move the detail to docs/"
