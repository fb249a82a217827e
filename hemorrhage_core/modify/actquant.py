"""Weight + activation quantization (W8A8, W4A8) as forward pre-hooks on the copy's Linear / Conv1D layers.

Weights are rounded once (symmetric RTN per output channel or group). Every layer input is fake-quantized on the
fly by an `ActivationQuantizer` pre-hook, symmetric, with either

* a **static per-tensor** scale fixed from calibration text (max or a percentile of |x|): what a deployment with
  one precomputed scale per tensor does, and what outlier channels ruin: one channel 100x larger than the rest
  sets the step for all of them; or
* a **dynamic per-token** scale computed at run time from each token's own max |x| (LLM.int8()'s vector-wise
  quantization): the "dynamic quantization scaling" remedy of the paper;

optionally with LLM.int8()'s **outlier decomposition**: input columns holding any |x| >= threshold in the current
call stay in floating point. As in bitsandbytes, the row scales are computed with the outlier elements zeroed and
the outlier columns' *weights* stay quantized (bnb multiplies them by its dequantized int8 weights), so the
decomposition protects activations only.

The hooks live on the modified copy only (the base model is never touched) and die with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..footprint import Footprint, grouped_bits_per_weight
from ..specs import ActQuant
from .base import ModContext, ModifiedModel, handles
from .coverage import check_scope, record_coverage
from .quantize import quantize_grouped
from .targets import LINEAR_TYPES, WeightTarget, plan_targets

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# Marks a layer whose input is quantized, so a later scale migration can refuse to run after it (see scaling.py).
ACT_QUANT_MARK = "_hemlab_act_quantizer"


def qmax_for(bits: int) -> int:
    """Largest code of a symmetric signed grid with a zero-centred range [-qmax, qmax] (127 for 8 bits)."""
    return 2 ** (bits - 1) - 1


def fake_quant_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric fake quantization with one scale per token: x [..., in] -> same shape, float32.

    code = round(x · qmax / max_j |x_j|) over the token's own features, written as bitsandbytes writes it
    (multiply by the inverse scale) so that ties round the same way; all-zero tokens stay zero.
    """
    x = x.float()
    qmax = qmax_for(bits)
    absmax = x.abs().amax(dim=-1, keepdim=True)  # [..., 1]
    absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    return torch.clamp(torch.round(x * (qmax / absmax)), -qmax, qmax) * (absmax / qmax)


def fake_quant_per_tensor(x: torch.Tensor, bits: int, absmax: float) -> torch.Tensor:
    """Symmetric fake quantization with one fixed scale absmax / qmax; values beyond ±absmax are clipped."""
    x = x.float()
    qmax = qmax_for(bits)
    scale = absmax / qmax if absmax > 0 else 1.0
    return torch.clamp(torch.round(x / scale), -qmax, qmax) * scale


