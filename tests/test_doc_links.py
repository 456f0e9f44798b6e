"""Every relative link in the docs leads somewhere: the file exists, and so does the heading an
anchor names (GitHub's heading ids). Moving a section without its links fails here."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "SECURITY.md", ROOT / "certs" / "README.md", *(ROOT / "docs").rglob("*.md")]
)
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def slug(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: Counter[str] = Counter()
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            found.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # code spans show syntax, not links
    return [target for target in LINK.findall(text) if not re.match(r"^[a-z]+:", target)]


def test_the_slugs_follow_github() -> None:
    assert slug("When the state store fails") == "when-the-state-store-fails"
    assert slug("The live edge, after an outage") == "the-live-edge-after-an-outage"
    assert slug("`audio-admin`") == "audio-admin"
    assert slug("Sessions, revocation & key rotation") == "sessions-revocation--key-rotation"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(ROOT)} links to {target}"
        assert destination.exists(), f"{where}: no such file"
        assert destination.is_relative_to(ROOT), f"{where}: outside the repository"
        if anchor:
            assert destination.suffix == ".md", f"{where}: an anchor into a file that is not Markdown"
            assert anchor in anchors(destination), f"{where}: no such heading in {destination.name}"


def test_the_link_checker_sees_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[here](other.md#x) and [web](https://example.com) `[no](x)`\n")
    assert links(page) == ["other.md#x"]
    assert anchors(page) == {"a-title"}
