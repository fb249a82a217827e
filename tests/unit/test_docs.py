"""The documentation holds together: README.md is the front door, docs/ the manual.

Checked on README.md and every docs/*.md (text only, no project imports, well under a second):

- every relative link `[text](path)` / `![alt](path)` resolves to a file of the repository, and a `path#anchor`
  (or a bare `#anchor`, within the same file) names a heading of that file under GitHub's slug rules;
- README.md stays a front door (under 300 lines);
- no document names the history of its writing ("issue 12", "foundation");
- docs/index.md links every page of docs/.

Links inside code (fenced blocks, `inline code`) are text, not links, and are not checked. http(s) and mailto
links are not checked.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 300

# Image files a document may reference before they are committed (none now: docs/images/dashboard.png exists, so
# a missing screenshot fails).
MISSING_IMAGES_ALLOWED: set[str] = set()

# Words that describe how a document came to be written rather than what the project does.
HISTORY_WORDS = re.compile(r"\bissue\s*#?\d+|foundation", re.IGNORECASE)

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the target may carry a "title". Nested brackets in the text are rare
# enough in these documents to ignore.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def documents() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines of a markdown text outside fenced code blocks."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(2)[0] * 3
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            continue
        out.append(line)
    return out


def links(path: Path) -> list[str]:
    targets = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        targets += LINK.findall(INLINE_CODE.sub("", line))
    return targets


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("*", "").lower()
    # GitHub keeps letters, marks, numbers, connector punctuation (the underscore), spaces and hyphens.
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or c == "_")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_follows_github():
    assert (
        slug("Measuring an existing checkpoint: `--against`") == "measuring-an-existing-checkpoint---against"
    )
    assert slug("Unstructured and N:M: `--mod prune:...`") == "unstructured-and-nm---mod-prune"
    assert slug("Footprint conventions (`hemorrhage_core/footprint.py`)") == (
        "footprint-conventions-hemorrhage_corefootprintpy"
    )
    assert slug("Sweeps & thresholds") == "sweeps--thresholds"
    assert slug("1. Prediction divergence") == "1-prediction-divergence"


def test_code_is_not_prose():
    text = "a [real](x.md) link\n```bash\n[not](y.md)\n```\n`[nor](z.md)` and [this](w.md#a)\n"
    lines = prose_lines(text)
    found = [t for line in lines for t in LINK.findall(INLINE_CODE.sub("", line))]
    assert found == ["x.md", "w.md#a"]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        rel = dest.relative_to(ROOT).as_posix() if dest.is_relative_to(ROOT) else str(dest)
        if not dest.exists():
            if rel not in MISSING_IMAGES_ALLOWED:
                broken.append(f"{target}: no file {rel}")
            continue
        if anchor:
            if dest.suffix != ".md" or dest.is_dir():
                broken.append(f"{target}: an anchor into {rel}, which is not a markdown file")
            elif anchor not in anchors(dest):
                broken.append(f"{target}: {rel} has no heading with the anchor #{anchor}")
    assert not broken, f"{doc.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_missing_image_allowlist_names_only_images():
    for rel in MISSING_IMAGES_ALLOWED:
        assert rel.endswith((".png", ".svg", ".jpg", ".gif")), rel


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, (
        f"README.md has {len(lines)} lines: move detail into docs/ (limit {README_MAX_LINES})"
    )


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_history_of_writing(doc: Path):
    hits = [
        f"line {i}: {m.group(0)!r}"
        for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        for m in HISTORY_WORDS.finditer(line)
    ]
    assert not hits, f"{doc.relative_to(ROOT)} names the history of its writing: " + "; ".join(hits)


def test_index_links_every_page():
    linked = {
        (DOCS / t.partition("#")[0]).resolve() for t in links(DOCS / "index.md") if not t.startswith("#")
    }
    pages = {p.resolve() for p in DOCS.glob("*.md") if p.name != "index.md"}
    missing = sorted(p.name for p in pages - linked)
    assert not missing, f"docs/index.md does not link: {', '.join(missing)}"


def test_readme_links_the_manual():
    assert "docs/index.md" in links(README)


def test_the_architecture_table_is_hemlab_archs_output():
    """docs/architectures.md holds `hemlab archs --markdown` verbatim (regenerate it with that command)."""
    from hemorrhage_core.archs import markdown_table

    text = (ROOT / "docs" / "architectures.md").read_text()
    assert markdown_table().strip() in text
