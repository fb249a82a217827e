"""Quantization catalogue: the defining property of each method, on tensors, single layers and tiny models.

GPTQ's per-layer output error is below RTN's; bitsandbytes layers compute exactly what their dequantized weights
(and, for LLM.int8(), their per-token int8 activations) say; dynamic per-token activation scales survive outlier
channels that ruin a static per-tensor scale; SmoothQuant leaves the float model unchanged while shrinking
activation outliers; AWQ's searched scales never do worse than RTN on their objective; every scheme records its
footprint.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hemorrhage_core import footprint as fp
from hemorrhage_core.cli import main
from hemorrhage_core.errors import SpecError
from hemorrhage_core.modify import ModContext, apply_modifications
from hemorrhage_core.modify.actquant import (
    ActivationQuantizer,
    fake_quant_per_tensor,
    fake_quant_per_token,
    outlier_columns,
)
from hemorrhage_core.modify.gptq import HessianAccumulator, gptq_quantize
from hemorrhage_core.modify.quantize import quantize_grouped, quantize_rtn
from hemorrhage_core.modify.scaling import activation_outlier_stats, awq_search, collect_input_groups
from hemorrhage_core.modify.sequential import input_groups, walk_blocks
from hemorrhage_core.modify.targets import linear_targets, weight_view
from hemorrhage_core.probes.capture import forward_sites
from hemorrhage_core.specs import AWQ, GPTQ, ActQuant, Bnb4bit, BnbInt8, QuantizeRTN, SmoothQuant

VOCAB = 256
CALIB = dict(calib_samples=8, calib_len=32)


def _llama(outlier_scale: float = 1.0) -> nn.Module:
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    _outlier_channels(model, outlier_scale)
    return model


def _gpt2(outlier_scale: float = 1.0) -> nn.Module:
    config = GPT2Config(vocab_size=VOCAB, n_layer=2, n_embd=64, n_head=4, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval().requires_grad_(False)
    _outlier_channels(model, outlier_scale)
    return model


def _outlier_channels(model: nn.Module, scale: float) -> None:
    """Give three hidden channels a much larger range in the norms feeding the linear layers, the structure real
    LLMs have (a few 'massive activation' channels) and random tiny models lack."""
    if scale == 1.0:
        return
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if (
            isinstance(w, torch.Tensor)
            and w.dim() == 1
            and name.split(".")[-1] in ("input_layernorm", "post_attention_layernorm", "ln_1", "ln_2")
        ):
            w.data[:3] *= scale


@pytest.fixture(params=["llama", "gpt2"])
def tiny(request):
    return _llama() if request.param == "llama" else _gpt2()


def _windows(n: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))


def _ctx(seed: int = 1) -> ModContext:
    return ModContext(calibration_source=lambda corpus, n, length: _windows(n, length, seed))


def _kl(base: nn.Module, modified: nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        p = base(ids).logits.float().log_softmax(-1)
        q = modified(ids).logits.float().log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def _layer_inputs(model: nn.Module, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs [tokens, in] of every target layer of `model` on `ids`."""
    inputs, handles = {}, []
    for name, module in linear_targets(model):
        handles.append(
            module.register_forward_pre_hook(
                lambda _m, args, name=name: inputs.__setitem__(name, args[0].reshape(-1, args[0].shape[-1]))
            )
        )
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return inputs


# ------------------------------------------------------------------------------------------------------------
# GPTQ
# ------------------------------------------------------------------------------------------------------------


def _correlated_inputs(n: int, d: int, seed: int = 0, rank: int = 16) -> torch.Tensor:
    """[n, d] inputs that mostly live in a `rank`-dimensional subspace, with features of very different scales:
    the structure of a layer's real inputs that GPTQ exploits (independent white inputs leave it nothing)."""
    g = torch.Generator().manual_seed(seed)
    low_rank = torch.randn(n, rank, generator=g) @ torch.randn(rank, d, generator=g) / rank**0.5
    return (low_rank + 0.1 * torch.randn(n, d, generator=g)) * torch.linspace(0.2, 3, d)


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("group_size", [-1, 16])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_layer_output_error_is_below_rtn(bits, group_size, act_order):
    torch.manual_seed(bits)
    w = torch.randn(48, 64)
    X = _correlated_inputs(1024, 64)
    acc = HessianAccumulator(64, torch.device("cpu"))
    for chunk in X.split(100):  # the running mean must equal the one-shot 2/n XᵀX
        acc.add(chunk)
    assert torch.allclose(acc.H, 2 / X.shape[0] * X.t() @ X, rtol=1e-4, atol=1e-4)
    q_gptq = gptq_quantize(w, acc.H, bits=bits, group_size=group_size, block_size=16, act_order=act_order)
    q_rtn = quantize_grouped(w, bits=bits, scheme="sym", group_size=group_size)
    err_gptq = (X @ (w - q_gptq).t()).norm()
    err_rtn = (X @ (w - q_rtn).t()).norm()
    assert err_gptq < 0.7 * err_rtn, (err_gptq, err_rtn)


