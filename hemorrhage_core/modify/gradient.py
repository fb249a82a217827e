"""Gradient-aware pruning scores (the paper's "gradient-aware pruning" mitigation, docs/metrics.md §5).

GBLM-Pruner (Das et al., 2023) scores a weight with |W|·‖X_j‖ + α·|W|·‖G‖₂, where ‖G‖₂ is the l2 norm over
calibration sequences of the weight's per-sequence gradient of the LM loss; first-order Taylor pruning scores it
with |W ⊙ Ḡ|, the estimated loss change of zeroing it (Ḡ: the mean gradient). Gradients are computed once on the
model as it is, before any pruning (as GBLM-Pruner and LLM-Pruner do; `calibration.accumulate_gradients`);
GBLM's activation term is collected like Wanda's. Both work unstructured and N:M through prune.py's masks. The
structured (group-level) Taylor importance lives with the structured pruners (structured.py).
"""

from __future__ import annotations

import torch

from ..specs import Prune
from .prune import Evidence, score_method


@score_method("gblm", activations=True, grad_sq=True)
def gblm_score(w: torch.Tensor, ev: Evidence, mod: Prune) -> torch.Tensor:
    """GBLM-Pruner: |W|·‖X_j‖ + α·|W|·‖G‖₂, w [out, in].

    The two terms have different units; α (`Prune.grad_alpha`, 100 in GBLM-Pruner) sets their balance for gradients
    of the per-sequence mean token loss. With α = 0 this is exactly Wanda. The gradient term's share of the total
    score is reported as `gblm_gradient_share`.
    """
    activation_term = w.abs() * ev.needed_inputs().act_norm().to(w.device)[None, :]
    gradient_term = mod.grad_alpha * w.abs() * ev.needed_grads().l2(ev.name).to(w.device)
    # Reported (mean over layers) so a user can see whether alpha lets the gradient term matter at all.
    ev.notes["gblm_gradient_share"] = float(
        gradient_term.sum() / (activation_term.sum() + gradient_term.sum())
    )
    return activation_term + gradient_term


@score_method("taylor", grad_mean=True)
def taylor_score(w: torch.Tensor, ev: Evidence, mod: Prune) -> torch.Tensor:
    """First-order Taylor: |W ⊙ Ḡ|, the estimated loss change of zeroing each weight (ΔL ≈ -g·w), w [out, in]."""
    return (w * ev.needed_grads().mean[ev.name].to(w.device)).abs()
