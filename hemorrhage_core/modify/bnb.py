"""bitsandbytes backends: LLM.int8() and 4-bit NF4/FP4, by swapping the copy's Linear layers for bnb layers.

bitsandbytes >= 0.47 runs both on the CPU (0.50.2 here) and on CUDA with its kernels. Only `nn.Linear` has a bnb
counterpart, so GPT-2's `Conv1D` layers are first rewritten as the equivalent `nn.Linear` (same function: Conv1D
computes x @ W + b with W stored [in, out]). The lm_head is left alone (both real models tie it to the embedding).

Which LLM.int8() runs: bnb layers in eval mode take the inference path (`MatMul8bitLt`: activations cast to fp16,
quantized per token to int8 with the columns holding |x| >= threshold kept in floating point, int8 matmul, and the
outlier columns multiplied by the *dequantized* int8 weights). In training mode bnb's CPU path is plain
dequantize-and-matmul, i.e. weight-only int8: the layers are put in eval mode so the measured model is LLM.int8().
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..footprint import Footprint, bnb_4bit_bits_per_weight, bnb_int8_bits_per_weight
from ..specs import Bnb4bit, BnbInt8
from .base import ModContext, ModifiedModel, handles
from .coverage import check_scope, record_coverage
from .targets import LINEAR_TYPES, WeightTarget, plan_targets, tensor_attr, weight_view

log = logging.getLogger(__name__)


class _DropFp16CastNotice(logging.Filter):
    """bnb logs one warning per forward call that fp32 inputs are cast to fp16 for int8 quantization: it is the
    documented behaviour of LLM.int8(), and thousands of identical lines would bury every other log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be cast from" not in record.getMessage()


def _bnb():
    """Import bitsandbytes lazily: it is heavy, and only these two modifications need it."""
    import bitsandbytes

    logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropFp16CastNotice())
    return bitsandbytes


def conv1d_as_linear(module: Conv1D) -> nn.Linear:
    """The `nn.Linear` computing exactly what a GPT-2 `Conv1D` computes (weight transposed to [out, in])."""
    in_features, out_features = module.weight.shape
    linear = nn.Linear(in_features, out_features, bias=module.bias is not None)
    linear.to(device=module.weight.device, dtype=module.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(module.weight.t())
        if module.bias is not None:
            linear.bias.copy_(module.bias)
    return linear.requires_grad_(False)


def _int8_layer(linear: nn.Module, mod: BnbInt8) -> nn.Module:
    bnb = _bnb()
    w = weight_view(linear)
    layer = bnb.nn.Linear8bitLt(
        w.shape[1], w.shape[0], bias=linear.bias is not None, has_fp16_weights=False, threshold=mod.threshold
    )
    layer.weight = bnb.nn.Int8Params(
        w.detach().float().cpu().clone(), requires_grad=False, has_fp16_weights=False
    )
    return layer


def _4bit_layer(linear: nn.Module, mod: Bnb4bit) -> nn.Module:
    bnb = _bnb()
    w = weight_view(linear)
    layer = bnb.nn.Linear4bit(
        w.shape[1],
        w.shape[0],
        bias=linear.bias is not None,
        compute_dtype=getattr(torch, mod.compute_dtype),
        compress_statistics=mod.double_quant,
        quant_type=mod.quant_type,
    )
    layer.weight = bnb.nn.Params4bit(
        w.detach().float().cpu().clone(),
        requires_grad=False,
        blocksize=mod.blocksize,
        compress_statistics=mod.double_quant,
        quant_type=mod.quant_type,
    )
    # On CPUs with AVX512-BF16, bnb's inference path repacks the weights and computes in bf16 whatever
    # `compute_dtype` says, which adds a rounding error that belongs to that kernel, not to the 4-bit format.
    # Turning it off makes the layer compute exactly x @ dequantize(W)ᵀ in `compute_dtype`.
    layer.support_avx512bf16_for_cpu = False
    return layer


def _swappable(target: WeightTarget) -> str | None:
    if target.kind == "expert":
        return (
            "bitsandbytes has no layer for fused 3-D experts parameters (gate_up_proj/down_proj [E, out, in]); "
            "only nn.Linear layers can be swapped"
        )
    if not isinstance(target.module, LINEAR_TYPES):
        return f"bitsandbytes swaps nn.Linear layers; {type(target.module).__name__} holds a bare weight"
    return None


def _swap(state: ModifiedModel, mod, build, bits_per_weight) -> None:
    """Replace every target layer by `build(layer)`; record the footprint before the packed weights appear."""
    model = state.model
    plan = plan_targets(model, mod, supports=_swappable)
    check_scope(plan, mod)
    footprint = Footprint()
    for target in plan.targets:
        footprint.add_target(target, bits_per_weight(target.shape[1]))
    state.report.update(footprint.report(model))
    for target in plan.targets:
        module = target.module
        device = module.weight.device
        source = conv1d_as_linear(module) if isinstance(module, Conv1D) else module
        layer = build(source)
        if source.bias is not None:
            layer.bias = nn.Parameter(tensor_attr(source, "bias").detach().clone(), requires_grad=False)
        # Moving to the device is what quantizes the weights (on the CPU and on CUDA alike).
        model.set_submodule(target.module_name, layer.to(device).eval().requires_grad_(False))
    log.info("replaced %d layers with bitsandbytes layers", len(plan.targets))
    record_coverage(state, mod, plan, plan.targets)


@handles(BnbInt8)
def apply_bnb_int8(state: ModifiedModel, mod: BnbInt8, ctx: ModContext) -> None:
    _swap(state, mod, lambda lin: _int8_layer(lin, mod), bnb_int8_bits_per_weight)
    state.report["int8_threshold"] = float(mod.threshold)


@handles(Bnb4bit)
def apply_bnb_4bit(state: ModifiedModel, mod: Bnb4bit, ctx: ModContext) -> None:
    _swap(
        state,
        mod,
        lambda lin: _4bit_layer(lin, mod),
        lambda _in: bnb_4bit_bits_per_weight(mod.blocksize, mod.double_quant),
    )
