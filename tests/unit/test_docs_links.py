"""The README and the pages under docs/: every relative link and image points at a file that exists,
and the README stays short. Pure Python, no network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_MAX_BYTES = 12_000
DOC_FILES = [README, *sorted((REPO / "docs").glob("**/*.md"))]

# [text](target) and ![alt](target); the target ends at whitespace (an optional "title" follows) or ")"
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def relative_links(path: Path) -> list[str]:
    """The relative link targets of a markdown file, without their #anchor (code is not markdown)."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    targets = []
    for target in LINK.findall(text):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        target = target.split("#", 1)[0]
        if target:
            targets.append(target)
    return targets


def test_the_docs_exist() -> None:
    assert README.is_file()
    assert len(DOC_FILES) > 1, "no markdown pages under docs/"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = [t for t in relative_links(doc) if not (doc.parent / t).exists()]
    assert not broken, f"{doc.relative_to(REPO)}: broken links {broken}"


def test_readme_is_short() -> None:
    size = README.stat().st_size
    assert size < README_MAX_BYTES, f"README.md is {size:,} bytes, at most {README_MAX_BYTES:,}"


def test_the_link_parser(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[a](docs/x.md#y) ![b](img.png \"title\") [c](https://e.org) [d](#here) [e](mailto:a@b)\n"
                    "`[f](in-code.md)`\n```\n[g](in-fence.md)\n```\n", encoding="utf-8")
    assert relative_links(page) == ["docs/x.md", "img.png"]
