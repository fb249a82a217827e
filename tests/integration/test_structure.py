"""The structure module and the self-check at load: the tool finds the parts of any causal LM from its metadata,
and what it computes itself for speed (unembedding, attention kernel) is checked against the model's own forward."""

from __future__ import annotations

import math

import pytest
import torch
import transformers

from hemorrhage_core import structure
from hemorrhage_core.errors import ModelError
from hemorrhage_core.probes.capture import OWN_LOGITS, attention_patterns, unembed
from hemorrhage_core.probes.kernels import KERNEL
from hemorrhage_core.probes.selfcheck import prepare_measurement, self_check
from hemorrhage_core.specs import ProbeSettings, RunSpec

V = 120


def tiny(model_type: str, **extra):
    base = dict(
        vocab_size=V, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4
    )
    base.update(extra)
    config = transformers.AutoConfig.for_model(model_type, **{k: v for k, v in base.items() if v is not None})
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


# model type, extra config, expected block list, expected final path
LAYOUTS = [
    ("llama", {"num_key_value_heads": 2}, "model.layers", ("model.norm",)),
    ("gpt2", {"n_embd": 64, "n_layer": 3, "n_head": 4}, "transformer.h", ("transformer.ln_f",)),
    ("opt", {"ffn_dim": 128, "word_embed_proj_dim": 64, "intermediate_size": None}, "model.decoder.layers",
     ("model.decoder.final_layer_norm",)),
    ("mpt", {"d_model": 64, "n_heads": 4, "n_layers": 3}, "transformer.blocks", ("transformer.norm_f",)),
    ("biogpt", {}, "biogpt.layers", ("biogpt.layer_norm",)),
    ("xglm", {"d_model": 64, "ffn_dim": 128, "attention_heads": 4, "num_layers": 3}, "model.layers",
     ("model.layer_norm",)),
    ("ctrl", {"n_embd": 64, "n_layer": 3, "n_head": 4, "dff": 128}, "transformer.h", ("transformer.layernorm",)),
    ("llama4_text", {"num_key_value_heads": 2, "head_dim": 16, "num_local_experts": 2, "intermediate_size_mlp": 128},
     "model.layers", ("model.norm",)),
    ("mamba", {"state_size": 8}, "backbone.layers", ("backbone.norm_f",)),
]  # fmt: skip


