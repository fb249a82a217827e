"""Loading a corpus: a built-in name, a user's text file or uploaded text, checked to be UTF-8 prose. A corpus is
identified by the sha256 of its text, not by its name or path. No torch."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import CorpusError
from .builtin import CORPORA, _prepare_one

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
