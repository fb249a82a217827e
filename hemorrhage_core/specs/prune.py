"""Unstructured and N:M pruning (`prune`) and the prune family; its handler and the score registry are
modify/prune.py. No torch."""

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
    check,
    modification,
    option,
    partial_field,
    router_field,
    scope_label,
)
from .families import Family, register_family

register_family(
    Family(
        "prune",
        "Prune",
        "content_cut",
        "#54A24B",
        0,
        True,
        "Zero a share of the weights. The headline shows the share of weights kept (1 − achieved sparsity); "
        "the paper finds unstructured pruning holds far longer than structured pruning, and magnitude "
        "collapses first.",
        "pages/prune.py",
    )
)

# Pruning score names. Each is implemented in hemorrhage_core/modify/prune.py's method registry (a test checks the
# two agree); listed here so specs validate without importing torch or the handlers.
PruneMethod = Literal["magnitude", "wanda", "sparsegpt", "gblm", "taylor"]
PRUNE_METHODS: set[str] = set(typing.get_args(PruneMethod))


# Methods that read calibration text (activations or gradients): the calib_* fields matter only for these.
CALIBRATED_PRUNE_METHODS: frozenset[str] = frozenset({"wanda", "sparsegpt", "gblm", "taylor"})


def parse_nm(pattern: str) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): N zeros in every M consecutive input weights; 'unstructured' -> None. SpecError otherwise."""
    if pattern == "unstructured":
        return None
    n_text, sep, m_text = pattern.partition(":")
    check(
        bool(sep) and n_text.isdigit() and m_text.isdigit(),
        f"pruning pattern must be 'unstructured' or 'N:M' (e.g. 2:4, 4:8), got {pattern!r}",
    )
    n, m = int(n_text), int(m_text)
    check(0 < n < m <= 64, f"N:M pattern needs 0 < N < M <= 64, got {pattern!r}")
    return n, m


@modification("prune")
@dataclass(frozen=True)
class Prune(Modification):
    """Unstructured or N:M pruning of every Linear / Conv1D: zero the lowest-scoring weights.

    Methods: magnitude |W|; wanda |W|·‖X_j‖ (activation-aware); sparsegpt (OBS mask + update of the remaining
    weights with the damped inverse Hessian); gblm |W|·‖X_j‖ + grad_alpha·|W|·‖G‖ and taylor |W ⊙ Ḡ| (gradients
    of the LM loss on calibration text). Calibrated methods run block by block on the outputs of the already
    pruned blocks when `sequential` (as Wanda's and SparseGPT's reference code do).
    """

    family: ClassVar[str] = "prune"

    sparsity: float = option(
        0.5, ge=0.0, lt=1.0, slider=(0.0, 0.95, 0.05), help="share of the weights zeroed"
    )
    method: PruneMethod = option("magnitude", help="the score that ranks the weights")
    scope: Literal["row", "tensor"] = option(
        "row", help="row: the same share in every output row (as Wanda); tensor: one threshold per matrix"
    )
    include_lm_head: bool = False
    pattern: str = option(
        "unstructured",
        suggest=("unstructured", "2:4", "4:8", "8:16"),
        help="unstructured, or N:M: N zeros in every M consecutive inputs (sparsity must equal N/M)",
    )
    calib_corpus: str = calib_corpus_field()
    calib_samples: int = calib_samples_field()
    calib_len: int = calib_len_field()
    sequential: bool = option(
        True, help="calibrate block i on the outputs of the pruned blocks < i (False: all on the dense model)"
    )
    damp: float = option(
        0.01, gt=0.0, lt=1.0, help="sparsegpt: Hessian damping, as a share of its mean diagonal"
    )
    blocksize: int = option(128, ge=1, help="sparsegpt: columns pruned and compensated together")
    grad_alpha: float = option(
        100.0, ge=0.0, help="gblm: weight of the gradient term (GBLM-Pruner's default)"
    )
    include_router: bool = router_field()
    partial: bool = partial_field("pruned")

    def validate(self) -> None:
        nm = parse_nm(self.pattern)
        if nm is not None:
            n, m = nm
            check(
                abs(self.sparsity - n / m) < 1e-9,
                f"pattern {self.pattern} zeroes {n}/{m} = {n / m:g} of the weights: set sparsity={n / m:g}",
            )
            check(self.scope == "row", "an N:M pattern is per group of inputs: use scope=row")
            check(
                self.blocksize % m == 0,
                f"sparsegpt blocksize ({self.blocksize}) must be a multiple of M ({m}) for pattern {self.pattern}",
            )

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_nm(self.pattern)

    @property
    def calibrated(self) -> bool:
        return self.method in CALIBRATED_PRUNE_METHODS

    def label(self) -> str:
        shape = self.pattern if self.nm else f"{self.sparsity:.0%}"
        text = f"{self.method} {shape}" + (" tensor" if self.scope == "tensor" else "")
        if self.method == "gblm" and self.grad_alpha != 100.0:
            text += f" α={self.grad_alpha:g}"
        if self.calibrated:
            text += calibration_label(self.calib_corpus, self.calib_samples, self.calib_len)
            text += "" if self.sequential else " dense-calib"
        return text + scope_label(self)