def test_gptq_stays_on_the_rtn_grid():
    """GPTQ changes which grid point each weight takes, not the grid: per-channel rows keep <= 2^bits levels."""
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    X = _correlated_inputs(512, 64)
    q = gptq_quantize(w, 2 / 512 * X.t() @ X, bits=3, group_size=-1, scheme="asym")
    assert all(q[i].unique().numel() <= 2**3 for i in range(q.shape[0]))
    assert not torch.equal(q, quantize_rtn(w, bits=3, scheme="asym", granularity="channel"))


def test_gptq_ignores_inputs_that_are_always_zero():
    torch.manual_seed(0)
    w = torch.randn(8, 32)
    X = _correlated_inputs(256, 32)
    X[:, 5] = 0
    q = gptq_quantize(w, 2 / 256 * X.t() @ X, bits=4)
    assert torch.all(q[:, 5] == 0) and torch.isfinite(q).all()


@pytest.mark.parametrize("bits", [3, 4])
def test_sequential_gptq_beats_rtn_on_every_layer_of_a_tiny_model(tiny, bits):
    """The issue's acceptance test on a model: ‖WX − QX‖ per layer, X = that layer's inputs in the base model."""
    windows = _windows(16, 32)
    gptq = apply_modifications(tiny, 2, (GPTQ(bits=bits, group_size=16, **CALIB),), _ctx()).model
    rtn = apply_modifications(tiny, 2, (QuantizeRTN(bits=bits, granularity="group", group_size=16),)).model
    inputs = _layer_inputs(tiny, windows)
    base_w = dict(linear_targets(tiny))
    q_gptq, q_rtn = dict(linear_targets(gptq)), dict(linear_targets(rtn))
    ratios = []
    for name, X in inputs.items():
        w = weight_view(base_w[name])
        e_gptq = (X @ (w - weight_view(q_gptq[name])).t()).norm()
        e_rtn = (X @ (w - weight_view(q_rtn[name])).t()).norm()
        ratios.append(float(e_gptq / e_rtn))
    assert max(ratios) < 1.0, ratios


def test_gptq_after_pruning_keeps_the_pruned_weights_at_zero(tiny):
    from hemorrhage_core.specs import Prune

    pruned = apply_modifications(tiny, 2, (Prune(sparsity=0.5),)).model
    both = apply_modifications(
        tiny, 2, (Prune(sparsity=0.5), GPTQ(bits=4, group_size=16, **CALIB)), _ctx()
    ).model
    for (name, before), (_, after) in zip(linear_targets(pruned), linear_targets(both), strict=True):
        zeros = weight_view(before) == 0
        assert torch.all(weight_view(after)[zeros] == 0), name
        assert not torch.equal(weight_view(after), weight_view(before))


