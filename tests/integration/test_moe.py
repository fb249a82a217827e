"""Mixture-of-experts models: fused 3-D experts are modified like every other weight matrix, and coverage is a number.

Tiny Mixtral, Qwen3-MoE and GPT-OSS models (d=64, 2 layers, 4 experts, top-2, random weights) built from configs.
transformers 5 stores their experts as [E, out, in] parameters (GPT-OSS: [E, in, out]) that no `nn.Linear` scan
finds; these tests pin that every expert matrix is quantized or pruned on the right axis, with statistics from
the tokens routed to it, that the router is left alone unless asked for, and that a run covering less than it
claims is refused unless the spec asks for a partial scope.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import (
    GptOssConfig,
    GptOssForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from hemorrhage_core.errors import SpecError
from hemorrhage_core.footprint import uniform_bits_per_weight
from hemorrhage_core.modify import ModContext, apply_modifications
from hemorrhage_core.modify.experts import MIN_EXPERT_TOKENS
from hemorrhage_core.modify.gptq import gptq_quantize
from hemorrhage_core.modify.quantize import quantize_rtn
from hemorrhage_core.modify.sequential import calibration_stages, target_groups, walk_blocks
from hemorrhage_core.modify.taps import target_inputs
from hemorrhage_core.modify.targets import plan_targets
from hemorrhage_core.specs import (
    AWQ,
    GPTQ,
    ActQuant,
    Bnb4bit,
    ProbeSettings,
    Prune,
    QuantizeRTN,
    RunSpec,
    SmoothQuant,
)

VOCAB = 256
CALIB = dict(calib_samples=8, calib_len=32)
SHAPE = dict(
    vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def _mixtral() -> nn.Module:
    torch.manual_seed(0)
    config = MixtralConfig(**SHAPE, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2)
    return MixtralForCausalLM(config).eval().requires_grad_(False)


def _qwen3_moe() -> nn.Module:
    torch.manual_seed(0)
    config = Qwen3MoeConfig(
        **SHAPE,
        head_dim=16,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
    )
    return Qwen3MoeForCausalLM(config).eval().requires_grad_(False)


def _gpt_oss() -> nn.Module:
    torch.manual_seed(0)
    config = GptOssConfig(
        **SHAPE, head_dim=16, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2
    )
    model = GptOssForCausalLM(config).eval().requires_grad_(False)
    with torch.no_grad():  # give the router and the expert biases values whatever the init left there
        for layer in model.model.layers:
            layer.mlp.router.weight.normal_(0, 0.5)
            layer.mlp.experts.gate_up_proj_bias.normal_(0, 0.02)
            layer.mlp.experts.down_proj_bias.normal_(0, 0.02)
    return model


def _llama() -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE, intermediate_size=128, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def _ctx(seed: int = 1) -> ModContext:
    gen = torch.Generator().manual_seed(seed)
    return ModContext(
        calibration_source=lambda corpus, n, length: torch.randint(0, VOCAB, (n, length), generator=gen)
    )


def _experts(model) -> list[nn.Module]:
    return [layer.mlp.experts for layer in model.model.layers]


def _never_route_to(model, expert: int) -> None:
    """Make every layer's router skip one expert (its logit is -inf before the top-k), as a real router can."""
    for layer in model.model.layers:
        router = layer.mlp.gate

        def forward(hidden, router=router):
            hidden = hidden.reshape(-1, router.hidden_dim)
            logits = nn.functional.linear(hidden, router.weight)
            logits[:, expert] = float("-inf")
            probs = logits.float().softmax(-1)
            top, index = probs.topk(router.top_k, dim=-1)
            return logits, top / top.sum(-1, keepdim=True), index

        router.forward = forward


