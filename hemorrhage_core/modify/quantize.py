"""Weight quantization. Pure tensor functions first; the handlers below apply them to a model copy.

`grid_params` / `fake_quant` are the one uniform grid every weight quantizer of the project uses (RTN here, GPTQ,
AWQ and the weight half of activation quantization), so methods compared at "the same bits" share the grid.
"""

from __future__ import annotations

import torch

from ..footprint import SCALE_BITS, Footprint, uniform_bits_per_weight
from ..specs import QuantizeRTN
from .base import ModContext, ModifiedModel, handles
from .coverage import check_scope, record_coverage
from .targets import plan_targets

__all__ = ["SCALE_BITS", "fake_quant", "grid_params", "quantize_rtn", "rtn_bits_per_weight"]


def grid_params(w: torch.Tensor, bits: int, scheme: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of one grid per row of `w` [rows, cols]: (scale [rows, 1], zero [rows, 1]).

    "sym": zero-centred, scale = max|w| / (2^(b-1) - 1), zero = 0. "asym": min/max grid (always containing 0)
    with an integer zero point. All-zero rows get scale 1 so they stay exactly zero.
    """
    w = w.float()
    if scheme == "sym":
        scale = w.abs().amax(dim=1, keepdim=True) / (2 ** (bits - 1) - 1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return scale, torch.zeros_like(scale)
    lo = w.amin(dim=1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / (2**bits - 1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.round(-lo / scale)


def fake_quant(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, scheme: str
) -> torch.Tensor:
    """Round `w` [rows, k] onto the grid (scale, zero) [rows, 1] and return the dequantized float32 values."""
    w = w.float()
    if scheme == "sym":
        qmax = 2 ** (bits - 1) - 1
        return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return (q - zero) * scale


def _grid(w: torch.Tensor, bits: int, scheme: str) -> torch.Tensor:
    """Fake-quantize each row of `w` [rows, cols] on its own grid; return the dequantized values (same shape)."""
    scale, zero = grid_params(w, bits, scheme)
    return fake_quant(w, scale, zero, bits, scheme)


def quantize_rtn(
    w: torch.Tensor, *, bits: int, scheme: str, granularity: str, group_size: int = 128
) -> torch.Tensor:
    """Round-to-nearest fake quantization of an [out, in] weight; returns float32 [out, in].

    Every element is within half a quantization step of the original. For "group", groups run along the input
    dimension; a last, shorter group takes the remainder (SmolLM2's d=576 is not a multiple of 128).
    """
    out_features, in_features = w.shape
    if granularity == "tensor":
        return _grid(w.reshape(1, -1), bits, scheme).reshape(w.shape)
    if granularity == "channel":
        return _grid(w, bits, scheme)
    full = (in_features // group_size) * group_size
    parts = []
    if full:
        head = w[:, :full].reshape(out_features * (full // group_size), group_size)
        parts.append(_grid(head, bits, scheme).reshape(out_features, full))
    if full < in_features:
        parts.append(_grid(w[:, full:], bits, scheme))
    return torch.cat(parts, dim=1)


def quantize_grouped(w: torch.Tensor, *, bits: int, scheme: str, group_size: int) -> torch.Tensor:
    """`quantize_rtn` with the GPTQ/AWQ convention for granularity: `group_size` -1 = one scale per row."""
    if group_size == -1:
        return quantize_rtn(w, bits=bits, scheme=scheme, granularity="channel")
    return quantize_rtn(w, bits=bits, scheme=scheme, granularity="group", group_size=group_size)


def rtn_bits_per_weight(mod: QuantizeRTN, in_features: int, out_features: int) -> float:
    """Storage cost including scales (and zero points for asym), in bits per weight."""
    return uniform_bits_per_weight(
        mod.bits,
        in_features,
        out_features,
        granularity=mod.granularity,
        group_size=mod.group_size,
        asym=mod.scheme == "asym",
    )


@handles(QuantizeRTN)
def apply_rtn(state: ModifiedModel, mod: QuantizeRTN, ctx: ModContext) -> None:
    plan = plan_targets(state.model, mod)
    check_scope(plan, mod)
    footprint = Footprint()
    for k, target in enumerate(plan.targets):
        ctx.progress(k / len(plan.targets), f"RTN layer {k + 1}/{len(plan.targets)}")
        w = target.view()
        target.write(
            quantize_rtn(
                w, bits=mod.bits, scheme=mod.scheme, granularity=mod.granularity, group_size=mod.group_size
            )
        )
        footprint.add_target(target, rtn_bits_per_weight(mod, w.shape[1], w.shape[0]))
    state.report.update(footprint.report(state.model))
    record_coverage(state, mod, plan, plan.targets)