def test_gptq_records_footprint_and_leaves_the_base_alone(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    state = apply_modifications(tiny, 2, (GPTQ(bits=4, group_size=16, act_order=True, **CALIB),), _ctx())
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    targets = list(linear_targets(tiny))
    n = sum(weight_view(m).numel() for _, m in targets)
    assert state.report["quantized_weights"] == n
    # 4 bits + an fp16 scale per 16 weights + an int32 group index per input column (act-order)
    expected = (
        sum(weight_view(m).numel() * (4 + 16 / 16 + 32 / weight_view(m).shape[0]) for _, m in targets) / n
    )
    assert state.report["bits_per_weight"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------------------
# Block walker shared by GPTQ and AWQ
# ------------------------------------------------------------------------------------------------------------


def test_block_walk_reproduces_the_forward_pass(tiny):
    ids = _windows(6, 24)
    _, resid = forward_sites(tiny, ids)
    steps = list(walk_blocks(tiny, ids, batch_size=4))
    assert len(steps) == len(resid)
    assert torch.allclose(torch.cat(steps[-1].outputs()), resid[-1], atol=1e-5)
    assert (
        all("forward" not in vars(block) for block in tiny.model.layers) if hasattr(tiny, "model") else True
    )


def _gemma3() -> nn.Module:
    """Tiny Gemma 3: sliding and global attention layers (different masks and rotary tables per layer) and
    (1 + w) RMSNorms, with non-trivial norm weights so a wrong fold would show."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval().requires_grad_(False)
    for name, module in model.named_modules():
        if name.endswith(("input_layernorm", "pre_feedforward_layernorm")):
            module.weight.data.normal_(0, 0.5)
    return model


def test_block_walk_and_smoothing_handle_per_layer_arguments_and_offset_norms():
    model = _gemma3()
    ids = _windows(4, 32)
    _, resid = forward_sites(model, ids)
    steps = list(walk_blocks(model, ids, batch_size=2))
    assert torch.allclose(torch.cat(steps[-1].outputs()), resid[-1], atol=1e-5)  # sliding and global layers
    state = apply_modifications(model, 3, (SmoothQuant(**CALIB),), _ctx())
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, state.model(ids).logits, atol=1e-4, rtol=1e-4)
    assert state.report["smooth_folded_groups"] == 2 * 3  # folded into Gemma's (1 + w) norms


def test_input_groups_follow_shared_inputs():
    llama_step = next(walk_blocks(_llama(), _windows(2, 16)))
    assert [[n for n, _ in g] for g in input_groups(llama_step)] == [
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        ["self_attn.o_proj"],
        ["mlp.gate_proj", "mlp.up_proj"],
        ["mlp.down_proj"],
    ]
    gpt2_step = next(walk_blocks(_gpt2(), _windows(2, 16)))
    assert [[n for n, _ in g] for g in input_groups(gpt2_step)] == [
        ["attn.c_attn"],
        ["attn.c_proj"],
        ["mlp.c_fc"],
        ["mlp.c_proj"],
    ]


# ------------------------------------------------------------------------------------------------------------
# bitsandbytes
# ------------------------------------------------------------------------------------------------------------


def _bnb_layers(model: nn.Module):
    import bitsandbytes as bnb

    return [
        (n, m) for n, m in model.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))
    ]


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True])
def test_bnb_4bit_layers_compute_x_times_their_dequantized_weight(tiny, quant_type, double_quant):
    import bitsandbytes as bnb

    state = apply_modifications(tiny, 2, (Bnb4bit(quant_type=quant_type, double_quant=double_quant),))
    layers = _bnb_layers(state.model)
    assert len(layers) == len(
        list(linear_targets(tiny))
    )  # GPT-2's Conv1D layers were converted, none skipped
    x = torch.randn(3, 5, layers[0][1].in_features)
    for name, layer in layers:
        x = torch.randn(3, 5, layer.in_features)
        w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)  # [out, in]
        with torch.no_grad():
            expected = x @ w.t() + (layer.bias if layer.bias is not None else 0)
            assert torch.allclose(layer(x), expected, atol=1e-5), name
        original = weight_view(dict(linear_targets(tiny))[name])
        assert (w - original).abs().max() < original.abs().max() / 4  # 4 bits: within a coarse step


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_bnb_int8_layers_are_llm_int8(tiny, threshold):
    """Each layer = per-token int8 activations (fp16 inputs) x dequantized int8 weights, with the input columns
    holding |x| >= threshold in floating point: exactly the project's own dynamic activation quantizer."""
    state = apply_modifications(tiny, 2, (BnbInt8(threshold=threshold),))
    emulate = ActivationQuantizer(bits=8, mode="dynamic", threshold=threshold)
    for name, layer in _bnb_layers(state.model):
        w = layer.weight.data.float() * layer.weight.SCB.float()[:, None] / 127  # dequantized int8 [out, in]
        x = torch.randn(4, layer.in_features) * 0.6
        with torch.no_grad():
            got = layer(x)
        x16 = x.half().float()  # LLM.int8() quantizes fp16 inputs
        expected = emulate.quantize(x16) @ w.t() + (layer.bias if layer.bias is not None else 0)
        assert torch.allclose(got, expected, atol=2e-4), (name, (got - expected).abs().max())
        if threshold:
            assert outlier_columns(x16, threshold).any()  # the case exercised the decomposition


def test_bnb_records_its_storage_cost(tiny):
    n_in = {name: weight_view(m).shape[1] for name, m in linear_targets(tiny)}
    numel = {name: weight_view(m).numel() for name, m in linear_targets(tiny)}
    total = sum(numel.values())
    int8 = apply_modifications(tiny, 2, (BnbInt8(),)).report
    assert int8["bits_per_weight"] == pytest.approx(sum(numel[k] * (8 + 32 / n_in[k]) for k in numel) / total)
    nf4 = apply_modifications(tiny, 2, (Bnb4bit(blocksize=64),)).report
    assert nf4["bits_per_weight"] == pytest.approx(4.5)
    assert nf4["weight_bytes"] < int8["weight_bytes"] < fp.model_weight_bytes(tiny)


# ------------------------------------------------------------------------------------------------------------
# Activation quantization
# ------------------------------------------------------------------------------------------------------------


def test_per_token_quantization_error_is_within_half_a_step_of_each_token():
    x = torch.randn(6, 10, 32) * torch.logspace(-2, 2, 10)[None, :, None]
    q = fake_quant_per_token(x, 8)
    step = x.abs().amax(-1, keepdim=True) / 127
    assert ((q - x).abs() <= step / 2 + 1e-7).all()


def test_dynamic_per_token_scales_survive_an_outlier_channel_that_ruins_a_static_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 128)
    x[:4, 7] = 300.0  # a few tokens with one massive channel
    normal = slice(4, None)
    static = fake_quant_per_tensor(x, 8, float(x.abs().max()))
    dynamic = fake_quant_per_token(x, 8)
    err_static = (static - x)[normal].pow(2).mean()
    err_dynamic = (dynamic - x)[normal].pow(2).mean()
    assert err_dynamic < err_static / 100
    decomposed = ActivationQuantizer(
        bits=8, mode="static", absmax=float(x[normal].abs().max()), threshold=6.0
    )
    out = decomposed.quantize(x)
    assert torch.equal(out[:, 7], x[:, 7])  # the outlier column passes in float
    assert (out - x)[normal].pow(2).mean() < err_static / 100


def test_act_quant_hooks_live_on_the_copy_only_and_static_scales_come_from_calibration(tiny):
    state = apply_modifications(tiny, 2, (ActQuant(a_mode="static", **CALIB),), _ctx())
    assert all(not m._forward_pre_hooks for m in tiny.modules())
    hooked = [m for _, m in linear_targets(state.model) if m._forward_pre_hooks]
    assert len(hooked) == len(list(linear_targets(tiny)))
    quantizers = [next(iter(m._forward_pre_hooks.values())) for m in hooked]
    assert all(q.mode == "static" and q.absmax > 0 for q in quantizers)
    p = apply_modifications(
        tiny, 2, (ActQuant(a_mode="static", a_static_stat="percentile", a_percentile=99, **CALIB),), _ctx()
    )
    assert p.report["a_static_absmax_mean"] < state.report["a_static_absmax_mean"]


def test_w8a8_dynamic_beats_static_when_activations_have_outlier_channels():
    model = _llama(outlier_scale=60.0)
    ids = _windows(4, 32, seed=7)
    kl = {
        mode: _kl(
            model,
            apply_modifications(model, 2, (ActQuant(a_bits=6, a_mode=mode, **CALIB),), _ctx()).model,
            ids,
        )
        for mode in ("static", "dynamic")
    }
    assert kl["dynamic"] < kl["static"] / 2, kl


# ------------------------------------------------------------------------------------------------------------
# SmoothQuant and AWQ
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_smoothquant_is_exact_in_float_and_folds_into_the_norms(arch):
    model = _llama(60.0) if arch == "llama" else _gpt2(60.0)
    state = apply_modifications(model, 2, (SmoothQuant(alpha=0.5, **CALIB),), _ctx())
    ids = _windows(3, 32, seed=5)
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, state.model(ids).logits, atol=1e-4, rtol=1e-4)
    # q/k/v (c_attn) and gate/up (c_fc) read a norm's output: those 2 groups per block fold, the others hook
    assert state.report["smooth_folded_groups"] == 2 * 2
    assert state.report["act_absmax_after"] < state.report["act_absmax_before"] / 5


