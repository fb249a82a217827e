"""Decoding changes: truncation samplers and repetition penalty and temperature, and the decode family. No torch.

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
from typing import Any, ClassVar

from .base import Modification, modification, option
from .families import Family, register_family

register_family(
    Family(
        "decode",
        "Decode",
        "casino",
        "#B279A2",
        4,
        False,
        "Change how the next token is chosen, not the weights. Every setting is compared with the original "
        "model at its reference setting (temperature 1, no truncation). Truncation gives zero probability to "
        "tokens the original can emit, so KL(original ‖ modified) is infinite by definition.",
        "pages/decode.py",
    )
)


# Each knob's rules, shared by its own kind and by `sampler`. Below a temperature of 1e-3 the scaled logits of a
# real model leave float32's range: NaN perplexities, not numbers.
def _temperature(default: float) -> Any:
    return option(
        default,
        ge=1e-3,
        le=100.0,
        slider=(0.05, 3.0, 0.05),
        help="the logits are divided by it (1: unchanged)",
    )


def _top_p(default: float, slider: tuple[float, float, float]) -> Any:
    return option(
        default,
        gt=0.0,
        le=1.0,
        slider=slider,
        what="top-p mass",
        help="keep the most likely tokens up to this mass",
    )


def _min_p(default: float, slider: tuple[float, float, float]) -> Any:
    return option(
        default,
        ge=0.0,
        lt=1.0,
        slider=slider,
        what="min-p ratio",
        help="drop tokens below this share of the most likely token's probability",
    )


def _penalty(default: float) -> Any:
    return option(default, ge=1.0, le=10.0, slider=(1.0, 2.0, 0.05), what="repetition penalty", help="1: off")


def _last_n(default: int) -> Any:
    return option(
        default, ge=0, what="repetition window", help="the last n tokens only (0: the whole context)"
    )


@modification("temperature")
@dataclass(frozen=True)
class Temperature(Modification):
    """Decoding temperature: the logits the metrics see are divided by `value` (reference setting: 1)."""

    family: ClassVar[str] = "decode"
    touches_weights: ClassVar[bool] = False
    value: float = _temperature(1.0)

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

    k: int = option(50, ge=1, slider=(1, 200, 1), what="top-k size", help="tokens kept")

    def label(self) -> str:
        return f"top-k {self.k}"


@modification("top_p")
@dataclass(frozen=True)
class TopP(DecodingChange):
    """Nucleus (top-p) truncation: keep the smallest most-likely set whose probability reaches p."""

    p: float = _top_p(0.9, (0.01, 1.0, 0.01))

    def label(self) -> str:
        return f"top-p {self.p:g}"


@modification("min_p")
@dataclass(frozen=True)
class MinP(DecodingChange):
    """Min-p truncation: drop tokens whose probability is below p times the most likely token's."""

    p: float = _min_p(0.1, (0.0, 0.99, 0.01))

    def label(self) -> str:
        return f"min-p {self.p:g}"


@modification("repetition_penalty")
@dataclass(frozen=True)
class RepetitionPenalty(DecodingChange):
    """Repetition penalty (CTRL / Hugging Face): logits of tokens already in the context are divided by the
    penalty when positive, multiplied when negative. `last_n` > 0 looks at the last n tokens only (llama.cpp)."""

    penalty: float = _penalty(1.2)
    last_n: int = _last_n(0)

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

    temperature: float = _temperature(1.0)
    top_k: int = option(
        0, ge=1, special={0: "off"}, slider=(0, 200, 1), what="top-k size", help="tokens kept"
    )
    top_p: float = _top_p(1.0, (0.05, 1.0, 0.05))
    min_p: float = _min_p(0.0, (0.0, 0.5, 0.01))
    repetition_penalty: float = _penalty(1.0)
    repetition_last_n: int = _last_n(0)

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
