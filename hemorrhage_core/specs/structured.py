"""Structured pruning specs: remove whole attention heads, MLP channels or transformer blocks. No torch here.

Unlike unstructured pruning, these shrink the matrices (or the block list), so the parameter count falls and the
model gets faster; every handler reports `params_before`, `params_after` and `param_reduction`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import (
    Modification,
    calib_corpus_field,
    calib_len_field,
    calib_samples_field,
    calibration_label,
    modification,
    option,
)

# How a head or channel group is ranked (implemented in hemorrhage_core/modify/structured.py, which checks it
# covers these): "magnitude" = squared l2 norm of the group's weights (LLM-Pruner's L2 baseline),
# "activation" = Σ |W|·‖X_j‖ over the group's weights (Wanda's score summed), "taylor" = Σ |W ⊙ Ḡ| over the
# group's weights (LLM-Pruner's element-wise first-order Taylor importance).
Importance = Literal["magnitude", "taylor", "activation"]
STRUCTURED_IMPORTANCE: frozenset[str] = frozenset(typing.get_args(Importance))


@dataclass(frozen=True)
class _StructuredPrune(Modification):
    family: ClassVar[str] = "prune"

    fraction: float = option(
        0.25, ge=0.0, lt=1.0, slider=(0.0, 0.9, 0.05), help="share of the heads or channels removed"
    )
    importance: Importance = option(
        "magnitude", help="magnitude (weights only), activation or taylor (calibrated)"
    )
    calib_corpus: str = calib_corpus_field()
    calib_samples: int = calib_samples_field()
    calib_len: int = calib_len_field()

    @property
    def calibrated(self) -> bool:
        return self.importance != "magnitude"

    def _calibration_label(self) -> str:
        return (
            calibration_label(self.calib_corpus, self.calib_samples, self.calib_len)
            if self.calibrated
            else ""
        )


@modification("prune_heads")
@dataclass(frozen=True)
class PruneHeads(_StructuredPrune):
    """Remove the least important attention heads of every layer (the same number in every layer).

    unit="query": remove round(fraction · G) query heads from every KV group of G query heads, keeping every K/V
    head (grouped-query attention needs the same group size everywhere); on a model without GQA (G = 1) a head is
    its own group and goes whole. unit="kv": remove round(fraction · n_kv) KV groups, each with its K and V heads
    and all its query heads. SmolLM2 (9 query / 3 KV heads) allows 1/3 or 2/3 either way; Gemma 3-270m (4 / 1)
    only the query unit.
    """

    unit: Literal["query", "kv"] = option(
        "query", help="query heads within each KV group, or whole KV groups"
    )

    def label(self) -> str:
        unit = " kv-groups" if self.unit == "kv" else ""
        return f"heads -{self.fraction:.0%}{unit} {self.importance}{self._calibration_label()}"


@modification("prune_channels")
@dataclass(frozen=True)
class PruneChannels(_StructuredPrune):
    """Remove the least important MLP intermediate channels of every layer (rows of gate/up, columns of down; in
    fused MoE experts the same number from every expert, each its own least important)."""

    def label(self) -> str:
        return f"mlp channels -{self.fraction:.0%} {self.importance}{self._calibration_label()}"


@modification("prune_blocks")
@dataclass(frozen=True)
class PruneBlocks(Modification):
    """ShortGPT: remove the `n_blocks` blocks whose output is most similar to their input.

    Block importance BI_i = 1 − mean over calibration tokens of cos(h_in, h_out); the lowest go. Blocks are ranked
    once, on the unmodified model (as ShortGPT does), not re-ranked after each removal.
    """

    family: ClassVar[str] = "prune"

    n_blocks: int = option(1, ge=1, layers_top=-1, help="blocks removed")
    calib_corpus: str = calib_corpus_field()
    calib_samples: int = calib_samples_field()
    calib_len: int = calib_len_field()

    def label(self) -> str:
        cal = calibration_label(self.calib_corpus, self.calib_samples, self.calib_len)
        return f"ShortGPT -{self.n_blocks} block{'s' if self.n_blocks > 1 else ''}{cal}"
