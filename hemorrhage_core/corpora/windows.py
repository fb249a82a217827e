"""Token windows, the unit of every measurement: ``token_windows`` cuts the start of a corpus into
non-overlapping ``[n, window]`` blocks; ``probe_texts`` takes short sequences from the end of the corpus so that
they do not overlap those windows (for any corpus longer than both): the calibration text of calibrated
modifications."""

from __future__ import annotations

import re

import torch

from ..errors import CorpusError
from .loading import Corpus

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