def test_outlier_statistics_after_smoothing_match_a_measurement_on_the_smoothed_model():
    model = _llama(60.0)
    windows = _windows(8, 32)
    stats = activation_outlier_stats(model, windows, alpha=0.5)
    assert list(stats.columns) == ["layer", "module", "channel", "max_abs_before", "max_abs_after"]
    assert set(stats.module) == {
        "self_attn.q_proj,k_proj,v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj,up_proj",
        "mlp.down_proj",
    }
    assert len(stats) == 2 * (64 + 64 + 64 + 128)
    smoothed = apply_modifications(
        model, 2, (SmoothQuant(alpha=0.5, calib_samples=8, calib_len=32),), _ctx()
    ).model
    measured = collect_input_groups(smoothed, windows)
    for group in measured:
        predicted = stats[
            (stats.layer == group.block) & (stats.module == group.label)
        ].max_abs_after.to_numpy()
        assert torch.allclose(group.max_abs, torch.tensor(predicted), rtol=1e-3, atol=1e-6)
    attn_in = stats[stats.module == "self_attn.q_proj,k_proj,v_proj"]
    assert attn_in.max_abs_after.max() < attn_in.max_abs_before.max() / 5  # the outlier channels were tamed


def test_smoothing_recovers_static_w8a8_on_outlier_channels():
    model = _llama(outlier_scale=60.0)
    ids = _windows(4, 32, seed=7)
    static = (ActQuant(a_bits=6, a_mode="static", **CALIB),)
    smoothed = (SmoothQuant(alpha=0.5, **CALIB), *static)
    kl_static = _kl(model, apply_modifications(model, 2, static, _ctx()).model, ids)
    kl_smoothed = _kl(model, apply_modifications(model, 2, smoothed, _ctx()).model, ids)
    assert kl_smoothed < kl_static / 2, (kl_smoothed, kl_static)


