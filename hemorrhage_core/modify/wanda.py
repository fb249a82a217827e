"""Wanda (Sun et al., 2023): score |W_ij| · ‖X_j‖₂, pruned per output row (or per N:M group).

‖X_j‖₂ is the norm of input feature j over the calibration tokens (sqrt of the per-sequence sum of x_j², averaged
over sequences, as the reference code scales it). A small weight on a high-activation input channel survives
where magnitude pruning would drop it: that is the whole method. The handler in prune.py collects the norms block
by block on the pruned model's outputs (`Prune.sequential=True`, the reference code's behaviour) or on the dense
model in one pass.
"""

from __future__ import annotations

import torch

from ..specs import Prune
from .prune import Evidence, score_method


@score_method("wanda", activations=True)
def wanda_score(w: torch.Tensor, ev: Evidence, mod: Prune) -> torch.Tensor:
    """w [out, in] -> |w| · ‖X_j‖ broadcast over rows."""
    return w.abs() * ev.needed_inputs().act_norm().to(w.device)[None, :]
