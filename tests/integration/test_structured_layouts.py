"""Structured pruning and depth changes on every attention / MLP layout, on tiny random models built in memory.

The defining property, checked for each layout: removing a head computes exactly (atol 1e-5) what the unpruned
model computes with that head's columns of the output projection zeroed; removing an MLP channel, what it
computes with that channel's column of the down projection zeroed (per expert for fused MoE experts). The
reference twins are built here from module paths written out per architecture, independently of the layout
tables under test. Depth changes must give bit-identical identity blocks, the expected layer_map, and a config
that still describes the model (a fresh model built from it loads the state dict and computes the same).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
import torch
import transformers as T
from torch import nn

from hemorrhage_core.errors import SpecError
from hemorrhage_core.modify import ModContext, apply_modifications
from hemorrhage_core.modify.targets import weight_view
from hemorrhage_core.specs import PruneBlocks, PruneChannels, PruneHeads
from hemorrhage_core.specs.depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers
from hemorrhage_core.structure import find_blocks

VOCAB = 128
COMMON = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4)


@dataclass(frozen=True)
class Arch:
    config: type
    model: type
    kwargs: dict
    attn: str  # the attention module inside a block
    out: str  # its output projection (the columns a head writes)
    down: str  # the MLP's down projection inside a block ("...experts" for fused experts)
    counts: dict = field(default_factory=dict)  # attention attribute -> "heads" | "kv" | "groups" | "q_width"
    heads: int = 4
    kv: int = 4


A = {
    "llama": Arch(T.LlamaConfig, T.LlamaForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2),
                  "self_attn", "o_proj", "mlp.down_proj", {"num_key_value_groups": "groups"}, kv=2),
    "mistral": Arch(T.MistralConfig, T.MistralForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2),
                    "self_attn", "o_proj", "mlp.down_proj", {"num_key_value_groups": "groups"}, kv=2),
    "qwen2": Arch(T.Qwen2Config, T.Qwen2ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2),
                  "self_attn", "o_proj", "mlp.down_proj", {"num_key_value_groups": "groups"}, kv=2),
    "qwen3": Arch(T.Qwen3Config, T.Qwen3ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                  head_dim=16), "self_attn", "o_proj", "mlp.down_proj", {"num_key_value_groups": "groups"}, kv=2),
    "opt": Arch(T.OPTConfig, T.OPTForCausalLM, dict(COMMON, ffn_dim=96, word_embed_proj_dim=64),
                "self_attn", "out_proj", "fc2", {"num_heads": "heads"}),
    "phi": Arch(T.PhiConfig, T.PhiForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                qk_layernorm=True), "self_attn", "dense", "mlp.fc2", {"num_key_value_groups": "groups"}, kv=2),
    "biogpt": Arch(T.BioGptConfig, T.BioGptForCausalLM, dict(COMMON, intermediate_size=96),
                   "self_attn", "out_proj", "fc2", {"num_heads": "heads"}),
    "xglm": Arch(T.XGLMConfig, T.XGLMForCausalLM, dict(d_model=64, ffn_dim=96, num_layers=3, attention_heads=4),
                 "self_attn", "out_proj", "fc2", {"num_heads": "heads", "embed_dim": "q_width"}),
    "gptj": Arch(T.GPTJConfig, T.GPTJForCausalLM, dict(n_embd=64, n_inner=96, n_layer=3, n_head=4, rotary_dim=8),
                 "attn", "out_proj", "mlp.fc_out", {"num_attention_heads": "heads"}),
    "codegen": Arch(T.CodeGenConfig, T.CodeGenForCausalLM, dict(n_embd=64, n_inner=96, n_layer=3, n_head=4,
                    rotary_dim=8), "attn", "out_proj", "mlp.fc_out", {"num_attention_heads": "heads",
                    "embed_dim": "q_width"}),
    "gpt_neox": Arch(T.GPTNeoXConfig, T.GPTNeoXForCausalLM, dict(COMMON, intermediate_size=96),
                     "attention", "dense", "mlp.dense_4h_to_h"),
    "bloom": Arch(T.BloomConfig, T.BloomForCausalLM, dict(hidden_size=64, n_layer=3, n_head=4),
                  "self_attention", "dense", "mlp.dense_4h_to_h", {"num_heads": "heads"}),
    "falcon": Arch(T.FalconConfig, T.FalconForCausalLM, dict(COMMON, multi_query=False, alibi=False),
                   "self_attention", "dense", "mlp.dense_4h_to_h", {"num_heads": "heads", "num_kv_heads": "kv"}),
    "falcon_alibi": Arch(T.FalconConfig, T.FalconForCausalLM, dict(COMMON, multi_query=False, alibi=True),
                         "self_attention", "dense", "mlp.dense_4h_to_h", {"num_heads": "heads"}),
    "falcon_mqa": Arch(T.FalconConfig, T.FalconForCausalLM, dict(COMMON, multi_query=True),
                       "self_attention", "dense", "mlp.dense_4h_to_h", {"num_heads": "heads", "num_kv_heads": "kv"},
                       kv=1),
    "falcon_gqa": Arch(T.FalconConfig, T.FalconForCausalLM, dict(COMMON, new_decoder_architecture=True,
                       num_kv_heads=2), "self_attention", "dense", "mlp.dense_4h_to_h",
                       {"num_heads": "heads", "num_kv_heads": "kv"}, kv=2),
    "phi3": Arch(T.Phi3Config, T.Phi3ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                 pad_token_id=0), "self_attn", "o_proj", "mlp.down_proj",
                 {"num_key_value_heads": "kv", "num_key_value_groups": "groups"}, kv=2),
    "gpt2": Arch(T.GPT2Config, T.GPT2LMHeadModel, dict(n_embd=64, n_layer=3, n_head=4),
                 "attn", "c_proj", "mlp.c_proj", {"num_heads": "heads", "split_size": "q_width"}),
    "gpt_bigcode_mqa": Arch(T.GPTBigCodeConfig, T.GPTBigCodeForCausalLM, dict(n_embd=64, n_layer=3, n_head=4,
                            multi_query=True), "attn", "c_proj", "mlp.c_proj",
                            {"num_heads": "heads", "num_key_value_groups": "groups", "embed_dim": "q_width"}, kv=1),
    "gpt_bigcode_mha": Arch(T.GPTBigCodeConfig, T.GPTBigCodeForCausalLM, dict(n_embd=64, n_layer=3, n_head=4,
                            multi_query=False), "attn", "c_proj", "mlp.c_proj",
                            {"num_heads": "heads", "kv_heads": "kv", "embed_dim": "q_width"}),
    "olmo2": Arch(T.Olmo2Config, T.Olmo2ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2),
                  "self_attn", "o_proj", "mlp.down_proj", {"num_key_value_groups": "groups"}, kv=2),
    "olmo3": Arch(T.Olmo3Config, T.Olmo3ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                  sliding_window=4), "self_attn", "o_proj", "mlp.down_proj", {"num_key_value_groups": "groups"},
                  kv=2),
    "gemma3": Arch(T.Gemma3TextConfig, T.Gemma3ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                   head_dim=16, sliding_window=4), "self_attn", "o_proj", "mlp.down_proj",
                   {"num_key_value_groups": "groups"}, kv=2),
    "smollm3": Arch(T.SmolLM3Config, T.SmolLM3ForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                    no_rope_layer_interval=2, pad_token_id=0), "self_attn", "o_proj", "mlp.down_proj",
                    {"num_key_value_groups": "groups"}, kv=2),  # no_rope_layers [1, 0, 1]
    "stablelm": Arch(T.StableLmConfig, T.StableLmForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                     qk_layernorm=True), "self_attn", "o_proj", "mlp.down_proj",
                     {"num_heads": "heads", "num_key_value_heads": "kv", "num_key_value_groups": "groups"}, kv=2),
    "cohere": Arch(T.CohereConfig, T.CohereForCausalLM, dict(COMMON, intermediate_size=96, num_key_value_heads=2,
                   use_qk_norm=True, pad_token_id=0), "self_attn", "o_proj", "mlp.down_proj",
                   {"num_key_value_groups": "groups"}, kv=2),  # q_norm weight [heads, head_dim]
    "gpt_oss": Arch(T.GptOssConfig, T.GptOssForCausalLM, dict(COMMON, num_hidden_layers=2, intermediate_size=32,
                    num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=4),
                    "self_attn", "o_proj", "mlp.experts", {"num_key_value_groups": "groups"}, kv=2),
    "mixtral": Arch(T.MixtralConfig, T.MixtralForCausalLM, dict(COMMON, num_hidden_layers=2, intermediate_size=32,
                    num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
                    "self_attn", "o_proj", "mlp.experts", {"num_key_value_groups": "groups"}, kv=2),
}  # fmt: skip
GQA = sorted(name for name, a in A.items() if 1 < a.kv < a.heads)


def build(name: str, seed: int = 0, **overrides) -> nn.Module:
    arch = A[name]
    torch.manual_seed(seed)
    config = arch.config(vocab_size=VOCAB, **{**arch.kwargs, **overrides})
    config._attn_implementation = "eager"  # attention maps can be read; the KV cache path is the same
    return arch.model(config).eval().requires_grad_(False)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # 64-wide matrices gain nothing from intra-op threads; on a loaded machine the threads only contend (the
    # module ran ~7x slower with torch's default thread count on 2 shared cores).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ids():
    torch.manual_seed(1)
    return torch.randint(0, VOCAB, (2, 11))


def _ctx():
    generator = torch.Generator().manual_seed(2)
    return ModContext(
        calibration_source=lambda corpus, n, length: torch.randint(0, VOCAB, (n, length), generator=generator)
    )


def _apply(model, *mods):
    return apply_modifications(model, len(find_blocks(model)), mods, _ctx())


def _calibrated(**kw):
    return dict(calib_samples=2, calib_len=16, **kw)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


# ---------------------------------------------------------------------------------------------------------------
# Heads.
# ---------------------------------------------------------------------------------------------------------------


def _silenced(name: str, model: nn.Module, head_map: dict[int, list[int]]) -> nn.Module:
    """The unpruned model with the output-projection columns of every removed head zeroed."""
    arch, twin = A[name], copy.deepcopy(model)
    for layer, kept in head_map.items():
        attn = find_blocks(twin)[layer].get_submodule(arch.attn)
        w = weight_view(getattr(attn, arch.out))
        hd = w.shape[1] // arch.heads
        for h in set(range(arch.heads)) - set(kept):
            w[:, h * hd : (h + 1) * hd] = 0
    return twin


def _check_heads(name, model, state, ids, heads: int, kv: int):
    arch = A[name]
    assert state.head_map and all(len(kept) == heads for kept in state.head_map.values())
    assert torch.allclose(
        _logits(state.model, ids), _logits(_silenced(name, model, state.head_map), ids), atol=1e-5
    )
    values = {"heads": heads, "kv": kv, "groups": heads // kv, "q_width": heads * 64 // arch.heads}
    for block in find_blocks(state.model):
        attn = block.get_submodule(arch.attn)
        for attr, what in arch.counts.items():
            assert getattr(attn, attr) == values[what], (attr, getattr(attn, attr))
    with torch.no_grad():
        maps = state.model(ids, output_attentions=True).attentions
    assert all(a.shape[1] == heads for a in maps), "every layer's attention maps have the kept heads"
    state.model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)  # the KV cache path runs too


@pytest.mark.parametrize("name", sorted(A))
def test_removing_a_query_head_equals_zeroing_its_output_columns(name, ids):
    model, arch = build(name), A[name]
    state = _apply(model, PruneHeads(fraction=0.25))  # one head of four, or one per KV group of two
    heads = arch.heads - (arch.heads // arch.kv if arch.kv > 1 else 1)
    kv = arch.kv if arch.kv < arch.heads else heads
    _check_heads(name, model, state, ids, heads, kv)


@pytest.mark.parametrize("name", GQA)
def test_removing_a_kv_group_equals_zeroing_its_query_heads(name, ids):
    model, arch = build(name), A[name]
    state = _apply(model, PruneHeads(fraction=0.5, unit="kv", importance="taylor", **_calibrated()))
    _check_heads(name, model, state, ids, arch.heads // 2, arch.kv // 2)
    assert all(len({h // 2 for h in kept}) == 1 for kept in state.head_map.values()), "one whole group stays"


@pytest.mark.parametrize("name", ["gpt_neox", "bloom", "falcon_gqa", "phi3", "codegen", "olmo2", "gpt_oss"])
@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_fused_and_normed_layouts_score_with_calibrated_importance(name, importance, ids):
    model, arch = build(name), A[name]
    state = _apply(model, PruneHeads(fraction=0.5, importance=importance, **_calibrated()))
    heads = arch.heads // 2
    _check_heads(name, model, state, ids, heads, arch.kv if arch.kv < arch.heads else heads)


@pytest.mark.parametrize("name, left", [("olmo2", 1), ("codegen", 2), ("bloom", 2)])
def test_pruning_twice_composes_head_maps_and_stays_exact(name, left, ids):
    # A norm-selected projection (OLMo 2: 4/2 -> 2/2 -> 1/1), re-laid mp_num chunks, ALiBi rows (4 -> 3 -> 2).
    model = build(name)
    state = _apply(model, PruneHeads(fraction=0.25), PruneHeads(fraction=0.34))
    assert all(len(kept) == left for kept in state.head_map.values())
    silenced = _silenced(name, model, state.head_map)
    assert torch.allclose(_logits(state.model, ids), _logits(silenced, ids), atol=1e-5)


@pytest.mark.parametrize("name", ["phi3", "bloom", "olmo2", "codegen", "stablelm"])
def test_pruned_attention_survives_block_copies(name, ids):
    # What pruning leaves on the module (a config view, ALiBi hooks, norm selections, re-laid chunks, norm lists)
    # is deep-copied with the block: identity copies stay exact, duplicates run.
    model = build(name)
    pruned = _apply(model, PruneHeads(fraction=0.25))
    expanded = _apply(model, PruneHeads(fraction=0.25), InsertIdentity(after="0+1"))
    assert expanded.head_map == pruned.head_map
    assert torch.equal(_logits(expanded.model, ids), _logits(pruned.model, ids))
    duplicated = _apply(model, PruneHeads(fraction=0.25), DuplicateLayers(start=0, end=2))
    assert duplicated.layer_map == [0, 1, 4]
    duplicated.model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)


def test_olmo2_keeps_query_rows_for_its_full_width_norm(ids):
    # OLMo 2 normalises q over all heads together: slicing q_proj would change the kept heads' values.
    state = _apply(build("olmo2"), PruneHeads(fraction=0.25))
    attn = state.model.model.layers[0].self_attn
    assert attn.q_proj.out_features == 64 and attn.o_proj.in_features == 32
    assert attn.q_norm.keep.numel() == 32 and attn.k_proj.out_features == 32


def test_gpt_oss_sinks_and_alibi_follow_their_heads():
    oss = _apply(build("gpt_oss"), PruneHeads(fraction=0.25))
    assert all(b.self_attn.sinks.shape == (2,) for b in oss.model.model.layers)
    bloom = _apply(build("bloom"), PruneHeads(fraction=0.25))
    hooks = [h for b in bloom.model.transformer.h for h in b.self_attention._forward_pre_hooks.values()]
    assert [h.heads.tolist() for h in hooks] == list(bloom.head_map.values()), (
        "each layer keeps its heads' slopes"
    )


def test_attention_layouts_that_cannot_be_pruned_are_refused_with_the_layout_named():
    torch.manual_seed(0)
    mla = T.DeepseekV3ForCausalLM(T.DeepseekV3Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, n_group=1,
        topk_group=1, first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=16)).eval()  # fmt: skip
    with pytest.raises(SpecError, match=r"DeepseekV3Attention\) has no known head layout .*kv_a_proj_with_mqa.*"
                       r"supported layouts: q_proj/k_proj/v_proj \+ o_proj"):  # fmt: skip
        _apply(mla, PruneHeads(fraction=0.25))
    gated = build("llama")
    for block in gated.model.layers:
        block.self_attn.head_gate = nn.Parameter(torch.ones(4))  # a per-head parameter nobody knows about
    with pytest.raises(SpecError, match="cannot place: head_gate"):
        _apply(gated, PruneHeads(fraction=0.25))
    with pytest.raises(SpecError, match="removes all 1 KV groups"):
        _apply(build("falcon_mqa"), PruneHeads(fraction=0.5, unit="kv"))
    odd = build(
        "codegen", n_embd=24, rotary_dim=4
    )  # head size 6: 3 heads are 18 wide, not a multiple of mp_num=4
    with pytest.raises(SpecError, match="mp_num=4"):
        _apply(odd, PruneHeads(fraction=0.25))


# ---------------------------------------------------------------------------------------------------------------
# MLP channels.
# ---------------------------------------------------------------------------------------------------------------


def _gone_columns(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which input columns of `before` [out, in] are missing from `after` (random weights: columns are unique)."""
    kept = {int(((before - col[:, None]) == 0).all(0).nonzero()[0]) for col in after.T}
    return sorted(set(range(before.shape[1])) - kept)


