"""Pruning catalogue: the defining property of every method, on constructed layers and tiny models.

Unstructured / N:M (magnitude, Wanda, SparseGPT, GBLM, Taylor), structured (heads, MLP channels, ShortGPT blocks),
calibration windows, and the Runner / CLI path. Everything here runs in seconds on tiny random models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from hemorrhage_core.cli import main
from hemorrhage_core.corpora import corpus_from_text, probe_texts, token_windows
from hemorrhage_core.errors import CorpusError, SpecError
from hemorrhage_core.modify import ModContext, apply_modifications
from hemorrhage_core.modify.evidence import (
    GradientStats,
    accumulate_gradients,
    calibration_windows,
    corpus_token_count,
    input_statistics,
)
from hemorrhage_core.modify.prune import METHODS, Evidence, nm_mask
from hemorrhage_core.modify.sparsegpt import sparsegpt_prune
from hemorrhage_core.modify.structured import block_importance, count_params
from hemorrhage_core.modify.targets import linear_targets, weight_view
from hemorrhage_core.specs import (
    PRUNE_METHODS,
    ProbeSettings,
    Prune,
    PruneBlocks,
    PruneChannels,
    PruneHeads,
    RunSpec,
)
from hemorrhage_core.structure import find_blocks

sys.path.insert(0, str(Path(__file__).parents[1]))
from conftest import build_tokenizer  # noqa: E402
from tiny_runs import TINY_PROBE

VOCAB = 384


# ---------------------------------------------------------------------------------------------------------------
# Tiny models built in memory (eager attention, so attention maps can be read) and a calibration context.
# ---------------------------------------------------------------------------------------------------------------


def _llama(layers=2, heads=4, kv=2, seed=0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, attn_implementation="eager")  # fmt: skip
    return LlamaForCausalLM(cfg).eval().requires_grad_(False)


def _gpt2(layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=layers, n_head=4, attn_implementation="eager",
                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(cfg).eval().requires_grad_(False)


def _gemma3(seed=0):
    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=8,
                           layer_types=["sliding_attention", "full_attention"] * 2, attn_implementation="eager")  # fmt: skip
    return Gemma3ForCausalLM(cfg).eval().requires_grad_(False)


MODELS = {"llama": _llama, "gpt2": _gpt2, "gemma3": _gemma3}


@pytest.fixture(scope="module")
def windows():
    torch.manual_seed(1)
    return torch.randint(0, VOCAB, (8, 32))


def _ctx(windows):
    return ModContext(calibration_source=lambda corpus, n, length: windows[:n, :length])


def _apply(model, mod, windows):
    return apply_modifications(model, len(find_blocks(model)), (mod,), _ctx(windows))


def _calibrated(**kw):
    return dict(calib_samples=4, calib_len=32, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Registries and specs.
# ---------------------------------------------------------------------------------------------------------------


def test_every_listed_method_is_implemented_and_vice_versa():
    assert set(METHODS) == PRUNE_METHODS


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pattern="2:4", sparsity=0.6), "set sparsity=0.5"),
        (dict(pattern="4:2"), "0 < N < M"),
        (dict(pattern="dense"), "'unstructured' or 'N:M'"),
        (dict(pattern="4:8", sparsity=0.5, scope="tensor"), "scope=row"),
        (dict(method="sparsegpt", pattern="3:6", blocksize=128), "multiple of M"),
        (dict(calib_samples=0), "calib_samples"),
        (dict(damp=0.0), "damp"),
    ],
)
def test_prune_spec_rejects_impossible_settings(kwargs, message):
    with pytest.raises(SpecError, match=message):
        Prune(**kwargs)


def test_structured_specs_validate():
    with pytest.raises(SpecError, match="fraction"):
        PruneHeads(fraction=1.0)
    with pytest.raises(SpecError, match="unit"):
        PruneHeads(unit="rows")
    with pytest.raises(SpecError, match="importance"):
        PruneChannels(importance="random")
    with pytest.raises(SpecError, match="n_blocks"):
        PruneBlocks(n_blocks=0)


# ---------------------------------------------------------------------------------------------------------------
# Masks and scores on constructed layers.
# ---------------------------------------------------------------------------------------------------------------


def _stats_of(layer: nn.Linear, x: torch.Tensor, hessian=False):
    with input_statistics({"layer": layer}, hessian=hessian) as stats:
        layer(x)
    return stats["layer"]


def test_wanda_keeps_a_small_weight_on_a_huge_activation_channel_that_magnitude_drops():
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 1.0, 0.9, 0.8], [0.2, 1.0, 0.7, 0.9]]))
    x = torch.randn(2, 16, 4) * torch.tensor([100.0, 1.0, 1.0, 1.0])  # channel 0: huge activations
    mod = Prune(sparsity=0.25)
    w = weight_view(layer).float()
    ev = Evidence("layer", inputs=_stats_of(layer, x))
    by_magnitude = METHODS["magnitude"].prune(w, ev, mod)
    by_wanda = METHODS["wanda"].prune(w, ev, mod)
    assert (by_magnitude[:, 0] == 0).all(), "magnitude drops the smallest weight of each row"
    assert (by_wanda[:, 0] != 0).all(), "Wanda keeps it: |w|·‖x‖ is the largest score"
    assert (by_wanda == 0).sum(1).tolist() == [1, 1]


def test_sparsegpt_reconstructs_the_layer_output_better_than_magnitude_and_wanda():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32, bias=False)
    mix = torch.randn(64, 64) / 8 + torch.eye(64)  # correlated input features: where the OBS update pays off
    x = torch.randn(4, 128, 64) @ mix * torch.linspace(0.2, 3, 64)
    stats = _stats_of(layer, x, hessian=True)
    w = weight_view(layer).float()
    flat = x.reshape(-1, 64)
    for sparsity, nm in ((0.5, None), (0.5, (2, 4))):
        mod = Prune(sparsity=sparsity, pattern=f"{nm[0]}:{nm[1]}" if nm else "unstructured")
        ev = Evidence("layer", inputs=stats)
        errors = {
            name: float(((flat @ w.t()) - flat @ METHODS[name].prune(w, ev, mod).t()).norm())
            for name in ("magnitude", "wanda", "sparsegpt")
        }
        assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"], errors


def test_sparsegpt_without_sparsity_changes_nothing_and_hits_exact_row_counts():
    torch.manual_seed(0)
    w, x = torch.randn(16, 48), torch.randn(200, 48)
    h = x.t() @ x
    assert torch.allclose(sparsegpt_prune(w, h, sparsity=0.0), w, atol=1e-5)
    # 3 blocks of 16 columns: the row's count is spread over them by cumulative rounding
    pruned = sparsegpt_prune(w, h, sparsity=0.3, blocksize=16)
    assert (pruned == 0).sum(1).tolist() == [int(0.3 * 48)] * 16
    kept = pruned != 0
    assert not torch.allclose(pruned[kept], w[kept]), "the weights that stay are updated (OBS compensation)"


@pytest.mark.parametrize("n, m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_drops_exactly_n_lowest_in_every_group_of_m(n, m):
    torch.manual_seed(0)
    score = torch.rand(8, 32)
    keep = nm_mask(score, n, m)
    groups_keep, groups_score = keep.reshape(8, -1, m), score.reshape(8, -1, m)
    assert ((~groups_keep).sum(-1) == n).all()
    dropped_max = groups_score.masked_fill(groups_keep, -1).amax(-1)
    kept_min = groups_score.masked_fill(~groups_keep, 2).amin(-1)
    assert (dropped_max < kept_min).all(), "the dropped ones are the lowest of their group"


def test_taylor_and_gblm_keep_a_small_weight_with_a_large_gradient_that_magnitude_drops():
    w = torch.tensor([[0.1, 1.0, 0.9, 0.8]])
    grad = torch.tensor([[5.0, 0.01, 0.02, 0.01]])  # the loss is most sensitive to the small weight
    layer = nn.Linear(4, 1, bias=False)
    ev = Evidence(
        "layer",
        inputs=_stats_of(layer, torch.ones(1, 8, 4)),  # equal activations: the activation term cannot decide
        grads=GradientStats(mean={"layer": grad}, sq_sum={"layer": grad**2}, sequences=1),
    )
    mod = Prune(sparsity=0.25, method="taylor")
    assert METHODS["magnitude"].prune(w, ev, mod)[0, 0] == 0
    assert METHODS["taylor"].prune(w, ev, mod)[0, 0] != 0
    assert METHODS["gblm"].prune(w, ev, Prune(sparsity=0.25, method="gblm"))[0, 0] != 0
    assert 0.5 < ev.notes["gblm_gradient_share"] < 1, "alpha=100 lets this large gradient dominate the score"
    # With alpha = 0 GBLM is Wanda, which here (equal activations) is magnitude.
    assert METHODS["gblm"].prune(w, ev, Prune(sparsity=0.25, method="gblm", grad_alpha=0))[0, 0] == 0


def test_accumulated_gradients_are_the_per_sequence_loss_gradients(windows):
    model = _llama()
    targets = dict(linear_targets(model))
    stats = accumulate_gradients(model, targets, windows[:3])
    name = "model.layers.1.mlp.down_proj"
    per_seq = []
    for row in windows[:3]:
        w = targets[name].weight
        w.requires_grad_(True)
        loss = model(input_ids=row[None], labels=row[None]).loss
        (g,) = torch.autograd.grad(loss, w)
        w.requires_grad_(False)
        per_seq.append(g)
    g = torch.stack(per_seq)
    assert torch.allclose(stats.mean[name], g.mean(0), atol=1e-6)
    assert torch.allclose(stats.l2(name), g.pow(2).sum(0).sqrt(), atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters()), "requires_grad flags are restored"


# ---------------------------------------------------------------------------------------------------------------
# Unstructured / N:M on whole models.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", sorted(PRUNE_METHODS))
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_every_method_gives_exact_nm_sparsity(method, pattern, windows):
    model = _llama()
    n, m = map(int, pattern.split(":"))
    state = _apply(model, Prune(method=method, sparsity=n / m, pattern=pattern, **_calibrated()), windows)
    for _, module in linear_targets(state.model):
        w = weight_view(module)
        assert ((w == 0).reshape(w.shape[0], -1, m).sum(-1) == n).all()
    assert state.report["achieved_sparsity"] == pytest.approx(n / m)
    assert all((weight_view(mod) != 0).all() for _, mod in linear_targets(model)), (
        "the base model is untouched"
    )


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("method", sorted(PRUNE_METHODS))
def test_every_method_hits_its_row_sparsity_on_every_architecture(model_name, method, windows):
    state = _apply(MODELS[model_name](), Prune(method=method, sparsity=0.4, **_calibrated()), windows)
    if method == "gblm":
        assert 0 < state.report["gblm_gradient_share"] < 1
    for _, module in linear_targets(state.model):
        w = weight_view(module)
        assert ((w == 0).sum(1) == int(0.4 * w.shape[1])).all()
    assert torch.isfinite(state.model(windows[:2]).logits).all()


def test_sequential_calibration_sees_the_pruned_blocks_outputs(windows):
    """Block 0 sees the same inputs either way; block 1 sees pruned block 0's outputs only when sequential."""
    model = _llama()
    seq = _apply(model, Prune(method="wanda", sparsity=0.5, **_calibrated()), windows).model
    dense = _apply(
        model, Prune(method="wanda", sparsity=0.5, sequential=False, **_calibrated()), windows
    ).model
    b0 = "model.layers.0.mlp.down_proj"
    b1 = "model.layers.1.self_attn.q_proj"
    assert torch.equal(seq.get_submodule(b0).weight != 0, dense.get_submodule(b0).weight != 0)
    assert not torch.equal(seq.get_submodule(b1).weight != 0, dense.get_submodule(b1).weight != 0)


