"""Scale migration between activations and weights: SmoothQuant and AWQ-style searched scales.

Both rest on one identity: for any positive per-input-channel vector s, W x = (W diag(s)) (diag(s)⁻¹ x).

* **SmoothQuant** (Xiao et al., 2023) picks s_j = max|X_j|^α / max|W_j|^(1−α) so activation outlier channels shrink
  and the weights absorb the range: the model is unchanged in floating point, but activations become easy to
  quantize. diag(s)⁻¹ is folded into the norm that produces the input where there is one (q/k/v after the input
  norm, gate/up after the post-attention norm); elsewhere (o_proj, down_proj) it is applied by a forward pre-hook,
  which a deployment would fold into v_proj / up_proj instead. Folds are verified numerically on calibration
  inputs, so norms of any form (LayerNorm, RMSNorm, Gemma's (1 + w) RMSNorm) are handled or left to the hook.
* **AWQ-style** (Lin et al., 2024): for weight-only quantization, protect the channels with large mean |X_j| by
  quantizing W diag(s) with s = mean|X|^α (α grid-searched per layer group to minimise ‖Q(W diag(s)) diag(s)⁻¹ X −
  W X‖² over every calibration token, through the inputs' Gram matrix XᵀX), then RTN. α = 0 is plain RTN, so the search never does worse than RTN on its own
  objective. The effective weight Q(W diag(s)) diag(s)⁻¹ is written back (numerically what a folded deployment
  computes); AWQ's extra clipping search is not implemented.

MoE experts: AWQ searches each expert matrix on the tokens routed to it (its effective weight is written back, so
no fold is needed); SmoothQuant refuses fused experts, whose inputs no per-channel scale can reach.

Layers that read the same input tensor share one s (found by `sequential.input_groups`-style identity tests), as a
fold into their common producer requires.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn

from ..errors import SpecError
from ..footprint import SCALE_BITS, Footprint, grouped_bits_per_weight
from ..progress import Progress
from ..specs import AWQ, SmoothQuant
from ..structure import find_blocks
from .actquant import ACT_QUANT_MARK
from .base import ModContext, ModifiedModel, handles
from .coverage import check_scope, record_coverage
from .experts import ExpertTally, pool_starved_experts
from .quantize import quantize_grouped
from .sequential import calibration_stages, target_groups, walk_blocks
from .taps import InputFn, target_inputs
from .targets import LINEAR_TYPES, WeightTarget, linear_targets, plan_targets, tensor_attr, weight_view

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

FOLD_SAMPLE_TOKENS = 64  # tokens of a producer's input kept to verify a fold


# ------------------------------------------------------------------------------------------------------------
# Calibration: input groups with their activation statistics (one plain forward pass; SmoothQuant is exact in
# floating point, so it needs no block-by-block walk).
# ------------------------------------------------------------------------------------------------------------


@dataclass
class InputGroup:
    """Linear layers of one block reading the same input tensor, with |x| statistics of that input."""

    block: int
    members: list[tuple[str, nn.Module]]  # (qualified name, layer), in call order
    local_names: list[str] = field(default_factory=list)  # names relative to the block, e.g. "mlp.up_proj"
    producer: nn.Module | None = None  # the module whose output *is* the input (a norm), if any
    producer_in: torch.Tensor | None = None  # a few tokens of the producer's input, to verify a fold
    producer_out: torch.Tensor | None = None  # the producer's output on those tokens
    max_abs: torch.Tensor | None = None  # [in] max |x_j| over calibration tokens

    @property
    def label(self) -> str:
        """Short, unique within a block: "self_attn.q_proj,k_proj,v_proj", "mlp.down_proj", "attn.c_proj"."""
        parents = {n.rpartition(".")[0] for n in self.local_names}
        if len(parents) == 1 and (parent := parents.pop()):
            return parent + "." + ",".join(n.rpartition(".")[2] for n in self.local_names)
        return ",".join(self.local_names)

    @property
    def observed_max(self) -> torch.Tensor:
        """`max_abs` after `collect_input_groups`, which observes every group it returns (its first window is the
        one that found the group)."""
        if self.max_abs is None:
            raise RuntimeError(f"input group {self.label} of block {self.block} was never observed")
        return self.max_abs

    def observe(self, x: torch.Tensor) -> None:
        m = x.detach().float().abs().reshape(-1, x.shape[-1]).amax(dim=0)  # [in]
        self.max_abs = m if self.max_abs is None else torch.maximum(self.max_abs, m)


def _block_of(model: PreTrainedModel) -> dict[int, tuple[int, str]]:
    """id(module) -> (index of the block that contains it, its name relative to that block)."""
    return {
        id(m): (i, name) for i, block in enumerate(find_blocks(model)) for name, m in block.named_modules()
    }


@torch.no_grad()
def _discover_groups(
    model: PreTrainedModel, first_batch: torch.Tensor, targets: list[tuple[str, nn.Module]] | None = None
) -> list[InputGroup]:
    """Group the target layers (default: every Linear / Conv1D but lm_head) by shared input tensor and find each
    group's producer, on one batch."""
    targets = list(linear_targets(model)) if targets is None else targets
    block_of = _block_of(model)
    groups: list[tuple[torch.Tensor, InputGroup]] = []
    produced: list[tuple[torch.Tensor, nn.Module, torch.Tensor]] = []  # (output, module, input sample)
    handles = []

    def on_output(module, args, output):
        if isinstance(output, torch.Tensor) and args and isinstance(args[0], torch.Tensor):
            produced.append((output, module, args[0]))

    def on_input(name, module):
        def hook(_module, args):
            x = args[0]
            block, local = block_of.get(id(module), (-1, name))
            for tensor, group in groups:
                if tensor is x:
                    group.members.append((name, module))
                    group.local_names.append(local)
                    return
            groups.append((x, InputGroup(block=block, members=[(name, module)], local_names=[local])))

        return hook

    # Candidate producers: modules with a 1-D weight (norms); holding every output keeps identities unambiguous.
    for module in model.modules():
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() == 1 and not isinstance(module, LINEAR_TYPES):
            handles.append(module.register_forward_hook(on_output))
    for name, module in targets:
        handles.append(module.register_forward_pre_hook(on_input(name, module)))
    try:
        model.get_decoder()(input_ids=first_batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    result = []
    for x, group in groups:
        for out, module, inp in produced:
            if out is x:
                group.producer = module
                group.producer_in = inp.reshape(-1, inp.shape[-1])[:FOLD_SAMPLE_TOKENS].clone()
                group.producer_out = out.reshape(-1, out.shape[-1])[:FOLD_SAMPLE_TOKENS].clone()
        result.append(group)
    return [g for g in result if g.block >= 0]  # layers outside the blocks (none today) are not smoothed


@torch.no_grad()
def collect_input_groups(
    model: PreTrainedModel,
    windows: torch.Tensor,
    *,
    batch_size: int = 8,
    targets: list[tuple[str, nn.Module]] | None = None,
    progress: Progress | None = None,
) -> list[InputGroup]:
    """Input groups of every block with max |x_j| over the calibration windows [n, T]; `progress` hears each
    batch (a handler passes `ctx.progress`: a cancel check too)."""
    device = next(model.parameters()).device
    # One sequence is enough to see who feeds whom, and discovery holds every norm output of that pass.
    groups = _discover_groups(model, windows[:1].to(device), targets)
    handles = [
        g.members[0][1].register_forward_pre_hook(lambda _m, args, g=g: g.observe(args[0])) for g in groups
    ]
    try:
        for start in range(0, windows.shape[0], batch_size):
            if progress is not None:
                progress(
                    start / windows.shape[0],
                    f"activation statistics: sequence {start + 1}/{windows.shape[0]}",
                )
            model.get_decoder()(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return groups


# ------------------------------------------------------------------------------------------------------------
# SmoothQuant
# ------------------------------------------------------------------------------------------------------------


def weight_col_absmax(members: list[tuple[str, nn.Module]]) -> torch.Tensor:
    """[in] max |W_ij| over the output rows of every member layer."""
    return torch.stack([weight_view(m).abs().amax(dim=0).float() for _, m in members]).amax(dim=0)


def smoothing_scales(act_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's s_j = max|X_j|^α / max|W_j|^(1−α), [in]; channels with no signal keep s = 1."""
    a = act_max.float().clamp(min=1e-5)
    w = w_max.float().clamp(min=1e-5)
    s = a.pow(alpha) / w.pow(1 - alpha)
    dead = (act_max == 0) | (w_max == 0)
    return torch.where(dead, torch.ones_like(s), s.clamp(min=1e-5))


@dataclass
class InputScale:
    """Forward pre-hook multiplying a layer's input by a per-channel vector (diag(s)⁻¹ when no fold exists)."""

    inv_s: torch.Tensor  # [in]

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        return ((x * self.inv_s.to(dtype=x.dtype, device=x.device)), *args[1:])


_FOLDS = {
    # name: weight' from (weight, s); bias (if any) is divided by s in both forms
    "affine": lambda w, s: w / s,  # LayerNorm / RMSNorm: y = n(x) * w (+ b)
    "offset": lambda w, s: (1 + w) / s - 1,  # Gemma RMSNorm: y = n(x) * (1 + w)
}


@torch.no_grad()
def _fold_into_producer(group: InputGroup, s: torch.Tensor) -> str | None:
    """Divide the producer's output by s by rewriting its parameters; return the fold's name, or None (unchanged)
    when no form reproduces producer(x) / s on the sampled calibration input."""
    norm = group.producer
    if norm is None or group.producer_in is None or group.producer_out is None:
        return None
    weight = tensor_attr(norm, "weight").data
    bias = tensor_attr(norm, "bias").data if getattr(norm, "bias", None) is not None else None
    w0 = weight.clone()
    b0 = bias.clone() if bias is not None else None
    expected = group.producer_out.float() / s
    for name, fold in _FOLDS.items():
        weight.copy_(fold(w0.float(), s).to(w0.dtype))
        if bias is not None and b0 is not None:
            bias.copy_((b0.float() / s).to(b0.dtype))
        got = norm(group.producer_in).float()
        if torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max())):
            return name
    weight.copy_(w0)
    if bias is not None and b0 is not None:
        bias.copy_(b0)
    return None


@torch.no_grad()
def smooth_group(
    group: InputGroup, alpha: float, *, may_fold: bool = True
) -> tuple[torch.Tensor, str | None]:
    """Apply SmoothQuant to one group: W_j *= s_j for every member, x_j /= s_j by a fold or a pre-hook.

    `may_fold=False`: pre-hooks only, for models where the producer's output may reach layers outside the
    group."""
    s = smoothing_scales(group.observed_max, weight_col_absmax(group.members), alpha)  # [in]
    for _, module in group.members:
        w = weight_view(module)
        w.mul_(s.to(w.dtype)[None, :])
    fold = None
    if may_fold:
        fold = _fold_into_producer(
            group, s.to(group.producer_out.dtype) if group.producer_out is not None else s
        )
    if fold is None:
        for _, module in group.members:
            module.register_forward_pre_hook(InputScale(1.0 / s))
    return s, fold


@handles(SmoothQuant)
def apply_smoothquant(state: ModifiedModel, mod: SmoothQuant, ctx: ModContext) -> None:
    model = state.model
    if any(hasattr(m, ACT_QUANT_MARK) for _, m in linear_targets(model)):
        raise SpecError(
            "smoothquant must come before act_quant in the modification list (it prepares its inputs)"
        )
    plan = plan_targets(model, mod, supports=_smoothable)
    check_scope(plan, mod)
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    groups = collect_input_groups(
        model, windows, targets=[(t.name, t.module) for t in plan.targets], progress=ctx.progress
    )
    # A fold rescales the producer's output for every reader: only safe when every reader is smoothed. With an
    # excluded router or skipped experts some readers are not, so the scales go to pre-hooks on the members.
    can_fold = not plan.excluded and not plan.unhandled
    folded = 0
    before, after = [], []
    smoothed: list[nn.Module] = []
    for group in groups:
        s, fold = smooth_group(group, mod.alpha, may_fold=can_fold)
        folded += fold is not None
        smoothed.extend(m for _, m in group.members)
        before.append(float(group.observed_max.max()))
        after.append(float((group.observed_max / s).max()))
    state.report.update(
        {
            "smooth_alpha": mod.alpha,
            "smooth_groups": float(len(groups)),
            "smooth_folded_groups": float(folded),
            "act_absmax_before": sum(before) / max(len(before), 1),
            "act_absmax_after": sum(after) / max(len(after), 1),
            "calib_tokens": float(windows.numel()),
        }
    )
    ids = {id(m) for m in smoothed}
    record_coverage(state, mod, plan, [t for t in plan.targets if id(t.module) in ids])


def _smoothable(target: WeightTarget) -> str | None:
    if target.kind == "expert":
        return (
            "SmoothQuant cannot scale the inputs of fused experts (3-D gate_up_proj/down_proj): the down_proj "
            "input is computed inside the experts kernel, where no per-channel scale can be applied"
        )
    if not isinstance(target.module, LINEAR_TYPES):
        return f"SmoothQuant smooths Linear layers; {type(target.module).__name__} holds a bare weight"
    return None


def activation_outlier_stats(
    model: PreTrainedModel, windows: torch.Tensor, *, alpha: float = 0.5, progress: Progress | None = None
) -> pd.DataFrame:
    """Per layer input channel: max |activation| before and after SmoothQuant smoothing with `alpha`.

    Tidy columns: layer, module (the layers sharing that input, e.g. "q_proj,k_proj,v_proj"), channel,
    max_abs_before, max_abs_after. `model` is only read (hooks are removed); `windows` is LongTensor [n, T].
    After smoothing the input channel j is x_j / s_j exactly, so its max is max_abs_before / s_j.
    """
    rows = []
    for group in collect_input_groups(model, windows, progress=progress):
        s = smoothing_scales(group.observed_max, weight_col_absmax(group.members), alpha)
        before = group.observed_max.cpu()
        after = (group.observed_max / s).cpu()
        rows.append(
            pd.DataFrame(
                {
                    "layer": group.block,
                    "module": group.label,
                    "channel": range(before.numel()),
                    "max_abs_before": before.numpy(),
                    "max_abs_after": after.numpy(),
                }
            )
        )
    columns = ["layer", "module", "channel", "max_abs_before", "max_abs_after"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


# ------------------------------------------------------------------------------------------------------------
# AWQ-style searched scales for weight-only quantization
# ------------------------------------------------------------------------------------------------------------


class _GroupStats:
    """Forward pre-hook accumulating, over every calibration token of a group's input x [.., in]: the Gram matrix
    G = Σ x xᵀ [in, in] (so ‖X Δᵀ‖² = Σ_rows Δ G Δᵀ needs no stored activations) and Σ |x_j| [in]."""

    def __init__(self, in_features: int, device: torch.device):
        self.gram = torch.zeros(in_features, in_features, device=device)
        self.abs_sum = torch.zeros(in_features, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1, x.shape[-1])  # [tokens, in]
        self.gram.addmm_(x.t(), x)
        self.abs_sum += x.abs().sum(dim=0)
        self.tokens += x.shape[0]

    @staticmethod
    def feeder(stats: dict[WeightTarget, _GroupStats]) -> InputFn:
        """The `target_inputs` callback adding each target's input to its own statistics (a function rather than a
        lambda in the loop: it binds this stage's `stats`)."""
        return lambda t, x, _sequences: stats[t].add(x)

    @classmethod
    def pooled(cls, parts: list[_GroupStats]) -> _GroupStats:
        """The mean statistics of `parts` (experts of one layer): see experts.py."""
        pooled = cls(parts[0].gram.shape[0], parts[0].gram.device)
        for p in parts:
            pooled.gram += p.gram / len(parts)
            pooled.abs_sum += p.abs_sum
            pooled.tokens += p.tokens
        return pooled

    @property
    def mean_abs(self) -> torch.Tensor:
        return self.abs_sum / max(self.tokens, 1)


def awq_scales(mean_abs: torch.Tensor, alpha: float) -> torch.Tensor:
    """AWQ's s = mean|X|^α, normalised so max(s)·min(s) = 1 (keeps the weights' overall range in place)."""
    s = mean_abs.float().clamp(min=1e-4).pow(alpha)
    return s / (s.max() * s.min()).sqrt()


def output_error(delta: torch.Tensor, gram: torch.Tensor) -> float:
    """‖X Δᵀ‖² for a weight error Δ [out, in], from the inputs' Gram matrix G = XᵀX [in, in]."""
    return float(((delta @ gram) * delta).sum())


@torch.no_grad()
def awq_search(
    weights: list[torch.Tensor],
    gram: torch.Tensor,
    mean_abs: torch.Tensor,
    *,
    bits: int,
    scheme: str,
    group_size: int,
    grid: int,
) -> tuple[float, list[torch.Tensor], list[float]]:
    """Grid-search α for layers sharing one input; `weights` are [out, in] each, `gram` = XᵀX [in, in] of the input.

    Returns (best α, the effective quantized weights Q(W diag(s)) diag(s)⁻¹ at that α, the error per α), the error
    being Σ_layers ‖X (W_eff − W)ᵀ‖² over every calibration token. α = 0 (s = 1) is RTN, the first grid point.
    """
    gram = gram.float()
    errors: list[float] = []
    best: tuple[float, float, list[torch.Tensor]] = (math.inf, 0.0, [])
    for k in range(grid):
        alpha = k / grid
        s = awq_scales(mean_abs, alpha)[None, :]  # [1, in]
        effective, err = [], 0.0
        for w in weights:
            w = w.float()
            w_eff = quantize_grouped(w * s, bits=bits, scheme=scheme, group_size=group_size) / s
            err += output_error(w_eff - w, gram)
            effective.append(w_eff)
        errors.append(err)
        if err < best[0]:
            best = (err, alpha, effective)
    return best[1], best[2], errors


def awq_bits_per_weight(bits: int, in_features: int, out_features: int, group_size: int, asym: bool) -> float:
    """The grouped grid plus one fp16 scale per input channel, counted as stored with the layer (an upper bound:
    a deployment folds most of them into the preceding norm for free)."""
    base = grouped_bits_per_weight(bits, in_features, out_features, group_size, asym=asym)
    return base + SCALE_BITS / out_features


@handles(AWQ)
def apply_awq(state: ModifiedModel, mod: AWQ, ctx: ModContext) -> None:
    model = state.model
    device = next(model.parameters()).device
    plan = plan_targets(model, mod, supports=_in_blocks)
    check_scope(plan, mod)
    per_block: dict[int | None, list[WeightTarget]] = defaultdict(list)
    for t in plan.targets:
        per_block[t.block].append(t)
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    footprint = Footprint()
    experts = ExpertTally()
    done: list[WeightTarget] = []
    alphas = []
    for step in walk_blocks(model, windows, batch_size=8, progress=ctx.progress, label="AWQ"):
        if not per_block.get(step.index):
            continue
        # Each stage is searched on the inputs produced by the stages already quantized before it (the experts
        # of one parameter form one stage: they read disjoint rows of one input).
        for stage in calibration_stages(target_groups(step, per_block[step.index])):
            stats = {g[0]: _GroupStats(g[0].shape[1], device) for g in stage}
            with target_inputs(list(stats), _GroupStats.feeder(stats)):
                step.forward(stop_after=stage[-1][-1].module)
            unusable = pool_starved_experts(
                stats, rows=lambda s: s.tokens, pool=_GroupStats.pooled, tally=experts
            )
            for members in stage:
                if members[0] in unusable:
                    continue
                group_stats = stats[members[0]]
                weights = [t.view() for t in members]
                alpha, effective, _ = awq_search(
                    weights,
                    group_stats.gram,
                    group_stats.mean_abs,
                    bits=mod.bits,
                    scheme=mod.scheme,
                    group_size=mod.group_size,
                    grid=mod.grid,
                )
                alphas.append(alpha)
                for target, w, w_eff in zip(members, weights, effective, strict=True):
                    target.write(w_eff)
                    out_f, in_f = w.shape
                    bpw = awq_bits_per_weight(mod.bits, in_f, out_f, mod.group_size, mod.scheme == "asym")
                    footprint.add_target(target, bpw)
                done.extend(members)
    state.report.update(footprint.report(model))
    state.report["awq_alpha_mean"] = sum(alphas) / max(len(alphas), 1)
    state.report["awq_rtn_share"] = sum(a == 0 for a in alphas) / max(len(alphas), 1)
    state.report["calib_tokens"] = float(windows.numel())
    state.report.update(experts.report())
    record_coverage(state, mod, plan, done, missing_reason="never called in the block's calibration forward")


def _in_blocks(target: WeightTarget) -> str | None:
    # AWQ calibrates block by block; Linear layers outside the blocks were never part of it.
    return None if target.block is not None else "outside the blocks"