def _expert_down(experts: nn.Module) -> torch.Tensor:
    """[E, d, I] view of fused experts' down projection (GPT-OSS stores it transposed)."""
    return experts.down_proj.data.transpose(1, 2) if experts.is_transposed else experts.down_proj.data


def _zero_gone_channels(model: nn.Module, pruned: nn.Module, path: str) -> nn.Module:
    twin = copy.deepcopy(model)
    for before, after, target in zip(find_blocks(model), find_blocks(pruned), find_blocks(twin), strict=True):
        m0, m1, mt = (b.get_submodule(path) for b in (before, after, target))
        if isinstance(m0, nn.Module) and hasattr(m0, "weight"):
            weight_view(mt)[:, _gone_columns(weight_view(m0), weight_view(m1))] = 0
        else:
            for e, (d0, d1) in enumerate(zip(_expert_down(m0), _expert_down(m1), strict=True)):
                gone = _gone_columns(d0, d1)
                assert len(gone) == d0.shape[1] // 4, "every expert loses a quarter of its channels"
                _expert_down(mt)[e][:, gone] = 0
    return twin


@pytest.mark.parametrize("name", sorted(A))
def test_removing_mlp_channels_equals_zeroing_their_down_columns(name, ids):
    model = build(name)
    state = _apply(model, PruneChannels(fraction=0.25))
    twin = _zero_gone_channels(model, state.model, A[name].down)
    assert torch.allclose(_logits(state.model, ids), _logits(twin, ids), atol=1e-5)
    assert state.report["params_after"] < state.report["params_before"]
    state.model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)