@pytest.mark.parametrize(("model_type", "extra", "blocks", "final"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_blocks_and_final_path_come_from_the_model_itself(model_type, extra, blocks, final):
    model = tiny(model_type, **extra)
    layout = structure.layout(model)
    assert layout.blocks == blocks and layout.final_path == final
    assert len(structure.find_blocks(model)) == 3
    # The decoder is the module the *ForCausalLM calls; its output, through the head, is the model's logits.
    ids = torch.arange(10)[None] % V
    with torch.inference_mode():
        hidden = structure.decoder(model)(input_ids=ids, use_cache=False)[0]
        torch.testing.assert_close(unembed(model, hidden[0]), model(input_ids=ids).logits[0].float())


def test_layout_survives_deepcopy_without_another_probe_pass():
    import copy

    model = tiny("llama", num_key_value_heads=2)
    structure.layout(model)
    clone = copy.deepcopy(model)
    assert clone.__dict__["_hemlab_layout"] == structure.layout(model)
    assert structure.find_blocks(clone) is clone.model.layers


def test_block_outputs_as_tensor_tuple_or_list():
    h = torch.ones(2, 3)
    assert structure.block_hidden(h) is h
    assert structure.block_hidden((h, None)) is h and structure.block_hidden([h]) is h
    assert structure.like_block_output((h * 0, "attn"), h) == (h, "attn")
    assert isinstance(structure.like_block_output([h * 0], h), list)
    assert structure.like_block_output(h * 0, h) is h


def test_head_counts_from_the_config():
    assert structure.head_counts(tiny("llama", num_key_value_heads=2)) == structure.Heads(4, 2, 16)
    assert structure.head_counts(tiny("gpt2", n_embd=64, n_layer=3, n_head=4)) == structure.Heads(4, 4, 16)
    bigcode = tiny("gpt_bigcode", n_embd=64, n_layer=3, n_head=4, multi_query=True)
    assert structure.head_counts(bigcode).kv_heads == 1


def test_attention_maps_only_for_blocks_that_have_attention():
    model = tiny(
        "recurrent_gemma",
        lru_width=64,
        attention_window_size=16,
        head_dim=16,
        num_key_value_heads=1,
        block_types=["recurrent", "attention", "recurrent"],
    )
    maps = attention_patterns(model, torch.arange(12)[None] % V)
    assert [m is not None for m in maps] == [False, True, False]
    assert maps[1].shape == (1, 4, 12, 12)
    assert all(m is None for m in attention_patterns(tiny("mamba", state_size=8), torch.arange(8)[None]))


# -- the self-check ------------------------------------------------------------------------------------------


def test_models_on_the_fast_paths_pass_and_keep_them():
    model = tiny("llama", num_key_value_heads=2)
    check = prepare_measurement(model)
    assert (check.output_path, check.kernel, check.lens) == ("fast", KERNEL, True)
    assert check.output_rel_diff <= check.tolerance and check.kernel_rel_diff <= check.tolerance
    assert check.key() == "fast/hemlab/lens=1"


@pytest.mark.parametrize(
    ("model_type", "extra"),
    [("cohere", {"logit_scale": 0.5}), ("granite", {"logits_scaling": 3.0}), ("gemma2", {"head_dim": 16})],
)
def test_known_output_scalings_are_reproduced_on_the_fast_path(model_type, extra):
    model = tiny(model_type, num_key_value_heads=2, **extra)
    check = self_check(model)
    assert check.output_path == "fast" and check.output_rel_diff <= 1e-5


def test_an_unknown_logit_scaling_fails_the_check_and_falls_back_to_the_models_own_path():
    model = tiny("llama", num_key_value_heads=2)
    original = type(model).forward

    def scaled(self, *args, **kwargs):  # an architecture that does something the tool does not know about
        out = original(self, *args, **kwargs)
        out.logits = out.logits * 1.7 + 0.3
        return out

    model.forward = scaled.__get__(model)
    check = self_check(model)
    assert check.output_path == "model" and model.__dict__[OWN_LOGITS]
    assert check.key() != "fast/hemlab/lens=1"  # its references are never mixed with the fast path's
    ids = torch.arange(16)[None] % V
    with torch.inference_mode():
        hidden = structure.decoder(model)(input_ids=ids)[0][0]
        torch.testing.assert_close(unembed(model, hidden), model(input_ids=ids).logits[0])


def test_a_model_no_path_can_reproduce_is_refused():
    model = tiny("llama", num_key_value_heads=2)
    original = type(model).forward

    def token_dependent(self, input_ids=None, **kwargs):  # logits that depend on the ids beyond the decoder
        out = original(self, input_ids=input_ids, **kwargs)
        out.logits = out.logits + input_ids[:, -out.logits.shape[1] :, None].float()
        return out

    model.forward = token_dependent.__get__(model)
    with pytest.raises(ModelError, match="cannot be measured correctly"):
        self_check(model)


@pytest.mark.parametrize(
    ("model_type", "extra"),
    [
        ("gpt_oss", {"num_local_experts": 4, "num_experts_per_tok": 2, "head_dim": 16}),
        ("gemma2", {"head_dim": 16}),
    ],
    ids=["gpt_oss-sinks", "gemma2-softcap"],
)
def test_a_fast_kernel_that_drops_sinks_or_softcapping_is_caught_and_replaced_by_eager(model_type, extra):
    model = tiny(model_type, num_key_value_heads=2, **extra)
    model.set_attn_implementation(KERNEL)  # forced, although the class declares no sdpa support
    check = self_check(model)
    assert check.kernel == "eager" and model.config._attn_implementation == "eager"
    assert check.kernel_rel_diff > check.tolerance  # measured: sinks 0.47, soft-capping refused by sdpa (inf)


def test_runner_records_the_check_and_its_figures(tiny_llama_dir, runner, word_text):
    text = word_text(["river", "sea", "town", "news", "day"], 600)
    spec = RunSpec(
        model=str(tiny_llama_dir), probe=ProbeSettings(corpus=text, tokens=128, window=32, attn_len=16)
    )
    result = runner.run(spec)
    assert result.metrics["kl_max"] == 0.0 and result.metrics["ppl_ratio"] == 1.0
    assert result.metrics["selfcheck_output_rel_diff"] <= 1e-4
    assert result.metrics["selfcheck_kernel_rel_diff"] <= 1e-4
    # The profile's base perplexity is the model's own: computed here from model(ids).logits on the same windows.
    model = runner.base(str(tiny_llama_dir)).model
    from hemorrhage_core import corpora

    windows = corpora.token_windows(runner.base(str(tiny_llama_dir)).tokenizer, runner.corpus(text), window=32,
                                    tokens=128)  # fmt: skip
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=windows).logits[:, :-1].double(), -1)
    nll = -logp.gather(-1, windows[:, 1:, None]).mean()
    assert math.isclose(result.metrics["ppl_base"], float(nll.exp()), rel_tol=1e-5)


def test_the_probe_spans_the_sliding_window_so_a_kernel_that_ignores_it_is_caught(monkeypatch):
    from hemorrhage_core.probes import kernels

    model = tiny("mistral", num_key_value_heads=2, sliding_window=100, max_position_embeddings=256)
    prepare_measurement(model)
    assert model.config._attn_implementation == KERNEL  # the real kernel honours the window

    def full_causal(module, query, key, value, attention_mask, **kwargs):  # drops the sliding window
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, is_causal=True, enable_gqa=True
        )
        return out.transpose(1, 2), None

    model = tiny("mistral", num_key_value_heads=2, sliding_window=100, max_position_embeddings=256)
    monkeypatch.setattr(kernels, "sdpa_attention_forward", full_causal)
    check = prepare_measurement(model)
    assert check.kernel == "eager" and check.tolerance < check.kernel_rel_diff < math.inf  # a real difference


def test_depth_changes_on_state_space_models_run_or_are_refused_when_the_config_cannot_describe_them():
    from hemorrhage_core.errors import SpecError
    from hemorrhage_core.modify import apply_modifications
    from hemorrhage_core.specs.depth import DuplicateLayers, RemoveLayers

    mamba = tiny("mamba", state_size=8)  # every block of one kind: the derived layer_types stays true
    state = apply_modifications(mamba, 3, (RemoveLayers(layers=(1,)),))
    assert len(structure.find_blocks(state.model)) == 2 and len(set(state.model.config.layer_types)) == 1
    with torch.inference_mode():
        state.model(input_ids=torch.arange(8)[None])
    jamba = tiny(
        "jamba",
        num_key_value_heads=2,
        num_experts=2,
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        mamba_d_state=8,
        mamba_dt_rank=8,
    )  # its config derives the attention/mamba pattern from a period: removing block 1 breaks it
    with pytest.raises(SpecError, match="cannot be described by JambaConfig"):
        apply_modifications(jamba, 3, (RemoveLayers(layers=(1,)),))
    with pytest.raises(SpecError, match="cannot be described"):
        apply_modifications(jamba, 3, (DuplicateLayers(start=1, end=2),))