def test_smoothquant_after_act_quant_is_refused(tiny):
    with pytest.raises(SpecError, match="before act_quant"):
        apply_modifications(tiny, 2, (ActQuant(a_mode="dynamic"), SmoothQuant(**CALIB)), _ctx())


def test_awq_search_protects_salient_channels_and_never_loses_to_rtn():
    torch.manual_seed(0)
    X = torch.randn(512, 64)
    X[:, :4] *= 25  # salient input channels
    w = torch.randn(32, 64)
    gram = X.t() @ X
    alpha, (w_eff,), errors = awq_search(
        [w], gram, X.abs().mean(0), bits=3, scheme="asym", group_size=16, grid=10
    )
    err_rtn = errors[0]  # α = 0 is RTN
    assert err_rtn == pytest.approx(
        float((X @ (quantize_grouped(w, bits=3, scheme="asym", group_size=16) - w).t()).pow(2).sum()),
        rel=1e-3,
    )
    assert alpha > 0 and min(errors) < 0.9 * err_rtn
    assert float((X @ (w_eff - w).t()).pow(2).sum()) == pytest.approx(min(errors), rel=1e-3)


def test_awq_handler_lowers_kl_against_rtn_on_outlier_channels():
    model = _llama(outlier_scale=60.0)
    ids = _windows(4, 32, seed=7)
    rtn = apply_modifications(
        model, 2, (QuantizeRTN(bits=3, scheme="asym", granularity="group", group_size=16),)
    ).model
    awq = apply_modifications(model, 2, (AWQ(bits=3, group_size=16, **CALIB),), _ctx())
    assert 0 < awq.report["awq_alpha_mean"] < 1
    assert _kl(model, awq.model, ids) < _kl(model, rtn, ids)


# ------------------------------------------------------------------------------------------------------------
# Footprint, specs, CLI
# ------------------------------------------------------------------------------------------------------------


def test_footprint_formulas():
    assert fp.bnb_int8_bits_per_weight(1024) == pytest.approx(8 + 32 / 1024)
    assert fp.bnb_4bit_bits_per_weight(64, False) == pytest.approx(4.5)
    assert fp.bnb_4bit_bits_per_weight(64, True) == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert fp.grouped_bits_per_weight(4, 1024, 256, -1, asym=False) == pytest.approx(4 + 16 / 1024)
    assert fp.grouped_bits_per_weight(4, 1024, 256, 128, asym=True) == pytest.approx(4 + 20 / 128)
    assert fp.grouped_bits_per_weight(4, 1024, 256, 128, asym=False, act_order=True) == pytest.approx(
        4 + 16 / 128 + 32 / 256
    )