def test_phi3_fused_gate_up_loses_the_same_channel_in_both_halves():
    model = build("phi3")
    state = _apply(model, PruneChannels(fraction=0.25))
    before, after = model.model.layers[0].mlp, state.model.model.layers[0].mlp
    assert after.gate_up_proj.out_features == 2 * after.down_proj.in_features == 144
    gone = _gone_columns(weight_view(before.down_proj), weight_view(after.down_proj))
    rows = weight_view(before.gate_up_proj)
    kept_rows = [r for r in range(192) if r % 96 not in gone]
    assert torch.equal(weight_view(after.gate_up_proj), rows[kept_rows])


def _qwen2_moe(**kw):
    torch.manual_seed(0)
    config = T.Qwen2MoeConfig(
        vocab_size=VOCAB,
        **COMMON,
        intermediate_size=96,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        num_key_value_heads=2,
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=2,
        **kw,
    )  # fmt: skip  (block 1 is MoE)
    return T.Qwen2MoeForCausalLM(config).eval().requires_grad_(False)


def test_qwen2_moe_prunes_each_expert_and_the_shared_expert(ids):
    model = _qwen2_moe()
    state = _apply(model, PruneChannels(fraction=0.25, importance="taylor", **_calibrated()))
    moe = state.model.model.layers[1].mlp
    assert moe.experts.down_proj.shape == (4, 64, 24) and moe.shared_expert.down_proj.in_features == 36
    assert state.model.model.layers[0].mlp.down_proj.in_features == 72
    twin = copy.deepcopy(model)
    for layer, paths in (
        (0, ["mlp.down_proj"]),
        (1, ["mlp.shared_expert.down_proj", "mlp.experts"]),
        (2, ["mlp.down_proj"]),
    ):
        for path in paths:
            m0, m1, mt = (mm.model.layers[layer].get_submodule(path) for mm in (model, state.model, twin))
            if path.endswith("experts"):
                for e in range(4):
                    mt.down_proj.data[e][:, _gone_columns(m0.down_proj.data[e], m1.down_proj.data[e])] = 0
            else:
                weight_view(mt)[:, _gone_columns(weight_view(m0), weight_view(m1))] = 0
    assert torch.allclose(_logits(state.model, ids), _logits(twin, ids), atol=1e-5)


