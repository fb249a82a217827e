"""Decoding calibration (`calibrate_decoding`), the paper's third mitigation, and the mitigation family's entry;
handler: modify/decoding_calibration.py. No torch.

It reads calibration text from the end of `calib_corpus` (never the evaluation windows) and goes after the
modifications it repairs: `--mod prune:sparsity=0.5 --mod calibrate_decoding:bias=true`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Modification, calib_corpus_field, calib_len_field, calib_samples_field, modification, option
from .families import Family, register_family

register_family(
    Family(
        "mitigation",
        "Mitigate",
        "healing",
        "#72B7B2",
        3,
        True,
        "Pick a damaged chain and the remedies that apply; the recovered share of the damage is the headline.",
        "pages/mitigate.py",
    )
)


@modification("calibrate_decoding")
@dataclass(frozen=True)
class CalibrateDecoding(Modification):
    """Fit a temperature (and optionally a per-token logit bias) minimising KL(original || modified) on
    calibration text; the modified logits z become z / T (+ b). Weights are untouched."""

    family: ClassVar[str] = "mitigation"
    touches_weights: ClassVar[bool] = False

    bias: bool = option(False, help="fit a per-token logit bias too")
    calib_corpus: str = calib_corpus_field()
    calib_samples: int = calib_samples_field(8)
    calib_len: int = calib_len_field(256)
    max_iter: int = option(
        100, ge=1, le=10_000, help="L-BFGS iterations (the objective is convex in 1/T and b)"
    )

    def label(self) -> str:
        return "calibrate T" + (" + bias" if self.bias else "")
