"""Unstructured and N:M pruning (`prune`); its handler and the score registry are modify/prune.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import (
    DEFAULT_CALIBRATION,
    Modification,
    calibration_label,
    check,
    check_calibration,
    modification,
    scope_label,
)

# Pruning score names. Each is implemented in hemorrhage_core/modify/prune.py's method registry (a test checks the two
# agree); listed here so specs validate without importing torch or the handlers.
PRUNE_METHODS: set[str] = {"magnitude", "wanda", "sparsegpt", "gblm", "taylor"}


# Methods that read calibration text (activations or gradients): the calib_* fields matter only for these.
CALIBRATED_PRUNE_METHODS: frozenset[str] = frozenset({"wanda", "sparsegpt", "gblm", "taylor"})


def parse_nm(pattern: str) -> tuple[int, int] | None:
    """'2:4' -> (2, 4): N zeros in every M consecutive input weights; 'unstructured' -> None. SpecError otherwise."""
    if pattern == "unstructured":
        return None
    n, sep, m = pattern.partition(":")
    check(
        bool(sep) and n.isdigit() and m.isdigit(),
        f"pruning pattern must be 'unstructured' or 'N:M' (e.g. 2:4, 4:8), got {pattern!r}",
    )
    n, m = int(n), int(m)
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

    sparsity: float = 0.5
    method: str = "magnitude"
    scope: str = (
        "row"  # "row": the same share in every output row (as Wanda); "tensor": one threshold per matrix
    )
    include_lm_head: bool = False
    pattern: str = "unstructured"  # or "N:M": N zeros in every M consecutive inputs (sparsity must equal N/M)
    calib_corpus: str = DEFAULT_CALIBRATION[0]
    calib_samples: int = DEFAULT_CALIBRATION[1]
    calib_len: int = DEFAULT_CALIBRATION[2]
    sequential: bool = (
        True  # calibrate block i on the outputs of the pruned blocks < i (False: all on the dense model)
    )
    damp: float = 0.01  # sparsegpt: Hessian damping, as a share of its mean diagonal
    blocksize: int = 128  # sparsegpt: columns pruned and compensated together
    grad_alpha: float = 100.0  # gblm: weight of the gradient term (GBLM-Pruner's default)
    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be pruned (coverage reported)

    def __post_init__(self):
        check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        check(self.scope in ("row", "tensor"), f"pruning scope must be 'row' or 'tensor', got {self.scope!r}")
        check(
            self.method in PRUNE_METHODS,
            f"unknown pruning method {self.method!r}; available: {', '.join(sorted(PRUNE_METHODS))}",
        )
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
        check_calibration(self.calib_corpus, self.calib_samples, self.calib_len)
        check(0.0 < self.damp < 1.0, f"damp must be in (0, 1), got {self.damp}")
        check(self.blocksize >= 1, f"blocksize must be at least 1, got {self.blocksize}")
        check(self.grad_alpha >= 0.0, f"grad_alpha must be >= 0, got {self.grad_alpha}")

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
