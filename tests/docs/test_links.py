"""References from code to documentation sections, and links between the documents, point at
sections that exist (sections move: README's were split into docs/)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
SOURCES = [
    p for d in ("services", "shared", "bench", "deploy") for p in (ROOT / d).rglob("*") if p.suffix in {".py", ".js"}
]
DOCUMENTS = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
# In code: `docs/api.md, "WebSocket protocol"` or `README, "Benchmarks"`.
SECTION_REFERENCE = re.compile(r'(README(?:\.md)?|docs/[a-z_]+\.md)[,:]? "([^"]+)"')
# In Markdown: [text](docs/cli.md#anchor), [text](#anchor).
ANCHOR_LINK = re.compile(r"\]\(((?:docs/)?[a-z_]*(?:\.md)?)#([a-z0-9-]+)\)", re.I)


def headings(document: Path) -> list[str]:
    return [m[1].strip() for m in re.finditer(r"^#{1,6} (.+)$", document.read_text(), re.M)]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _document(name: str, referrer_dir: Path) -> Path:
    return ROOT / "README.md" if name in ("README", "README.md") else referrer_dir / name


def test_the_patterns_find_references_and_links():
    # Positive control: the protocol reference in ws.py and README's links into docs/cli.md.
    assert any(SECTION_REFERENCE.search(p.read_text()) for p in SOURCES if p.name == "ws.py")
    assert ANCHOR_LINK.search((ROOT / "README.md").read_text())
    # ...and the stale form this test exists for would be caught: the section left the README.
    assert "WebSocket protocol" in headings(ROOT / "docs" / "api.md")
    assert "WebSocket protocol" not in headings(ROOT / "README.md")


def test_every_section_named_in_code_exists():
    missing = []
    for source in SOURCES:
        for m in SECTION_REFERENCE.finditer(source.read_text(errors="replace")):
            document = _document(m[1], ROOT)
            if not document.exists() or m[2] not in headings(document):
                missing.append(f"{source.relative_to(ROOT)}: {m[0]}")
    assert missing == []


def test_every_anchor_link_in_the_documents_resolves():
    broken = []
    for document in DOCUMENTS:
        for m in ANCHOR_LINK.finditer(document.read_text()):
            target = document if m[1] == "" else _document(m[1], document.parent)
            if not target.exists() or m[2] not in {anchor(h) for h in headings(target)}:
                broken.append(f"{document.relative_to(ROOT)}: {m[0]}")
    assert broken == []
