"""Decoding changes: truncation samplers and repetition penalty and temperature. No torch here.

Each knob is its own kind, applied in the order given (`--mod top_k:k=40 --mod temperature:value=0.7` truncates
first, then scales), and `sampler` bundles every knob in Hugging Face `generate`'s fixed order: repetition
penalty -> temperature -> top-k -> top-p -> min-p. Order matters: temperature before top-p changes which tokens
the nucleus keeps; llama.cpp, for instance, applies temperature last.

Every decoding change is judged against the original model at its reference setting (T = 1, no truncation).
Truncation gives probability 0 to tokens the original can emit, so KL(original || modified) is infinite by
definition; the profile reports it as such and adds KL(modified || original) and the mass cut away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Modification, check, modification


def _check_top_k(k: int) -> None:
    check(isinstance(k, int) and k >= 1, f"top-k needs k >= 1 tokens, got {k!r}")


def _check_top_p(p: float) -> None:
    check(0.0 < p <= 1.0, f"top-p (nucleus) mass must be in (0, 1], got {p}")


def _check_min_p(p: float) -> None:
    check(0.0 <= p < 1.0, f"min-p must be in [0, 1), got {p}")


def _check_penalty(penalty: float, last_n: int) -> None:
    check(1.0 <= penalty <= 10.0, f"repetition penalty must be in [1, 10] (1 = off), got {penalty}")
    check(last_n >= 0, f"repetition window last_n must be >= 0 (0 = the whole context), got {last_n}")


@modification("temperature")
@dataclass(frozen=True)
class Temperature(Modification):
    """Decoding temperature: the logits the metrics see are divided by `value` (reference setting: 1)."""

    family: ClassVar[str] = "decode"
    touches_weights: ClassVar[bool] = False
    value: float = 1.0

    def __post_init__(self):
        # Below 1e-3 the scaled logits of a real model leave float32's range: NaN perplexities, not numbers.
        check(1e-3 <= self.value <= 100.0, f"temperature must be in [0.001, 100], got {self.value}")

    def label(self) -> str:
        return f"T={self.value:g}"


@dataclass(frozen=True)
class DecodingChange(Modification):
    """Base of the decoding kinds: they act on the logits the user samples from, never on weights."""

    family: ClassVar[str] = "decode"
    touches_weights: ClassVar[bool] = False


@modification("top_k")
@dataclass(frozen=True)
class TopK(DecodingChange):
    """Top-k truncation: only the k most likely tokens keep probability (ties at the k-th logit are kept)."""

    k: int = 50

    def __post_init__(self):
        _check_top_k(self.k)

    def label(self) -> str:
        return f"top-k {self.k}"


@modification("top_p")
@dataclass(frozen=True)
class TopP(DecodingChange):
    """Nucleus (top-p) truncation: keep the smallest most-likely set whose probability reaches p."""

    p: float = 0.9

    def __post_init__(self):
        _check_top_p(self.p)

    def label(self) -> str:
        return f"top-p {self.p:g}"


@modification("min_p")
@dataclass(frozen=True)
class MinP(DecodingChange):
    """Min-p truncation: drop tokens whose probability is below p times the most likely token's."""

    p: float = 0.1

    def __post_init__(self):
        _check_min_p(self.p)

    def label(self) -> str:
        return f"min-p {self.p:g}"


@modification("repetition_penalty")
@dataclass(frozen=True)
class RepetitionPenalty(DecodingChange):
    """Repetition penalty (CTRL / Hugging Face): logits of tokens already in the context are divided by the
    penalty when positive, multiplied when negative. `last_n` > 0 looks at the last n tokens only (llama.cpp)."""

    penalty: float = 1.2
    last_n: int = 0

    def __post_init__(self):
        _check_penalty(self.penalty, self.last_n)

    def label(self) -> str:
        window = f" last {self.last_n}" if self.last_n else ""
        return f"rep-penalty {self.penalty:g}{window}"


@modification("sampler")
@dataclass(frozen=True)
class Sampler(DecodingChange):
    """Every decoding knob at once, in Hugging Face's order: repetition penalty, temperature, top-k, top-p, min-p.

    Neutral values switch a knob off (top_k=0, top_p=1, min_p=0, repetition_penalty=1, temperature=1), so the
    all-neutral sampler is exactly the original distribution.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    repetition_last_n: int = 0

    def __post_init__(self):
        check(0.0 < self.temperature <= 100.0, f"temperature must be in (0, 100], got {self.temperature}")
        if self.top_k:
            _check_top_k(self.top_k)
        _check_top_p(self.top_p)
        _check_min_p(self.min_p)
        _check_penalty(self.repetition_penalty, self.repetition_last_n)

    def label(self) -> str:
        parts = []
        if self.repetition_penalty != 1.0:
            parts.append(f"rep {self.repetition_penalty:g}")
        if self.temperature != 1.0:
            parts.append(f"T={self.temperature:g}")
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.top_p < 1.0:
            parts.append(f"top-p {self.top_p:g}")
        if self.min_p > 0.0:
            parts.append(f"min-p {self.min_p:g}")
        return "sampler " + (", ".join(parts) or "neutral")