# ------------------------------------------------------------------------------------------------------------
# Targets and round-to-nearest.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["channel", "group", "tensor"])
def test_rtn_quantizes_every_expert_matrix_and_excludes_the_router(granularity):
    base = _mixtral()
    mod = QuantizeRTN(bits=4, granularity=granularity, group_size=16)
    state = apply_modifications(base, 2, (mod,), _ctx())
    report = state.report
    assert report["coverage"] == 1.0
    assert report["skipped_modules"] == 2
    assert set(state.skipped) == {"model.layers.0.mlp.gate", "model.layers.1.mlp.gate"}
    assert all("include_router" in why for why in state.skipped.values())
    for before, after in zip(_experts(base), _experts(state.model), strict=True):
        for param in ("gate_up_proj", "down_proj"):
            w0, w1 = getattr(before, param), getattr(after, param)
            for e in range(w0.shape[0]):
                expected = quantize_rtn(w0[e], bits=4, scheme="sym", granularity=granularity, group_size=16)
                assert not torch.equal(w1[e], w0[e])
                assert torch.equal(w1[e], expected), f"{param}[{e}] is not RTN of its own [out, in] matrix"
                # On a 4-bit grid per expert matrix, output row, or row and group of 16 inputs.
                cells = {"tensor": w1[e].reshape(1, -1), "channel": w1[e], "group": w1[e].reshape(-1, 16)}
                assert all(c.unique().numel() <= 16 for c in cells[granularity])
    for before, after in zip(base.model.layers, state.model.model.layers, strict=True):
        assert torch.equal(before.mlp.gate.weight, after.mlp.gate.weight)


def test_bits_per_weight_and_weight_bytes_count_the_experts():
    model = _mixtral()
    mod = QuantizeRTN(bits=4, granularity="group", group_size=32)
    state = apply_modifications(model, 2, (mod,), _ctx())
    shapes = []  # (out, in) of every matrix quantized: 4 attention projections + 4 experts x 2 per layer
    for layer in model.model.layers:
        shapes += [
            tuple(getattr(layer.self_attn, p).weight.shape) for p in ("q_proj", "k_proj", "v_proj", "o_proj")
        ]
        shapes += [tuple(layer.mlp.experts.gate_up_proj.shape[1:])] * 4 + [
            tuple(layer.mlp.experts.down_proj.shape[1:])
        ] * 4
    numel = sum(o * i for o, i in shapes)
    bits = sum(
        o * i * uniform_bits_per_weight(4, i, o, granularity="group", group_size=32) for o, i in shapes
    )
    assert state.report["quantized_weights"] == numel
    assert state.report["bits_per_weight"] == pytest.approx(bits / numel)
    other = sum(p.numel() for p in model.parameters()) - numel
    assert state.report["weight_bytes"] == pytest.approx((bits + 16 * other) / 8)


def test_gpt_oss_transposed_experts_are_quantized_along_their_input_axis():
    base = _gpt_oss()
    mod = QuantizeRTN(bits=4, granularity="group", group_size=16)
    state = apply_modifications(base, 2, (mod,), _ctx())
    assert state.report["coverage"] == 1.0
    assert set(state.skipped) == {"model.layers.0.mlp.router", "model.layers.1.mlp.router"}
    for before, after in zip(_experts(base), _experts(state.model), strict=True):
        for param in ("gate_up_proj", "down_proj"):
            stored0, stored1 = getattr(before, param), getattr(after, param)  # [E, in, out]
            for e in range(stored0.shape[0]):
                as_linear = stored0[e].t()  # the [out, in] weight a Linear would hold
                expected = quantize_rtn(
                    as_linear, bits=4, scheme="sym", granularity="group", group_size=16
                ).t()
                wrong_axis = quantize_rtn(
                    stored0[e], bits=4, scheme="sym", granularity="group", group_size=16
                )
                assert torch.equal(stored1[e], expected)
                assert not torch.equal(stored1[e], wrong_axis)
        assert torch.equal(
            before.gate_up_proj_bias, after.gate_up_proj_bias
        )  # biases are not weight matrices