def test_lm_head_can_be_pruned_with_calibration(windows):
    model = _llama()
    state = _apply(
        model, Prune(method="sparsegpt", sparsity=0.5, include_lm_head=True, **_calibrated()), windows
    )
    head = state.model.get_output_embeddings().weight
    assert ((head == 0).sum(1) == 32).all()
    assert (state.model.get_input_embeddings().weight != 0).all(), "the tied embedding is left alone"


# ---------------------------------------------------------------------------------------------------------------
# Structured: heads, channels, blocks.
# ---------------------------------------------------------------------------------------------------------------


def _zero_columns(model, module_path: str, columns: list[int]):
    """The same model with inputs `columns` of one projection zeroed: removing them must give the same outputs."""
    import copy

    twin = copy.deepcopy(model)
    w = weight_view(twin.get_submodule(module_path))
    w[:, columns] = 0
    return twin


@pytest.mark.parametrize(
    "model_name, mod",
    [
        ("llama", PruneHeads(fraction=0.5)),
        ("llama", PruneHeads(fraction=0.5, unit="kv", importance="taylor", **_calibrated())),
        ("gpt2", PruneHeads(fraction=0.5, importance="activation", **_calibrated())),
        ("gemma3", PruneHeads(fraction=0.5, importance="taylor", **_calibrated())),
    ],
)
def test_removing_heads_equals_silencing_them_and_the_model_still_runs(model_name, mod, windows):
    model = MODELS[model_name]()
    state = _apply(model, mod, windows)
    twin = model
    for layer, kept in state.head_map.items():
        block = find_blocks(model)[layer]
        attn = getattr(block, "self_attn", None) or block.attn
        hd = attn.head_dim
        n_heads = weight_view(getattr(attn, "o_proj", None) or attn.c_proj).shape[1] // hd
        gone = [h for h in range(n_heads) if h not in kept]
        assert len(kept) == n_heads // 2 and gone
        prefix = "model.layers" if model_name != "gpt2" else "transformer.h"
        o_proj = "self_attn.o_proj" if model_name != "gpt2" else "attn.c_proj"
        twin = _zero_columns(
            twin, f"{prefix}.{layer}.{o_proj}", [h * hd + i for h in gone for i in range(hd)]
        )
    with torch.no_grad():
        pruned = state.model(windows[:2], output_attentions=True)
        silenced = twin(windows[:2]).logits
    assert torch.allclose(pruned.logits, silenced, atol=1e-4)
    assert all(a.shape[1] == 2 for a in pruned.attentions), "every layer now has half its heads"
    assert state.report["params_after"] == count_params(state.model)
    assert state.report["params_before"] - state.report["params_after"] > 0
    state.model.generate(windows[:1, :5], max_new_tokens=3, do_sample=False)  # the KV cache path runs too