def outlier_columns(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bool [in]: input columns in which any token of this call has |x| >= threshold (LLM.int8()'s rule)."""
    return (x.reshape(-1, x.shape[-1]).abs() >= threshold).any(dim=0)


@dataclass
class ActivationQuantizer:
    """Forward pre-hook that replaces a layer's input by its fake-quantized version.

    `absmax` is the static per-tensor range (None in dynamic mode); `threshold` > 0 enables the outlier
    decomposition.
    """

    bits: int
    mode: str  # "static" | "dynamic"
    absmax: float | None = None
    threshold: float = 0.0

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> fake-quantized x, same shape and dtype."""
        inliers = x.float()
        cols = None
        if self.threshold > 0:
            cols = outlier_columns(inliers, self.threshold)
            if cols.any():
                inliers = torch.where(inliers.abs() >= self.threshold, torch.zeros_like(inliers), inliers)
            else:
                cols = None
        if self.mode == "dynamic":
            q = fake_quant_per_token(inliers, self.bits)
        else:
            q = fake_quant_per_tensor(inliers, self.bits, self.absmax or 0.0)
        if cols is not None:
            q[..., cols] = x[..., cols].float()  # outlier columns pass in floating point
        return q.to(x.dtype)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        return (self.quantize(args[0]), *args[1:])


class _RangeObserver:
    """Calibration statistic of |x| for one layer: running max, or the mean over batches of a percentile.

    The percentile is taken per calibration batch with `kthvalue` (torch.quantile refuses tensors over 16M
    elements) and averaged over batches, a cheap stand-in for a histogram calibrator.
    """

    def __init__(self, stat: str, percentile: float, threshold: float):
        self.stat, self.percentile, self.threshold = stat, percentile, threshold
        self.values: list[float] = []

    def __call__(self, module: nn.Module, args: tuple) -> None:
        a = args[0].detach().float().abs().flatten()
        if self.threshold > 0:  # outliers will pass in float: they must not set the static range either
            a = a[a < self.threshold]
        if a.numel() == 0:
            return
        if self.stat == "max":
            self.values.append(float(a.max()))
        else:
            k = max(1, min(a.numel(), round(self.percentile / 100 * a.numel())))
            self.values.append(float(a.kthvalue(k).values))

    @property
    def absmax(self) -> float:
        if not self.values:
            return 0.0
        return max(self.values) if self.stat == "max" else sum(self.values) / len(self.values)


@torch.no_grad()
def calibrate_ranges(
    model: PreTrainedModel,
    targets: list[tuple[str, nn.Module]],
    windows: torch.Tensor,
    mod: ActQuant,
    batch_size: int = 8,
) -> dict[str, float]:
    """Static per-tensor |x| range of every target layer's input over the calibration windows [n, T]."""
    observers = {
        name: _RangeObserver(mod.a_static_stat, mod.a_percentile, mod.outlier_threshold)
        for name, _ in targets
    }
    handles = [module.register_forward_pre_hook(observers[name]) for name, module in targets]
    device = next(model.parameters()).device
    try:
        for start in range(0, windows.shape[0], batch_size):
            # The decoder alone: the LM head is not a target and its full-vocabulary logits are the costly part.
            model.get_decoder()(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {name: obs.absmax for name, obs in observers.items()}


def _act_quantizable(target: WeightTarget) -> str | None:
    if target.kind == "expert":
        return (
            "activation quantization of fused experts is not implemented: their inputs (routed rows, gated "
            "activations) are computed inside the experts kernel, where no pre-hook reaches"
        )
    if not isinstance(target.module, LINEAR_TYPES):
        return (
            f"activation quantization hooks Linear layers; {type(target.module).__name__} holds a bare weight"
        )
    return None


@handles(ActQuant)
def apply_act_quant(state: ModifiedModel, mod: ActQuant, ctx: ModContext) -> None:
    model = state.model
    plan = plan_targets(model, mod, supports=_act_quantizable)
    check_scope(plan, mod)
    targets = [(t.name, t.module) for t in plan.targets]
    ranges: dict[str, float] = {}
    if mod.a_mode == "static":
        # Ranges come from the model as the chain left it (e.g. smoothed), before its own weights are rounded.
        windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
        ranges = calibrate_ranges(model, targets, windows, mod)
        state.report["calib_tokens"] = float(windows.numel())
        state.report["a_static_absmax_mean"] = sum(ranges.values()) / max(len(ranges), 1)
    footprint = Footprint()
    for target in plan.targets:
        w = target.view()
        target.write(quantize_grouped(w, bits=mod.w_bits, scheme="sym", group_size=mod.w_group_size))
        footprint.add_target(
            target, grouped_bits_per_weight(mod.w_bits, w.shape[1], w.shape[0], mod.w_group_size, asym=False)
        )
        quantizer = ActivationQuantizer(
            mod.a_bits, mod.a_mode, ranges.get(target.name), mod.outlier_threshold
        )
        target.module.register_forward_pre_hook(quantizer)
        setattr(target.module, ACT_QUANT_MARK, quantizer)
    state.report.update(footprint.report(model))
    state.report["a_bits"] = float(mod.a_bits)
    log.info("activation quantization: %s on %d layers", mod.label(), len(targets))
    record_coverage(state, mod, plan, plan.targets)
