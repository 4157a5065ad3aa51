"""The docs hold together: every relative link and ``#anchor`` in README.md and docs/*.md resolves, every docs page
is linked from the README (the front door), and the README's short settings table is made of rows of the full one.

Anchors follow GitHub's rules for heading ids: the heading's text (Markdown inline syntax removed), lowercased,
every character that is not a letter, digit, ``-``, ``_`` or space dropped, each space turned into ``-``; a
repeated heading gets ``-1``, ``-2``, ... in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target): the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(\S+)")
HTML_LINK = re.compile(r"""\b(?:href|src)=["']([^"']+)["']""")
HTML_ID = re.compile(r"""<a\s[^>]*\b(?:id|name)=["']([^"']+)["']""")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")
SETTING_ROW = re.compile(r"^\| `SMARTY_[A-Z_]+` \|.*\|$")


def slug(heading: str) -> str:
    """GitHub's id for a heading's Markdown text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.replace("`", "").replace("*", "")  # code spans and emphasis
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def outside_fences(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks (their fence lines left out too)."""
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            fence = opening.group(1)[0] * len(opening.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) <= {fence[0]}:
                fence = None
            continue
        yield number, line


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked out."""
    return [(number, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)) for number, line in outside_fences(text)]


def anchors(text: str) -> set[str]:
    """Every id a page's headings (and explicit ``<a id=...>``) give, as GitHub assigns them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in outside_fences(text):
        found.update(HTML_ID.findall(line))
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            found.add(base if count == 0 else f"{base}-{count}")
            seen[base] = count + 1
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in a page's prose."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        targets = [m.group(1).strip("<>") for m in INLINE_LINK.finditer(line)]
        targets += REFERENCE.findall(line) + HTML_LINK.findall(line)
        found += [(number, target) for target in targets]
    return found


def problem(page: Path, target: str, root: Path) -> str | None:
    """Why ``target`` (as written in ``page``) does not resolve inside ``root``, or None if it does."""
    if EXTERNAL.match(target):
        return None
    path, _, anchor = target.partition("#")
    path = unquote(path.split("?", 1)[0])
    if path.startswith("/"):
        return "a path from the site's root does not resolve on PyPI or in a clone: make it relative"
    file = (page.parent / path).resolve() if path else page
    if not file.is_relative_to(root.resolve()):
        return "points outside the repository"
    if not file.exists():
        return f"{file.relative_to(root.resolve())} does not exist"
    if anchor:
        if file.is_dir() or file.suffix != ".md":
            return "an anchor into a file that is not Markdown"
        if anchor not in anchors(file.read_text(encoding="utf-8")):
            return f"{file.name} has no heading #{anchor}"
    return None


def problems(page: Path, root: Path = ROOT) -> list[str]:
    text = page.read_text(encoding="utf-8")
    found = []
    for number, target in links(text):
        reason = problem(page, target, root)
        if reason is not None:
            found.append(f"{page.relative_to(root)}:{number}: ({target}) {reason}")
    return found


# --- the checker itself ---------------------------------------------------------------------------------------


def test_slug_follows_githubs_rules() -> None:
    assert slug("Testing aids: OAuth, journal, faults") == "testing-aids-oauth-journal-faults"
    assert slug("The `smarty_emulator` fixture") == "the-smarty_emulator-fixture"
    assert slug("Admin API, snapshots & seeding") == "admin-api-snapshots--seeding"
    assert slug("See [Settings](settings.md) — *live*") == "see-settings--live"
    assert slug("Größe 3.12 / arm64") == "größe-312--arm64"


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Same\n\n## Same\n\n## A `code` title!\n")
    (tmp_path / "image.png").write_bytes(b"")
    page = tmp_path / "README.md"
    page.write_text(
        "# Front\n\n## Local part\n\n"
        "[ok](docs/other.md) [ok](docs/other.md#same-1) [ok](docs/other.md#a-code-title) ![ok](image.png)\n"
        '[ok](#local-part) [ok](https://example.org/missing) <a href="docs/other.md#other">ok</a>\n'
        "`[not a link](missing.md)`\n"
        "```sh\n[not a link](missing.md)\n```\n"
        "[bad](docs/missing.md)\n"
        "[bad](docs/other.md#same-2)\n"
        "[bad](#no-such-part)\n"
        "[bad](image.png#top)\n"
        "[bad](../outside.md)\n"
        "[bad](/docs/other.md)\n"
        "[bad]: docs/gone.md\n"
    )
    found = problems(page, root=tmp_path)
    assert [line.split(":")[1] for line in found] == ["11", "12", "13", "14", "15", "16", "17"], found
    assert "docs/missing.md does not exist" in found[0]
    assert "has no heading #same-2" in found[1]
    assert "has no heading #no-such-part" in found[2]
    assert "not Markdown" in found[3] and "outside the repository" in found[4] and "relative" in found[5]
    assert "docs/gone.md does not exist" in found[6]


# --- the repository's docs ----------------------------------------------------------------------------------


def test_there_are_docs_pages() -> None:
    assert len(DOCS) >= 9, DOCS


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_and_anchor_resolves(page: Path) -> None:
    assert problems(page) == []


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_docs_page_starts_with_a_title(page: Path) -> None:
    first = page.read_text(encoding="utf-8").splitlines()[0]
    assert HEADING.match(first) and first.startswith("# "), first


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README.read_text(encoding="utf-8"))
        if not EXTERNAL.match(target) and target.partition("#")[0]
    }
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


def test_readme_short_settings_table_rows_are_rows_of_the_full_table() -> None:
    """The README shows the most used settings in the generated table's own row format (docs/settings.md is
    checked against the code by the settings tests)."""
    short = [line for line in README.read_text(encoding="utf-8").splitlines() if SETTING_ROW.match(line)]
    full = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8").splitlines()
    assert 6 <= len(short) <= 10, short
    assert [row for row in short if row not in full] == []