@pytest.mark.parametrize("name", ["mixtral", "gpt_oss"])
@pytest.mark.parametrize("importance", ["activation", "taylor"])
def test_expert_channels_score_with_routed_inputs_and_gradients(name, importance, ids):
    model = build(name)
    state = _apply(model, PruneChannels(fraction=0.25, importance=importance, **_calibrated()))
    twin = _zero_gone_channels(model, state.model, A[name].down)
    assert torch.allclose(_logits(state.model, ids), _logits(twin, ids), atol=1e-5)
    by_magnitude = _apply(model, PruneChannels(fraction=0.25)).model
    assert not torch.equal(
        by_magnitude.model.layers[0].mlp.experts.down_proj, state.model.model.layers[0].mlp.experts.down_proj
    ), "the calibrated importance ranks channels differently from magnitude"


def test_an_unknown_mlp_layout_is_refused_with_the_supported_ones_listed():
    model = build("llama")
    for block in model.model.layers:
        block.mlp = nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 64))
    with pytest.raises(
        SpecError, match=r"no known channel layout .*supported layouts: gate_proj/up_proj/down_proj"
    ):
        _apply(model, PruneChannels(fraction=0.25))


# ---------------------------------------------------------------------------------------------------------------
# Depth.
# ---------------------------------------------------------------------------------------------------------------


