"""Decoding calibration (the paper's third mitigation) and short KL distillation toward the original. No torch.

Both read calibration text from the end of `calib_corpus` (never the evaluation windows) and the original
model's distributions on it, and both go after the modifications they repair:
`--mod prune:sparsity=0.5 --mod kl_distill:steps=100 --mod calibrate_decoding:bias=true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import SpecError
from ..spec import Modification, modification

DISTILL_PARAMS = ("norm", "lora")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


def _check_calibration(corpus: str, samples: int, length: int) -> None:
    _check(bool(corpus), "calib_corpus must name a corpus (news, wiki, bible) or a text file")
    _check(1 <= samples <= 4096, f"calib_samples must be in [1, 4096], got {samples}")
    _check(8 <= length <= 8192, f"calib_len must be in [8, 8192] tokens, got {length}")


@modification("calibrate_decoding")
@dataclass(frozen=True)
class CalibrateDecoding(Modification):
    """Fit a temperature (and optionally a per-token logit bias) minimising KL(original || modified) on
    calibration text; the modified logits z become z / T (+ b). Weights are untouched."""

    family: ClassVar[str] = "mitigation"
    touches_weights: ClassVar[bool] = False

    bias: bool = False
    calib_corpus: str = "news"
    calib_samples: int = 8
    calib_len: int = 256
    max_iter: int = 100  # L-BFGS iterations (the objective is convex in 1/T and b)

    def __post_init__(self):
        _check_calibration(self.calib_corpus, self.calib_samples, self.calib_len)
        _check(1 <= self.max_iter <= 10_000, f"max_iter must be in [1, 10000], got {self.max_iter}")

    def label(self) -> str:
        return "calibrate T" + (" + bias" if self.bias else "")


@modification("kl_distill")
@dataclass(frozen=True)
class KLDistill(Modification):
    """Short distillation toward the original: minimise KL(original || modified) on calibration text, training
    only norm weights and biases ("norm") or rank-r LoRA adapters merged back into the weights ("lora")."""

    family: ClassVar[str] = "mitigation"

    steps: int = 100
    params: str = "norm"
    lr: float = 1e-3
    lora_rank: int = 4
    batch_size: int = 2
    calib_corpus: str = "news"
    calib_samples: int = 16
    calib_len: int = 256
    seed: int = 0

    def __post_init__(self):
        _check(1 <= self.steps <= 100_000, f"kl_distill: steps must be in [1, 100000], got {self.steps}")
        _check(
            self.params in DISTILL_PARAMS,
            f"kl_distill: params must be one of {', '.join(DISTILL_PARAMS)}, got {self.params!r}",
        )
        _check(0.0 < self.lr <= 1.0, f"kl_distill: learning rate must be in (0, 1], got {self.lr}")
        _check(1 <= self.lora_rank <= 256, f"kl_distill: lora_rank must be in [1, 256], got {self.lora_rank}")
        _check(self.batch_size >= 1, f"kl_distill: batch_size must be >= 1, got {self.batch_size}")
        _check_calibration(self.calib_corpus, self.calib_samples, self.calib_len)

    def label(self) -> str:
        what = f"LoRA r{self.lora_rank}" if self.params == "lora" else "norms"
        return f"KL distill {what} {self.steps} steps"