def test_kv_unit_removes_kv_heads_and_query_unit_keeps_them(windows):
    q_state = _apply(_llama(), PruneHeads(fraction=0.5, unit="query"), windows)
    kv_state = _apply(_llama(), PruneHeads(fraction=0.5, unit="kv"), windows)
    q_attn, kv_attn = q_state.model.model.layers[0].self_attn, kv_state.model.model.layers[0].self_attn
    shapes = [
        (a.q_proj.out_features, a.k_proj.out_features, a.num_key_value_groups) for a in (q_attn, kv_attn)
    ]
    assert shapes == [(32, 32, 1), (32, 16, 2)]
    # query unit: one head of each KV group goes (heads 0,1 share KV head 0; 2,3 share KV head 1)
    assert all(len({h // 2 for h in kept}) == 2 for kept in q_state.head_map.values())
    assert all(len({h // 2 for h in kept}) == 1 for kept in kv_state.head_map.values())


def test_heads_cannot_all_go(windows):
    with pytest.raises(SpecError, match="all"):
        # one KV head: half of it rounds up to 1, which is all of them
        _apply(_gemma3(), PruneHeads(fraction=0.5, unit="kv"), windows)


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("importance", ["magnitude", "activation", "taylor"])
def test_removing_mlp_channels_equals_zeroing_their_output_columns(model_name, importance, windows):
    model = MODELS[model_name]()
    state = _apply(model, PruneChannels(fraction=0.25, importance=importance, **_calibrated()), windows)
    twin = model
    prefix = "model.layers" if model_name != "gpt2" else "transformer.h"
    down = "mlp.down_proj" if model_name != "gpt2" else "mlp.c_proj"
    up = "mlp.up_proj" if model_name != "gpt2" else "mlp.c_fc"
    for layer in range(len(find_blocks(model))):
        original = weight_view(model.get_submodule(f"{prefix}.{layer}.{up}"))
        pruned = weight_view(state.model.get_submodule(f"{prefix}.{layer}.{up}"))
        assert pruned.shape[0] == original.shape[0] * 3 // 4
        # which rows survived: match each pruned row to its original
        kept = {int((original == row).all(1).nonzero()[0]) for row in pruned}
        gone = [c for c in range(original.shape[0]) if c not in kept]
        twin = _zero_columns(twin, f"{prefix}.{layer}.{down}", gone)
    with torch.no_grad():
        assert torch.allclose(state.model(windows[:2]).logits, twin(windows[:2]).logits, atol=1e-4)
    linear_before = sum(weight_view(m).numel() for _, m in linear_targets(model))
    linear_after = sum(weight_view(m).numel() for _, m in linear_targets(state.model))
    assert state.report["linear_param_reduction"] == pytest.approx(1 - linear_after / linear_before)
    assert state.report["params_after"] == count_params(state.model)
    assert state.report["params_before"] == count_params(model)


def test_taylor_importance_differs_from_magnitude(windows):
    model = _llama()
    by_magnitude = _apply(model, PruneChannels(fraction=0.5), windows).model
    by_taylor = _apply(
        model, PruneChannels(fraction=0.5, importance="taylor", **_calibrated()), windows
    ).model
    w_m = by_magnitude.model.layers[0].mlp.up_proj.weight
    w_t = by_taylor.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(w_m, w_t)


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_shortgpt_removes_an_identity_block_first_and_nothing_changes(model_name, windows):
    model = MODELS[model_name]()
    silent = 1
    block = find_blocks(model)[silent]
    for name in ("self_attn.o_proj", "mlp.down_proj", "attn.c_proj", "mlp.c_proj"):
        try:
            sub = block.get_submodule(name)
        except AttributeError:
            continue
        sub.weight.data.zero_()  # the block adds nothing to the residual stream: cos(h_in, h_out) = 1
        if getattr(sub, "bias", None) is not None:
            sub.bias.data.zero_()
    bi = block_importance(model, windows)
    if model_name == "gemma3":  # Gemma's post-sublayer norms turn the zero output into exact zeros too
        assert bi[silent] == pytest.approx(0.0, abs=1e-6)
    assert int(bi.argmin()) == silent
    state = _apply(model, PruneBlocks(n_blocks=1, **_calibrated()), windows)
    expected = list(range(len(bi)))
    expected[silent] = None
    expected[silent + 1 :] = [j - 1 for j in expected[silent + 1 :]]
    assert state.layer_map == expected
    with torch.no_grad():
        assert torch.allclose(state.model(windows[:2]).logits, model(windows[:2]).logits, atol=1e-5)
    assert state.report["params_after"] == count_params(state.model) < state.report["params_before"]
    state.model.generate(windows[:1, :5], max_new_tokens=3, do_sample=False)


# ---------------------------------------------------------------------------------------------------------------
# Calibration windows, Runner and CLI.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_text_file(word_text):
    words = ["a", "calm", "river", "carries", "old", "leaves", "toward", "the", "distant", "sea", "and", "the", "news", "travels", "from", "town", "to", "town"]  # fmt: skip
    return word_text(words, 4000, seed=1, name="other.txt")


def test_calibration_windows_come_from_the_end_and_never_touch_evaluation_or_probe_tokens():
    import re

    tok = build_tokenizer()
    corpus = corpus_from_text("numbered", " ".join(f"w{i}" for i in range(3000)))  # words in increasing order
    evaluation = token_windows(tok, corpus, window=64, tokens=512)
    probes = probe_texts(corpus, tok, 2, 32)
    calib = calibration_windows(tok, corpus, 6, 64, skip_tail_tokens=probes.numel(), reserved_head_tokens=512)
    assert calib.shape == (6, 64)

    def numbers(ids):  # the words that lie whole inside the windows (edges may cut a word)
        return [int(n) for row in ids for n in re.findall(r"(?<=\s)w(\d+)(?=\s)", tok.decode(row))]

    ev, cal, pr = numbers(evaluation), numbers(calib), numbers(probes)
    assert max(ev) < min(cal) and max(cal) < min(pr), "evaluation | calibration | probes, in corpus order"
    assert cal == sorted(cal), "consecutive spans"
    # as many sequences as fit in the corpus, but not beside the evaluation windows
    fits_alone = (corpus_token_count(tok, corpus) - 256) // 64
    with pytest.raises(CorpusError, match="overlap"):
        calibration_windows(tok, corpus, fits_alone, 64, reserved_head_tokens=512)


def test_runner_calibration_is_cached_and_depends_on_the_corpus(
    runner, tiny_llama_dir, text_file, other_text_file
):
    spec = RunSpec(model=str(tiny_llama_dir), probe=ProbeSettings(corpus=text_file, **TINY_PROBE))
    same = runner.calibration_windows(spec, text_file, 4, 32)
    assert runner.calibration_windows(spec, text_file, 4, 32) is same
    other = runner.calibration_windows(spec, other_text_file, 4, 32)
    assert other.shape == same.shape and not torch.equal(other, same)


@pytest.mark.parametrize(
    "mod",
    [
        Prune(method="sparsegpt", sparsity=0.5, pattern="2:4", calib_samples=4, calib_len=32),
        Prune(method="gblm", sparsity=0.5, calib_samples=4, calib_len=32),
        PruneHeads(fraction=0.5, importance="taylor", calib_samples=4, calib_len=32),
        PruneChannels(fraction=0.5, importance="activation", calib_samples=4, calib_len=32),
        PruneBlocks(n_blocks=1, calib_samples=4, calib_len=32),
    ],
    ids=lambda m: m.kind,
)
def test_runner_profiles_every_kind_and_leaves_the_base_alone(runner, tiny_llama_dir, text_file, mod):
    spec = RunSpec(
        model=str(tiny_llama_dir), mods=(mod,), probe=ProbeSettings(corpus=text_file, **TINY_PROBE)
    )
    base = runner.base(spec.model).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    result = runner.run(spec)
    assert result.metrics["kl_mean"] > 0 and result.metrics["ppl"] > 0
    assert (
        result.metrics["modify_s"] > 0
        and result.metrics["calib_tokens" if mod.kind == "prune" else "params_after"]
    )
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    heads = result.heads[result.heads.metric == "attn_js"]
    if mod.kind == "prune_heads":  # surviving heads are compared with the heads they were: 2 of 4 per layer
        assert len(heads) == 2 * 2 and set(heads["head"]) <= {0, 1, 2, 3}
    elif mod.kind == "prune_blocks":
        assert len(heads) == 4, "only the remaining block's heads are compared"


def test_cli_accepts_the_new_kinds_through_mod(tmp_path, monkeypatch, capsys, tiny_llama_dir, text_file):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    common = ["--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "256", "--window", "64",
              "--batch-size", "2", "--db", str(tmp_path / "cli.duckdb"), "--device", "cpu", "--json"]  # fmt: skip
    mod = f"prune:method=wanda,sparsity=0.5,pattern=2:4,calib_corpus={text_file},calib_samples=4,calib_len=32"
    assert main(["run", "--mod", mod, "--mod", "prune_channels:fraction=0.25", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [m["kind"] for m in out["spec"]["mods"]] == ["prune", "prune_channels"]
    assert out["spec"]["mods"][0]["pattern"] == "2:4" and out["metrics"]["achieved_sparsity"] == 0.5
    assert out["metrics"]["param_reduction"] > 0
    assert main(["run", "--mod", "prune:pattern=2:4,sparsity=0.7", *common]) == 2
    assert "set sparsity=0.5" in capsys.readouterr().err