def _described_by_its_config(state, ids) -> bool:
    """A fresh model built from the modified config loads the modified weights and computes the same."""
    fresh = type(state.model)(copy.deepcopy(state.model.config)).eval()
    fresh.load_state_dict(state.model.state_dict(), strict=True)
    return torch.equal(_logits(fresh, ids), _logits(state.model, ids))


@pytest.mark.parametrize("name", sorted(A))
def test_identity_blocks_are_exact_and_depth_changes_keep_the_config_true(name, ids):
    model = build(name)
    depth = len(find_blocks(model))
    identity = _apply(model, InsertIdentity(after="0+1"))
    assert identity.layer_map == [0, 2, *range(4, depth + 2)]
    assert torch.equal(_logits(identity.model, ids), _logits(model, ids)), "identity blocks add exactly 0"
    identity.model.generate(ids[:1, :4], max_new_tokens=3, do_sample=False)
    for mod, layer_map in (
        (RemoveLayers(layers=0), [None, *range(depth - 1)]),
        (DuplicateLayers(start=0, end=2), [0, 1, *range(4, depth + 2)]),
    ):
        state = _apply(model, mod)
        assert state.layer_map == layer_map
        assert _described_by_its_config(state, ids), mod
    assert _described_by_its_config(identity, ids)


