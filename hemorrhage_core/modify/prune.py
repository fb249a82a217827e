"""Unstructured and N:M pruning: a registry of methods, the masks they share, and the `Prune` handler.

A method is a function `prune(w [out, in] fp32, evidence, mod) -> pruned w [out, in]` registered with what it
reads: input-activation norms (Wanda), the input Hessian (SparseGPT) and/or loss gradients (GBLM, Taylor). Most
methods are a score (higher = keep) plus the shared mask (`score_method`); SparseGPT also updates the weights it
keeps. The handler gathers the evidence: gradients once on the model as it is, activation statistics block by
block on the outputs of the already pruned blocks (`Prune.sequential`, as the reference Wanda and SparseGPT code
do) or all at once on the unpruned model.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import SpecError
from ..progress import scaled
from ..specs import PRUNE_METHODS, Prune
from .base import ModContext, ModifiedModel, handles
from .coverage import check_scope, record_coverage
from .evidence import GradientStats, InputStats, accumulate_gradients, input_statistics
from .experts import ExpertTally, pool_starved_experts
from .sequential import walk_blocks
from .targets import WeightTarget, plan_targets

log = logging.getLogger(__name__)

CALIB_BATCH = 8  # calibration sequences per forward: bounds activation memory, not the result


# ----------------------------------------------------------------------------------------------------------------
# Masks. All return a boolean keep-mask [out, in]; True = keep.
# ----------------------------------------------------------------------------------------------------------------


def prune_mask(score: torch.Tensor, sparsity: float, scope: str) -> torch.Tensor:
    """Keep-mask [out, in] that drops exactly floor(sparsity * n) lowest scores per row (or per tensor).

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


def check_nm(in_features: int, n: int, m: int) -> None:
    if in_features % m:
        raise SpecError(
            f"pattern {n}:{m} needs layers whose input size is a multiple of {m}; one has {in_features}"
        )


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask [out, in]: in every group of `m` consecutive inputs of a row, the `n` lowest scores are dropped."""
    out_features, in_features = score.shape
    check_nm(in_features, n, m)
    groups = score.reshape(out_features, in_features // m, m)
    mask = torch.ones_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, n, dim=2, largest=False).indices, False)
    return mask.reshape(out_features, in_features)


def keep_mask(score: torch.Tensor, mod: Prune) -> torch.Tensor:
    """The keep-mask `mod` asks for: N:M groups, or its sparsity per row / per tensor."""
    return nm_mask(score, *mod.nm) if mod.nm else prune_mask(score, mod.sparsity, mod.scope)


# ----------------------------------------------------------------------------------------------------------------
# The method registry.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What a method may read about one layer: its input statistics and the loss gradients (None if unneeded).

    `notes`: per-layer diagnostics a method may record (floats); the handler reports their mean over layers.
    """

    name: str
    inputs: InputStats | None = None
    grads: GradientStats | None = None
    notes: dict[str, float] = field(default_factory=dict)

    def needed_inputs(self) -> InputStats:
        """`inputs`, which the handler collects for every method registered with `activations` or `hessian`."""
        if self.inputs is None:
            raise RuntimeError(
                f"{self.name}: the pruning method reads input statistics it did not register for"
            )
        return self.inputs

    def needed_grads(self) -> GradientStats:
        """`grads`, which the handler collects for every method registered with `grad_mean` or `grad_sq`."""
        if self.grads is None:
            raise RuntimeError(f"{self.name}: the pruning method reads gradients it did not register for")
        return self.grads


PruneFn = Callable[[torch.Tensor, Evidence, Prune], torch.Tensor]
ScoreFn = Callable[[torch.Tensor, Evidence, Prune], torch.Tensor]  # (w [out, in], evidence, mod) -> [out, in]


@dataclass(frozen=True)
class PruneMethod:
    prune: PruneFn
    activations: bool = False  # needs InputStats.sq_norm of the layer input
    hessian: bool = False  # needs InputStats.hessian
    grad_mean: bool = False  # needs GradientStats.mean
    grad_sq: bool = False  # needs GradientStats.sq_sum

    @property
    def reads_inputs(self) -> bool:
        return self.activations or self.hessian

    @property
    def reads_gradients(self) -> bool:
        return self.grad_mean or self.grad_sq


METHODS: dict[str, PruneMethod] = {}


def pruning_method(name: str, **needs: bool):
    """Register `prune(w, evidence, mod) -> w'` under `name` (which must be listed in spec.PRUNE_METHODS)."""

    def register(fn: PruneFn) -> PruneFn:
        if name not in PRUNE_METHODS:
            raise ValueError(f"pruning method {name!r} is not listed in spec.PRUNE_METHODS")
        METHODS[name] = PruneMethod(fn, **needs)
        return fn

    return register


def score_method(name: str, **needs: bool):
    """Register a score (higher = keep); the method zeroes what `keep_mask` drops and changes nothing else."""

    def register(score: ScoreFn) -> ScoreFn:
        pruning_method(name, **needs)(lambda w, ev, mod: w * keep_mask(score(w, ev, mod), mod))
        return score

    return register


@score_method("magnitude")
def magnitude_score(w: torch.Tensor, ev: Evidence, mod: Prune) -> torch.Tensor:
    return w.abs()


# ----------------------------------------------------------------------------------------------------------------
# The handler.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    zeros: int = 0
    total: int = 0
    notes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@handles(Prune)
