"""Decoding calibration (`calibrate_decoding`), the paper's third mitigation; handler:
modify/decoding_calibration.py. No torch.

It reads calibration text from the end of `calib_corpus` (never the evaluation windows) and goes after the
modifications it repairs: `--mod prune:sparsity=0.5 --mod calibrate_decoding:bias=true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Modification, check, check_calibration, modification


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
        check_calibration(self.calib_corpus, self.calib_samples, self.calib_len)
        check(1 <= self.max_iter <= 10_000, f"max_iter must be in [1, 10000], got {self.max_iter}")

    def label(self) -> str:
        return "calibrate T" + (" + bias" if self.bias else "")
