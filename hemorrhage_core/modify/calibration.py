"""Calibration data and activation statistics shared by every calibrated modification (Wanda, SparseGPT, GPTQ, ...).

`calibration_windows` cuts calibration sequences out of a corpus; the runner caches them per (model, corpus,
n, length) and hands them to handlers through `ModContext.calibration_windows`. They are taken from the *end* of
the corpus, like the attention probe set, because the evaluation windows are taken from its start: when the
calibration corpus is the evaluation corpus, no calibration token is ever an evaluation token (checked, not
assumed), and the attention probe set at the very end is skipped too.
"""

from __future__ import annotations

import torch

from ..corpora import Corpus, probe_texts, sequence_bos
from ..errors import CorpusError


def corpus_token_count(tokenizer, corpus: Corpus) -> int:
    """Tokens in the whole corpus (no special tokens), the unit of the overlap check below."""
    return len(tokenizer(corpus.text, add_special_tokens=False, verbose=False)["input_ids"])


def calibration_windows(
    tokenizer,
    corpus: Corpus,
    n: int,
    length: int,
    *,
    skip_tail_tokens: int = 0,
    reserved_head_tokens: int = 0,
) -> torch.Tensor:
    """`n` calibration sequences of `length` tokens from the end of `corpus`: LongTensor [n, length].

    Sequences follow the tokenizer's BOS convention (as evaluation windows do). `skip_tail_tokens` corpus tokens
    at the very end are left out (the attention probe set when the corpora are the same); if the sequences would
    reach into the first `reserved_head_tokens` tokens (the evaluation windows), CorpusError says by how much.
    """
    if n < 1 or length < 2:
        raise CorpusError(f"calibration needs n >= 1 sequences of length >= 2, got n={n}, length={length}")
    span = length - (sequence_bos(tokenizer) is not None)  # corpus tokens per sequence
    skip = -(-skip_tail_tokens // span)  # whole sequences dropped at the end to step over the tail
    # probe_texts returns consecutive spans that end at the corpus end: the first n of n + skip are ours.
    windows = probe_texts(corpus, tokenizer, n + skip, length)[:n]
    if reserved_head_tokens:
        total = corpus_token_count(tokenizer, corpus)
        needed = (n + skip) * span + reserved_head_tokens
        if needed > total:
            raise CorpusError(
                f"calibration on {corpus.name!r} ({n} x {length} tokens from its end) would overlap the "
                f"{reserved_head_tokens} evaluation tokens at its start: the corpus has {total} tokens and "
                f"{needed} are needed. Use fewer or shorter calibration sequences, or another corpus."
            )
    return windows