def test_including_the_router_quantizes_it_too():
    base = _mixtral()
    state = apply_modifications(base, 2, (QuantizeRTN(bits=4, include_router=True),), _ctx())
    assert state.report["coverage"] == 1.0 and state.report["skipped_modules"] == 0 and not state.skipped
    for before, after in zip(base.model.layers, state.model.model.layers, strict=True):
        w0, w1 = before.mlp.gate.weight, after.mlp.gate.weight
        assert torch.equal(w1, quantize_rtn(w0, bits=4, scheme="sym", granularity="channel"))
        assert not torch.equal(w0, w1)


def test_scope_options_keep_existing_cache_keys_and_show_in_labels():
    assert "include_router" not in QuantizeRTN(bits=4).to_dict() and "partial" not in GPTQ().to_dict()
    assert QuantizeRTN(bits=4, include_router=True).to_dict()["include_router"] is True
    assert (
        QuantizeRTN(bits=4, partial=True, include_router=True).label() == "RTN w4 sym channel +router partial"
    )
    assert Prune(sparsity=0.5).label() == "magnitude 50%"


# ------------------------------------------------------------------------------------------------------------
# Calibrated methods: per-expert statistics from the routed tokens.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [_mixtral, _gpt_oss], ids=["mixtral", "gpt-oss"])
def test_expert_inputs_are_what_the_experts_kernel_multiplies(build):
    """Rebuild each experts module's output from the tapped per-expert inputs: exact only if they are right."""
    model = build()
    experts = _experts(model)[0]
    targets = [t for t in plan_targets(model, QuantizeRTN()).targets if t.module is experts]
    seen, calls, sequences = {}, {}, set()

    def tap(target, x, n_sequences):
        seen[(target.param, target.expert)] = x
        sequences.add(n_sequences)

    experts.register_forward_hook(lambda _m, args, out: calls.update(args=args, out=out))
    with target_inputs(targets, tap):
        model(torch.randint(0, VOCAB, (2, 12)))
    assert sequences == {2}  # the batch's sequences, read off the MoE layer's [B, T, d] input
    hidden, index, weights = calls["args"]
    rebuilt = torch.zeros_like(hidden)
    for e in range(experts.num_experts):
        token, slot = torch.where(index == e)
        assert torch.equal(seen[("gate_up_proj", e)], hidden[token])
        w = experts.down_proj[e]
        y = seen[("down_proj", e)] @ w if experts.is_transposed else seen[("down_proj", e)] @ w.t()
        if experts.has_bias:
            y = y + experts.down_proj_bias[e]
        rebuilt.index_add_(0, token, y * weights[token, slot, None])
    assert torch.allclose(rebuilt, calls["out"], atol=1e-5)


