"""Unstructured pruning: a score per weight, then the lowest share zeroed per output row or per tensor.

Scores form a registry keyed by `Prune.method`; magnitude is |W|. Activation- and gradient-aware scores register
themselves the same way (they need calibration inputs from `ModContext`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..spec import PRUNE_METHODS, Prune
from .base import ModContext, ModifiedModel, handles
from .targets import linear_targets, set_weight, weight_view

# score(model, [(name, module)], ctx) -> {name: score tensor [out, in]}; higher = keep
ScoreFn = Callable[[nn.Module, list[tuple[str, nn.Module]], ModContext], dict[str, torch.Tensor]]
SCORES: dict[str, ScoreFn] = {}


def pruning_score(name: str):
    def register(fn: ScoreFn) -> ScoreFn:
        SCORES[name] = fn
        PRUNE_METHODS.add(name)
        return fn

    return register


@pruning_score("magnitude")
def magnitude_scores(model, targets, ctx):
    return {name: weight_view(module).abs().float() for name, module in targets}


def prune_mask(score: torch.Tensor, sparsity: float, scope: str) -> torch.Tensor:
    """Boolean keep-mask [out, in] that drops exactly floor(sparsity * n) lowest scores per row (or per tensor).

    Uses topk rather than a quantile threshold: ties cannot change the count, and torch.quantile refuses tensors
    over 16M elements.
    """
    mask = torch.ones_like(score, dtype=torch.bool)
    if scope == "row":
        k = int(sparsity * score.shape[1])
        if k:
            drop = torch.topk(score, k, dim=1, largest=False).indices
            mask.scatter_(1, drop, False)
        return mask
    k = int(sparsity * score.numel())
    if k:
        drop = torch.topk(score.flatten(), k, largest=False).indices
        mask.view(-1)[drop] = False
    return mask


@handles(Prune)
def apply_prune(state: ModifiedModel, mod: Prune, ctx: ModContext) -> None:
    targets = list(linear_targets(state.model, include_lm_head=mod.include_lm_head))
    scores = SCORES[mod.method](state.model, targets, ctx)
    zeros = total = 0
    for name, module in targets:
        w = weight_view(module)
        pruned = w * prune_mask(scores[name], mod.sparsity, mod.scope)
        set_weight(module, pruned)
        zeros += int((pruned == 0).sum())
        total += pruned.numel()
    state.report["achieved_sparsity"] = zeros / max(total, 1)
    state.report["pruned_weights"] = float(total)
