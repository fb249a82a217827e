"""Weight quantization. Pure tensor functions first; the handlers below apply them to a model copy."""

from __future__ import annotations

import torch

from ..spec import QuantizeRTN
from .base import ModContext, ModifiedModel, handles
from .targets import linear_targets, set_weight, weight_view

SCALE_BITS = 16  # scales and zero points are stored as fp16 in every real format we compare against


def _grid(w: torch.Tensor, bits: int, scheme: str) -> torch.Tensor:
    """Fake-quantize each row of `w` [rows, cols] on its own grid; return the dequantized values (same shape)."""
    w = w.float()
    if scheme == "sym":
        qmax = 2 ** (bits - 1) - 1
        scale = w.abs().amax(dim=1, keepdim=True) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale
    qmax = 2**bits - 1
    lo = w.amin(dim=1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(w / scale) + zero, 0, qmax)
    return (q - zero) * scale


def quantize_rtn(w: torch.Tensor, *, bits: int, scheme: str, granularity: str, group_size: int = 128) -> torch.Tensor:
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


def rtn_bits_per_weight(mod: QuantizeRTN, in_features: int, out_features: int) -> float:
    """Storage cost including scales (and zero points for asym), in bits per weight."""
    if mod.granularity == "tensor":
        groups = 1
    elif mod.granularity == "channel":
        groups = out_features
    else:
        groups = out_features * -(-in_features // mod.group_size)
    per_group = SCALE_BITS + (mod.bits if mod.scheme == "asym" else 0)
    return mod.bits + groups * per_group / (in_features * out_features)


@handles(QuantizeRTN)
def apply_rtn(state: ModifiedModel, mod: QuantizeRTN, ctx: ModContext) -> None:
    total_weights = 0
    total_bits = 0.0
    for _, module in linear_targets(state.model, include_lm_head=mod.include_lm_head):
        w = weight_view(module)
        set_weight(
            module, quantize_rtn(w, bits=mod.bits, scheme=mod.scheme, granularity=mod.granularity, group_size=mod.group_size)
        )
        n = w.numel()
        total_weights += n
        total_bits += n * rtn_bits_per_weight(mod, w.shape[1], w.shape[0])
    state.report["quantized_weights"] = float(total_weights)
    state.report["bits_per_weight"] = total_bits / max(total_weights, 1)