def test_wanda_prunes_half_of_every_expert_matrix_row_by_row():
    model = _qwen3_moe()
    state = apply_modifications(model, 2, (Prune(sparsity=0.5, method="wanda", **CALIB),), _ctx())
    assert state.report["coverage"] == 1.0
    assert state.report["achieved_sparsity"] == 0.5
    assert state.report["experts_pooled"] == 0 and state.report["expert_rows_min"] >= MIN_EXPERT_TOKENS
    for before, after in zip(_experts(model), _experts(state.model), strict=True):
        for param in ("gate_up_proj", "down_proj"):
            w0, w1 = getattr(before, param), getattr(after, param)
            for e in range(w0.shape[0]):
                zeros = (w1[e] == 0).sum(dim=1)
                assert (zeros == w0.shape[2] // 2).all(), f"{param}[{e}]"
    # Wanda, not magnitude: per-expert activation norms keep some small weights magnitude would drop.
    magnitude = apply_modifications(model, 2, (Prune(sparsity=0.5),), _ctx()).model
    assert any(
        not torch.equal(a.down_proj != 0, b.down_proj != 0)
        for a, b in zip(_experts(state.model), _experts(magnitude), strict=True)
    )


def test_gptq_uses_each_experts_routed_tokens_and_pools_a_starved_expert():
    base = _mixtral()
    _never_route_to(base, 3)
    mod = GPTQ(bits=4, group_size=-1, true_sequential=False, **CALIB)
    state = apply_modifications(base, 2, (mod,), _ctx(seed=5))
    report = state.report
    assert report["coverage"] == 1.0
    assert report["experts_pooled"] == 2 * 2  # gate_up_proj[3] and down_proj[3] in both layers
    assert report["expert_rows_min"] == 0

    # Block 0's experts were calibrated on the unmodified block 0 (true_sequential=False): rebuild expert 0's
    # Hessian from the tokens the router sends it and quantize it alone.
    windows = _ctx(seed=5).calibration_windows("news", CALIB["calib_samples"], CALIB["calib_len"])
    experts0 = base.model.layers[0].mlp.experts
    captured = []
    handle = experts0.register_forward_pre_hook(lambda _m, args: captured.append(args[:2]))
    with torch.no_grad():
        base(windows)
    handle.remove()
    hidden, index = captured[0]
    x = hidden[(index == 0).any(-1)]
    H = 2 / x.shape[0] * x.t() @ x
    expected = gptq_quantize(experts0.gate_up_proj[0], H, bits=4, group_size=-1)
    got = state.model.model.layers[0].mlp.experts.gate_up_proj[0]
    assert (got == expected).float().mean() > 0.99  # the same up to rounding ties of float sums
    pooled_only = gptq_quantize(experts0.gate_up_proj[0], 2 / hidden.shape[0] * hidden.t() @ hidden, bits=4)
    assert (got == pooled_only).float().mean() < 0.95  # and not from every token's statistics
    # The starved expert is still quantized, from the pooled statistics of its layer.
    starved0, starved1 = experts0.gate_up_proj[3], state.model.model.layers[0].mlp.experts.gate_up_proj[3]
    assert not torch.equal(starved0, starved1)
    assert all(row.unique().numel() <= 16 for row in starved1)


def test_experts_of_one_parameter_share_a_calibration_stage_within_a_memory_cap():
    model = _mixtral()
    step = next(walk_blocks(model, torch.randint(0, VOCAB, (2, 16))))
    targets = [t for t in plan_targets(model, GPTQ()).targets if t.block == 0]
    groups = target_groups(step, targets)
    names = [[t.name.removeprefix("model.layers.0.") for t in g] for g in groups]
    assert names[:2] == [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"]]
    assert names[2:] == [[f"mlp.experts.gate_up_proj.{e}"] for e in range(4)] + [
        [f"mlp.experts.down_proj.{e}"] for e in range(4)
    ]
    assert [len(s) for s in calibration_stages(groups)] == [1, 1, 4, 4]
    two_hessians = 2 * 4 * 64**2  # gate_up_proj reads d = 64 inputs
    assert [len(s) for s in calibration_stages(groups, max_bytes=two_hessians)] == [1, 1, 2, 2, 4]


@pytest.mark.parametrize("method", ["sparsegpt", "magnitude"])
def test_other_pruners_cover_the_experts(method):
    state = apply_modifications(_mixtral(), 2, (Prune(sparsity=0.5, method=method, **CALIB),), _ctx())
    assert state.report["coverage"] == 1.0 and state.report["achieved_sparsity"] == pytest.approx(0.5)


def test_awq_searches_each_expert_matrix():
    base = _mixtral()
    state = apply_modifications(base, 2, (AWQ(bits=4, group_size=32, grid=4, **CALIB),), _ctx())
    assert state.report["coverage"] == 1.0
    for before, after in zip(_experts(base), _experts(state.model), strict=True):
        assert all(not torch.equal(before.down_proj[e], after.down_proj[e]) for e in range(4))


# ------------------------------------------------------------------------------------------------------------
# Coverage: refusals and partial scopes.
# ------------------------------------------------------------------------------------------------------------


def test_a_matrix_no_target_describes_refuses_the_run_unless_partial():
    model = _llama()
    model.model.layers[0].mlp.register_parameter(
        "extra", nn.Parameter(torch.randn(16, 64), requires_grad=False)
    )
    with pytest.raises(SpecError, match=r"model\.layers\.0\.mlp: LlamaMLP\.extra \(16, 64\).*partial=True"):
        apply_modifications(model, 2, (QuantizeRTN(bits=4),), _ctx())
    state = apply_modifications(model, 2, (QuantizeRTN(bits=4, partial=True),), _ctx())
    block = sum(p.numel() for layer in model.model.layers for p in layer.parameters() if p.dim() == 2)
    assert state.report["coverage"] == pytest.approx(1 - 16 * 64 / block)
    assert "LlamaMLP.extra" in state.skipped["model.layers.0.mlp"]


def test_bitsandbytes_refuses_fused_experts_unless_partial():
    model = _mixtral()
    with pytest.raises(SpecError, match="no layer for fused 3-D experts"):
        apply_modifications(model, 2, (Bnb4bit(),), _ctx())
    state = apply_modifications(model, 2, (Bnb4bit(partial=True),), _ctx())
    attention = sum(p.numel() for n, p in model.named_parameters() if "self_attn" in n and p.dim() == 2)
    experts = sum(p.numel() for n, p in model.named_parameters() if "experts" in n)
    assert state.report["coverage"] == pytest.approx(attention / (attention + experts))
    assert state.report["skipped_modules"] == 4  # two routers excluded, two experts modules unhandled


@pytest.mark.parametrize("mod", [SmoothQuant(**CALIB), ActQuant(**CALIB)], ids=["smoothquant", "act_quant"])
def test_activation_methods_refuse_fused_experts(mod):
    with pytest.raises(SpecError, match="experts"):
        apply_modifications(_mixtral(), 2, (mod,), _ctx())


# ------------------------------------------------------------------------------------------------------------
# Dense models and the stored metric.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mod",
    [QuantizeRTN(bits=4), Prune(sparsity=0.5, method="wanda", **CALIB), GPTQ(bits=4, **CALIB)],
    ids=["rtn", "wanda", "gptq"],
)
def test_a_dense_model_is_fully_covered_with_nothing_skipped(mod):
    state = apply_modifications(_llama(), 2, (mod,), _ctx())
    assert state.report["coverage"] == 1.0 and state.report["skipped_modules"] == 0


def test_coverage_is_a_stored_metric_and_in_json(runner, tiny_llama_dir, word_text):
    text = word_text(["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"], 3000)
    probe = ProbeSettings(
        corpus=text, tokens=128, window=64, batch_size=2, attn_probes=1, attn_len=16, top_k=16
    )
    spec = RunSpec(model=str(tiny_llama_dir), mods=(QuantizeRTN(bits=4),), probe=probe)
    result = runner.run(spec)
    assert result.metrics["coverage"] == 1.0
    assert runner.lookup(spec).metrics["coverage"] == 1.0  # read back from DuckDB
    assert json.loads(json.dumps(result.to_json_dict()))["metrics"]["coverage"] == 1.0


def _mamba() -> nn.Module:
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, state_size=8)
    return MambaForCausalLM(config).eval().requires_grad_(False)


def test_state_space_parameters_are_a_documented_exclusion_and_unreached_layers_are_refused():
    model = _mamba()
    state = apply_modifications(model, 2, (QuantizeRTN(bits=4),), _ctx())
    assert state.report["coverage"] == 1.0
    plan = plan_targets(model, QuantizeRTN(bits=4))
    assert any("state-space" in why for why in plan.excluded.values())  # A_log and the depthwise conv1d
    # Mamba's mixer reads dt_proj's weight without calling the module: no calibration input reaches it, so
    # Wanda cannot score it and says so instead of pruning it on empty statistics.
    with pytest.raises(SpecError, match="dt_proj.*no calibration token reached it"):
        apply_modifications(model, 2, (Prune(method="wanda", sparsity=0.5, **CALIB),), _ctx())
    partial = apply_modifications(
        model, 2, (Prune(method="wanda", sparsity=0.5, partial=True, **CALIB),), _ctx()
    )
    assert (
        0.9 < partial.report["coverage"] < 1.0 and partial.report["skipped_modules"] >= 2
    )  # dt_proj of both
