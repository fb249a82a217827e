"""Structured pruning: remove whole attention heads, MLP intermediate channels, or transformer blocks.

Heads and channels are "groups" of weights that live in several matrices (a query head is rows of its input
projection(s) and columns of the output projection; an MLP channel is a row of gate and up and a column of down).
Where they live is described as data, per layout, in `heads.py` (`ATTENTION_LAYOUTS`: separate q/k/v, fused
[q; k; v], per-KV-group interleaving, CodeGen's mp_num chunks, multi-query, with q/k norms, attention sinks and
ALiBi) and `channels.py` (`MLP_LAYOUTS` and fused MoE experts). A group's importance is the sum of an element-wise
score over its weights (`IMPORTANCE`: magnitude w², activation |w|·‖X_j‖, or LLM-Pruner's first-order Taylor
|w·ḡ|), computed once on the model as it is. The least important groups of every layer go (the same number per
layer, as LLM-Pruner does, so every layer keeps a valid shape), the matrices are sliced, and the attention modules
learn their new head counts. Removing a group computes exactly what the unpruned model computes with that
group's output columns zeroed (tests/integration/test_structured_layouts.py checks it for every layout).

Blocks follow ShortGPT: importance 1 − cos(h_in, h_out) averaged over calibration tokens; the least important
blocks are removed with the depth family's `rebuild_blocks`, and `layer_map` sends them to None.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import SpecError
from ..specs import STRUCTURED_IMPORTANCE, PruneBlocks, PruneChannels, PruneHeads
from ..structure import blocks_name, find_blocks
from .base import ModContext, ModifiedModel, handles
from .channels import DenseChannels, ExpertChannels, channel_groups
from .depth import rebuild_blocks
from .evidence import GradientStats, InputStats, accumulate_gradients, input_statistics
from .experts import ExpertTally, pool_starved_experts
from .heads import HeadCut, check_cut, head_layout, remove_heads
from .prune import CALIB_BATCH
from .targets import WeightTarget, as_targets, weight_view

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def nearest(x: float) -> int:
    """Round half up (Python's round() sends 0.5 to 0 and 2.5 to 2: surprising for a count of heads)."""
    return math.floor(x + 0.5)


def count_params(model: PreTrainedModel) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def linear_weight_count(model: PreTrainedModel) -> int:
    """Weights of the Linear / Conv1D layers inside the blocks: what unstructured pruning's sparsity refers to."""
    return sum(
        weight_view(m).numel()
        for b in find_blocks(model)
        for m in b.modules()
        if isinstance(m, nn.Linear | Conv1D)
    )


# ----------------------------------------------------------------------------------------------------------------
# Importance: an element-wise score [out, in] per involved matrix, summed over each group's weights.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Evidence:
    inputs: dict[str, InputStats] | None = None
    grads: GradientStats | None = None


ElementScore = Callable[[str, WeightTarget, Evidence], torch.Tensor]  # (name, matrix, evidence) -> [out, in]
IMPORTANCE: dict[
    str, tuple[ElementScore, bool, bool]
] = {}  # name -> (score, needs activations, needs gradients)


def importance(name: str, *, activations: bool = False, gradients: bool = False):
    def register(fn: ElementScore) -> ElementScore:
        IMPORTANCE[name] = (fn, activations, gradients)
        return fn

    return register


@importance("magnitude")
def _magnitude(name, target, ev):
    return target.view().float().pow(2)


@importance("activation", activations=True)
def _activation(name, target, ev):
    w = target.view().float()
    return w.abs() * ev.inputs[name].act_norm().to(w.device)[None, :]


@importance("taylor", gradients=True)
def _taylor(name, target, ev):
    w = target.view().float()
    return (w * ev.grads.mean[name].to(w.device)).abs()


assert set(IMPORTANCE) == STRUCTURED_IMPORTANCE, "specs/prune_structured.py and structured.py disagree"


Sums = dict[str, tuple[torch.Tensor, torch.Tensor]]  # name -> (row sums [out], column sums [in]) of its score


def _scores(
    model: PreTrainedModel, matrices: Mapping[str, nn.Module | WeightTarget], mod, ctx: ModContext, tally
) -> Sums:
    """Row and column sums of the element score of every matrix (a Linear / Conv1D module, or a `WeightTarget`
    such as one fused expert); the evidence the importance needs is collected once for all of them."""
    targets = as_targets(matrices)
    score, activations, gradients = IMPORTANCE[mod.importance]
    ev = Evidence()
    if activations or gradients:
        windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
        if gradients:
            ev.grads = accumulate_gradients(model, targets, windows, squares=False)
        if activations:
            device = next(model.parameters()).device
            with torch.no_grad(), input_statistics(targets, hessian=False) as stats:
                for start in range(0, windows.shape[0], CALIB_BATCH):
                    model.get_decoder()(
                        input_ids=windows[start : start + CALIB_BATCH].to(device), use_cache=False
                    )
            ev.inputs = _pooled_experts(targets, stats, tally)
    sums = {}
    for name, target in targets.items():
        s = score(name, target, ev)  # [out, in], reduced at once: one matrix's score in memory at a time
        sums[name] = (s.sum(1), s.sum(0))
    return sums


def _pooled_experts(targets: dict[str, WeightTarget], stats: dict[str, InputStats], tally) -> dict:
    """Experts the calibration text barely routed to take their layer's pooled statistics (experts.py); a layer
    whose experts saw no token at all cannot be ranked by activation."""
    by_target = {targets[name]: s for name, s in stats.items()}
    unusable = pool_starved_experts(by_target, rows=lambda s: s.tokens, pool=InputStats.pooled, tally=tally)
    if unusable:
        raise SpecError(
            f"prune_channels: importance='activation': no calibration token reached the experts of "
            f"{next(iter(unusable)).param_name}; use more calibration samples or importance=magnitude or taylor"
        )
    return {name: by_target[t] for name, t in targets.items()}


Parts = list[tuple[nn.Module, str, torch.Tensor]]  # (module, side, [n groups, size] indices)


def _key(module) -> str:
    return f"m{id(module)}"


def _matrices(parts: Parts) -> dict[str, nn.Module | WeightTarget]:
    return {_key(m): m for m, _, _ in parts}


def _group_scores(parts: Parts, sums: Sums) -> torch.Tensor:
    """[n groups] total element score of each group over its parts."""
    total = None
    for module, side, index in parts:
        line = sums[_key(module)][0 if side == "out" else 1].double().cpu()
        value = line[index].sum(1)
        total = value if total is None else total + value
    if total is None:
        raise ValueError("a head or channel group without parts has no score")
    return total


def _report(state: ModifiedModel, before: int, before_linear: int) -> None:
    after, after_linear = count_params(state.model), linear_weight_count(state.model)
    state.report["params_before"] = float(before)
    state.report["params_after"] = float(after)
    state.report["param_reduction"] = 1 - after / before
    # Comparable with unstructured pruning's sparsity, which counts only the blocks' linear weights.
    state.report["linear_param_reduction"] = 1 - after_linear / before_linear


# ----------------------------------------------------------------------------------------------------------------
# Handlers.
# ----------------------------------------------------------------------------------------------------------------


def _original_layers(state: ModifiedModel, j: int) -> list[int]:
    return [i for i, mapped in enumerate(state.layer_map) if mapped == j]


def _lowest(scores: torch.Tensor, r: int) -> list[int]:
    return sorted(torch.topk(scores, r, largest=False).indices.tolist()) if r else []


def _head_cut(lay, mod: PruneHeads, q_scores: torch.Tensor, kv_scores: torch.Tensor) -> HeadCut:
    """The heads one layer keeps. Whole KV groups (unit="kv", or heads that are their own group), or the same
    number of query heads from every KV group (repeat_kv needs one group size)."""
    g_size, n_kv = lay.group_size, lay.n_kv
    if mod.unit == "kv" or g_size == 1:
        r = nearest(mod.fraction * n_kv)
        if r >= n_kv:
            raise SpecError(f"prune_heads: fraction {mod.fraction} removes all {n_kv} KV groups of a layer")
        gone_kv = set(_lowest(kv_scores + q_scores.reshape(n_kv, g_size).sum(1), r))
        return HeadCut(
            q=[h for h in range(lay.n_heads) if h // g_size not in gone_kv],
            kv=[g for g in range(n_kv) if g not in gone_kv],
        )
    r = nearest(mod.fraction * g_size)
    if r >= g_size:
        raise SpecError(
            f"prune_heads: fraction {mod.fraction} removes all {g_size} query heads of a KV group"
        )
    per_group = q_scores.reshape(n_kv, g_size)
    gone = {g * g_size + h for g in range(n_kv) for h in _lowest(per_group[g], r)}
    return HeadCut(q=[h for h in range(lay.n_heads) if h not in gone], kv=list(range(n_kv)))


@handles(PruneHeads)
def apply_prune_heads(state: ModifiedModel, mod: PruneHeads, ctx: ModContext) -> None:
    model = state.model
    before, before_linear = count_params(model), linear_weight_count(model)
    layouts = [head_layout(b, model) for b in find_blocks(model)]
    parts = [p for lay in layouts for unit in ("q", "kv") for p in lay.parts(unit)]
    sums = _scores(model, _matrices(parts), mod, ctx, ExpertTally())
    cuts = [_head_cut(lay, mod, _group_scores(lay.parts("q"), sums), _group_scores(lay.parts("kv"), sums))
            for lay in layouts]  # fmt: skip
    for lay, cut in zip(layouts, cuts, strict=True):
        check_cut(lay, cut)  # every layer can take its new counts before any is changed
    removed_heads = 0
    for j, (lay, cut) in enumerate(zip(layouts, cuts, strict=True)):
        if len(cut.q) == lay.n_heads:
            continue
        remove_heads(lay, cut)
        removed_heads += lay.n_heads - len(cut.q)
        for i in _original_layers(state, j):
            previous = state.head_map.get(i, list(range(lay.n_heads)))
            state.head_map[i] = [previous[h] for h in cut.q]
    if not removed_heads:
        log.warning("prune_heads: fraction %g removes no head of a %s layer", mod.fraction, mod.unit)
    state.report["heads_removed"] = float(removed_heads)
    _report(state, before, before_linear)


@handles(PruneChannels)
def apply_prune_channels(state: ModifiedModel, mod: PruneChannels, ctx: ModContext) -> None:
    model = state.model
    before, before_linear = count_params(model), linear_weight_count(model)
    prefix = blocks_name(model)
    groups, experts = [], {}  # experts: id(group) -> parameter -> one WeightTarget per expert
    for j, block in enumerate(find_blocks(model)):
        for g in channel_groups(block, model):
            groups.append(g)
            if isinstance(g, ExpertChannels):
                experts[id(g)] = g.targets(block, j, f"{prefix}.{j}")
    # One evidence pass for all: the dense parts and every expert matrix.
    matrices: dict[str, nn.Module | WeightTarget] = _matrices(
        [p for g in groups if isinstance(g, DenseChannels) for p in g.parts]
    )
    matrices |= {t.name: t for by_param in experts.values() for ts in by_param.values() for t in ts}
    tally = ExpertTally()
    sums = _scores(model, matrices, mod, ctx, tally)
    removed = 0
    for g in groups:
        r = nearest(mod.fraction * g.width)
        if r >= g.width:
            raise SpecError(
                f"prune_channels: fraction {mod.fraction} removes all {g.width} channels of an MLP"
            )
        if not r:
            continue
        if isinstance(g, DenseChannels):
            g.remove(torch.topk(_group_scores(g.parts, sums), r, largest=False).indices.tolist())
            removed += r
        else:
            up = [sums[t.name][0] for t in experts[id(g)][g.up_name]]  # each expert's row sums
            down = [sums[t.name][1] for t in experts[id(g)]["down_proj"]]  # ... and column sums
            g.remove(torch.topk(g.channel_scores(up, down), r, dim=1, largest=False).indices)
            removed += r * g.n_experts
    state.report["channels_removed"] = float(removed)
    state.report.update(tally.report())
    _report(state, before, before_linear)


# ----------------------------------------------------------------------------------------------------------------
# Whole blocks (ShortGPT).
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def block_importance(
    model: PreTrainedModel, windows: torch.Tensor, batch_size: int = CALIB_BATCH
) -> torch.Tensor:
    """ShortGPT block influence [L]: 1 − mean over tokens of cos(h_in, h_out) of every block, one forward pass."""
    blocks = find_blocks(model)
    sums = torch.zeros(len(blocks), dtype=torch.float64)
    tokens = torch.zeros(len(blocks), dtype=torch.float64)

    def hook_for(i: int):
        def hook(_module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]  # [b, T, d]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # [b, T]
            sums[i] += float(cos.sum())
            tokens[i] += cos.numel()

        return hook

    handles_ = [b.register_forward_hook(hook_for(i), with_kwargs=True) for i, b in enumerate(blocks)]
    device = next(model.parameters()).device
    try:
        for start in range(0, windows.shape[0], batch_size):
            model.get_decoder()(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles_:
            h.remove()
    return 1 - sums / tokens


@handles(PruneBlocks)
def apply_prune_blocks(state: ModifiedModel, mod: PruneBlocks, ctx: ModContext) -> None:
    model = state.model
    n = len(find_blocks(model))
    if mod.n_blocks >= n:
        raise SpecError(f"prune_blocks: n_blocks={mod.n_blocks} would remove all {n} blocks")
    before, before_linear = count_params(model), linear_weight_count(model)
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    bi = block_importance(model, windows)
    drop = set(torch.topk(bi, mod.n_blocks, largest=False).indices.tolist())
    log.info("ShortGPT block influence %s; removing %s", [round(float(v), 4) for v in bi], sorted(drop))
    # The depth family's block-list rebuild keeps layer_map, layer_idx and per-layer config lists consistent.
    rebuild_blocks(state, [j for j in range(n) if j not in drop])
    for i, j in enumerate(state.layer_map):
        if j is None:
            state.head_map.pop(i, None)
    state.report["blocks_removed"] = float(len(drop))
    _report(state, before, before_linear)