def test_moe_layer_rules_are_rewritten_for_the_new_order(ids):
    model = _qwen2_moe()
    state = _apply(
        model, RemoveLayers(layers=0), DuplicateLayers(start=0, end=1)
    )  # [1, 1, 2]: MoE, MoE, dense
    assert (state.model.config.decoder_sparse_step, state.model.config.mlp_only_layers) == (1, [2])
    assert _described_by_its_config(state, ids)
    shortgpt = _apply(model, PruneBlocks(n_blocks=1, **_calibrated()))
    assert _described_by_its_config(shortgpt, ids)


def test_first_k_dense_replace_follows_the_dense_prefix_or_refuses():
    torch.manual_seed(0)
    config = T.DeepseekV3Config(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                n_routed_experts=4, num_experts_per_tok=2, n_group=1, topk_group=1,
                                first_k_dense_replace=1, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8,
                                qk_nope_head_dim=8, v_head_dim=16)  # fmt: skip
    model = T.DeepseekV3ForCausalLM(config).eval()
    ids = torch.randint(0, VOCAB, (1, 6))
    identity = _apply(model, InsertIdentity(after=0))  # [0, 0', 1, 2]: two dense blocks in front
    assert identity.model.config.first_k_dense_replace == 2 and _described_by_its_config(identity, ids)
    assert torch.equal(_logits(identity.model, ids), _logits(model, ids))
    assert _apply(model, RemoveLayers(layers=0)).model.config.first_k_dense_replace == 0
    with pytest.raises(SpecError, match="dense-MLP block after a MoE block"):
        _apply(model, DepthUpscale(overlap=0))  # [0, 1, 2, 0, 1, 2]


def test_gemma2_alternating_layer_types_move_with_their_blocks(ids):
    torch.manual_seed(0)
    config = T.Gemma2Config(vocab_size=VOCAB, **{**COMMON, "num_hidden_layers": 4}, intermediate_size=96,
                            num_key_value_heads=2, head_dim=16, sliding_window=4)  # fmt: skip
    model = T.Gemma2ForCausalLM(config).eval()
    assert config.layer_types == ["sliding_attention", "full_attention"] * 2
    state = _apply(model, DuplicateLayers(start=1, end=2), RemoveLayers(layers=0))  # [1, 1, 2, 3]
    assert state.model.config.layer_types == [
        "full_attention",
        "full_attention",
        "sliding_attention",
        "full_attention",
    ]
    assert _described_by_its_config(state, ids)


def test_a_post_norm_block_is_refused_as_an_identity_block():
    # OPT-350m style: LayerNorm after the residual add, so a zero sublayer still normalises the stream.
    model = build("opt", do_layer_norm_before=False)
    with pytest.raises(SpecError, match="does not make it the identity"):
        _apply(model, InsertIdentity(after=0))
    assert _apply(model, RemoveLayers(layers=1)).layer_map == [0, None, 1], "other depth changes still work"