def apply_prune(state: ModifiedModel, mod: Prune, ctx: ModContext) -> None:
    method = METHODS[mod.method]
    model = state.model
    plan = plan_targets(model, mod)
    check_scope(plan, mod)
    targets = plan.by_name()
    if mod.nm:
        for t in targets.values():
            check_nm(t.shape[1], *mod.nm)
    windows = (
        ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
        if mod.calibrated
        else None
    )

    def calibration() -> torch.Tensor:
        if windows is None:
            raise RuntimeError(
                f"pruning method {mod.method!r} reads calibration evidence but is not in CALIBRATED_PRUNE_METHODS"
            )
        return windows

    grads = None
    if method.reads_gradients:
        grads = accumulate_gradients(
            model, targets, calibration(), mean=method.grad_mean, squares=method.grad_sq
        )
    tally = _Tally()
    experts = ExpertTally()
    done: list[WeightTarget] = []

    def prune_layer(name: str, inputs: InputStats | None) -> None:
        target = targets[name]
        w = target.view().float()
        evidence = Evidence(name, inputs, grads)
        pruned = method.prune(w, evidence, mod)
        target.write(pruned)
        done.append(target)
        for key, value in evidence.notes.items():
            tally.notes[key].append(value)
        tally.zeros += int((pruned == 0).sum())
        tally.total += pruned.numel()
        if grads is not None:  # free this layer's gradients as soon as they are used
            grads.mean.pop(name, None)
            grads.sq_sum.pop(name, None)

    def prune_with(stats: dict[str, InputStats]) -> None:
        by_target = {targets[name]: s for name, s in stats.items()}
        unusable = pool_starved_experts(
            by_target, rows=lambda s: s.tokens, pool=InputStats.pooled, tally=experts
        )
        for target, inputs in by_target.items():
            # A layer whose weight the block uses without calling it (Mamba's dt_proj) saw no input: it is left
            # alone and reported by the coverage check, never pruned on empty statistics.
            if target not in unusable and inputs.tokens > 0:
                prune_layer(target.name, inputs)

    if not method.reads_inputs:
        for k, name in enumerate(targets):
            ctx.progress(k / len(targets), f"{mod.method}: layer {k + 1}/{len(targets)}")
            prune_layer(name, None)
    elif mod.sequential:
        _prune_sequentially(
            model, targets, calibration(), method, prune_with, progress=ctx.progress, label=mod.method
        )
    else:
        prune_with(_dense_statistics(model, targets, calibration(), method, progress=ctx.progress))

    state.report["achieved_sparsity"] = tally.zeros / max(tally.total, 1)
    state.report["pruned_weights"] = float(tally.total)
    if windows is not None:
        state.report["calib_tokens"] = float(windows.numel())
    for key, values in tally.notes.items():
        state.report[key] = sum(values) / len(values)
    state.report.update(experts.report())
    record_coverage(state, mod, plan, done, missing_reason="no calibration token reached it")


def _dense_statistics(
    model, targets: dict[str, WeightTarget], windows: torch.Tensor, method: PruneMethod, progress=None
):
    """Input statistics of `targets` from full forward passes of `model` over `windows` [n, T]; `progress`
    hears each calibration batch (ModContext.progress: also where a cancel is noticed)."""
    device = next(model.parameters()).device
    # The LM head sees every position only when all logits are computed; then one sequence per pass bounds the
    # [b, T, vocabulary] logits (Gemma 3: 262k entries per position).
    head = model.get_output_embeddings()
    with_head = any(t.module is head for t in targets.values())
    batch, keep = (1, 0) if with_head else (CALIB_BATCH, 1)
    with (
        torch.no_grad(),
        input_statistics(targets, norms=method.activations, hessian=method.hessian) as stats,
    ):
        for start in range(0, windows.shape[0], batch):
            if progress is not None:
                progress(
                    start / windows.shape[0],
                    f"calibration statistics: sequence {start + 1}/{windows.shape[0]}",
                )
            model(input_ids=windows[start : start + batch].to(device), use_cache=False, logits_to_keep=keep)
    return stats


def _prune_sequentially(
    model,
    targets: dict[str, WeightTarget],
    windows,
    method: PruneMethod,
    prune_with,
    progress=None,
    label="prune",
):
    """Block by block: statistics of block i's layers on the outputs of the pruned blocks < i, then prune them.

    Inside a block all layers are calibrated on the block's input in one pass (as SparseGPT's and Wanda's
    reference code do), not one sub-layer after the other. Layers outside the blocks (lm_head when included) are
    calibrated last, on a full pass of the pruned model.
    """
    per_block: dict[int, dict[str, WeightTarget]] = defaultdict(dict)
    outside: dict[str, WeightTarget] = {}
    for name, target in targets.items():
        (per_block[target.block] if target.block is not None else outside)[name] = target
    # With layers outside the blocks, their full pass is the last tenth of the step.
    walk_share = 0.9 if outside else 1.0
    blocks_progress = scaled(progress, 0.0, walk_share)
    for step in walk_blocks(model, windows, batch_size=CALIB_BATCH, progress=blocks_progress, label=label):
        layers = per_block.get(step.index)
        if not layers:
            continue
        with input_statistics(layers, norms=method.activations, hessian=method.hessian) as stats:
            step.forward()
        prune_with(stats)
    if outside:
        prune_with(
            _dense_statistics(model, outside, windows, method, progress=scaled(progress, walk_share, 1.0))
        )