def test_weight_bytes_counts_tied_embeddings_once_and_the_rest_at_16_bits():
    model = _llama()
    state = apply_modifications(model, 2, (QuantizeRTN(bits=4, granularity="channel"),))
    params = dict(model.named_parameters())  # tied lm_head / embedding appears once
    targets = {f"{n}.weight": weight_view(m) for n, m in linear_targets(model)}
    expected_bits = sum(
        p.numel() * (4 + 16 / targets[name].shape[1]) if name in targets else p.numel() * 16
        for name, p in params.items()
    )
    assert state.report["weight_bytes"] == pytest.approx(expected_bits / 8)
    assert fp.model_weight_bytes(model) == sum(p.numel() for p in params.values()) * 2


@pytest.mark.parametrize(
    "mod",
    [
        QuantizeRTN(bits=4),
        GPTQ(bits=4, group_size=16, **CALIB),
        AWQ(bits=4, group_size=16, grid=4, **CALIB),
        BnbInt8(),
        Bnb4bit(),
        ActQuant(w_bits=4, a_bits=8, a_mode="static", **CALIB),
        ActQuant(w_bits=8, a_bits=8, a_mode="dynamic", outlier_threshold=6.0),
    ],
    ids=lambda m: m.kind,
)
def test_every_quantization_scheme_records_bits_and_bytes(tiny, mod):
    report = apply_modifications(tiny, 2, (mod,), _ctx()).report
    assert 4 <= report["bits_per_weight"] <= 9
    assert 0 < report["weight_bytes"] < fp.model_weight_bytes(tiny)


@pytest.mark.parametrize(
    "kind, options, message",
    [
        ("gptq", dict(bits=1), "between 2 and 8"),
        ("gptq", dict(group_size=0), "group_size"),
        ("gptq", dict(damp=0), "damp"),
        ("bnb_4bit", dict(quant_type="int4"), "nf4"),
        ("bnb_4bit", dict(blocksize=100), "blocksize"),
        ("act_quant", dict(a_mode="weekly"), "a_mode"),
        ("smoothquant", dict(alpha=1.5), "alpha"),
        ("awq", dict(calib_samples=0), "calib_samples"),
    ],
)
def test_specs_refuse_impossible_settings(kind, options, message):
    from hemorrhage_core.specs import MODIFICATIONS

    with pytest.raises(SpecError, match=message):
        MODIFICATIONS[kind](**options)


def test_quant_kinds_run_from_the_cli(tmp_path, monkeypatch, capsys, tiny_llama_dir):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "seven", "wizards"]
    rng = random.Random(0)
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(rng.choice(words) for _ in range(6000)))
    argv = ["run", "--model", str(tiny_llama_dir), "--corpus", str(corpus), "--tokens", "256", "--window", "64",
            "--batch-size", "2", "--db", str(tmp_path / "q.duckdb"), "--device", "cpu", "--json",
            "--mod", f"smoothquant:alpha=0.5,calib_corpus={corpus},calib_samples=4,calib_len=32",
            "--mod", f"act_quant:w_bits=8,a_bits=8,a_mode=static,calib_corpus={corpus},calib_samples=4,calib_len=32"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["kind"] for m in out["spec"]["mods"]] == ["smoothquant", "act_quant"]
    assert out["metrics"]["bits_per_weight"] > 8 and out["metrics"]["weight_bytes"] > 0
    assert 0 < out["metrics"]["kl_mean"] < 0.05
    gptq = [
        *argv[:-4],
        "--mod",
        f"gptq:bits=4,group_size=16,calib_corpus={corpus},calib_samples=4,calib_len=32",
    ]
    assert main(gptq) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spec"]["mods"][0]["group_size"] == 16 and out["metrics"]["calib_tokens"] == 4 * 32
    assert main(["mods", "--json"]) == 0
    kinds = {row["kind"] for row in json.loads(capsys.readouterr().out)}
    assert kinds >= {"gptq", "bnb_int8", "bnb_4bit", "act_quant", "smoothquant", "awq"}
