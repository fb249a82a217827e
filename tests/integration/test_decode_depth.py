"""Decoding changes, depth changes and decoding calibration: defining properties on tensors and tiny models."""

import hashlib
import json
import math

import pytest
import torch
from tiny_runs import tiny_spec
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from hemorrhage_core.cli import main
from hemorrhage_core.errors import SpecError
from hemorrhage_core.mitigation import is_beyond_repair, recovery
from hemorrhage_core.modify import ModContext, apply_modifications
from hemorrhage_core.modify.decode import (
    min_p_filter,
    repetition_penalty,
    sampler_transforms,
    scale_temperature,
    top_k_filter,
    top_p_filter,
)
from hemorrhage_core.modify.decoding_calibration import fit_decoding, fit_scale, mean_kl
from hemorrhage_core.modify.residual import residual_writers
from hemorrhage_core.probes.decoding import expected_calibration_error, support_divergence
from hemorrhage_core.probes.metrics import kl_full
from hemorrhage_core.probes.reference import context_rows
from hemorrhage_core.specs import (
    CalibrateDecoding,
    KLDistill,
    QuantizeRTN,
    RunSpec,
    Temperature,
)
from hemorrhage_core.specs.decode import MinP, RepetitionPenalty, Sampler, TopK, TopP
from hemorrhage_core.specs.depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers

VOCAB = (
    384  # the tiny fixtures' tokenizer size: a reference with top_k = VOCAB keeps every token (exact metrics)
)


def _spec(model_dir, text_file, *mods):
    return tiny_spec(model_dir, text_file, *mods, top_k=VOCAB)  # the whole vocabulary: truncation is exact


def _calib(text_file, **kw):
    return dict(calib_corpus=text_file, calib_samples=4, calib_len=64, **kw)


def _state_hash(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _without_mlp(model):
    """A copy whose blocks have no MLP projections: nothing writes the MLP output, so no identity block."""
    import copy

    twin = copy.deepcopy(model)
    for block in twin.model.layers:
        block.mlp = torch.nn.Identity()
    return twin


# -- decoding: pure functions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda z: top_k_filter(z, 1), TopKLogitsWarper(1)),
        (lambda z: top_k_filter(z, 7), TopKLogitsWarper(7)),
        (lambda z: top_p_filter(z, 0.3), TopPLogitsWarper(0.3)),
        (lambda z: top_p_filter(z, 0.9), TopPLogitsWarper(0.9)),
        (lambda z: min_p_filter(z, 0.05), MinPLogitsWarper(0.05)),
        (lambda z: min_p_filter(z, 0.4), MinPLogitsWarper(0.4)),
    ],
)
def test_truncation_filters_match_hugging_face_warpers(ours, theirs):
    torch.manual_seed(0)
    logits = torch.randn(32, 200) * 3
    expected = theirs(torch.zeros(32, 1, dtype=torch.long), logits.clone())
    got = ours(logits)
    assert torch.equal(torch.isneginf(got), torch.isneginf(expected))
    kept = ~torch.isneginf(got)
    assert torch.equal(got[kept], logits[kept]), "kept tokens keep their logits"


def test_top_p_keeps_the_smallest_most_likely_set_reaching_p():
    torch.manual_seed(1)
    logits = torch.randn(64, 50) * 2
    probs = torch.softmax(logits, -1)
    for p in (0.2, 0.5, 0.95):
        kept = ~torch.isneginf(top_p_filter(logits, p))
        mass = (probs * kept).sum(-1)
        assert (mass >= p - 1e-6).all()
        least_kept = torch.where(kept, probs, torch.full_like(probs, 2.0)).min(-1).values
        assert ((mass - least_kept < p) | (kept.sum(-1) == 1)).all(), "dropping any kept token falls below p"
        assert ((probs * ~kept).max(-1).values <= least_kept).all(), "no dropped token beats a kept one"
    assert torch.equal(top_p_filter(logits, 1.0), logits)


@pytest.mark.parametrize("last_n", [0, 3])
def test_repetition_penalty_matches_hugging_face_and_ignores_padding(last_n):
    torch.manual_seed(2)
    logits = torch.randn(4, 30) * 3
    context = torch.randint(0, 30, (4, 10))
    processor = RepetitionPenaltyLogitsProcessor(1.7)
    expected = processor(context[:, -last_n:] if last_n else context, logits.clone())
    assert torch.allclose(repetition_penalty(logits, context, 1.7, last_n), expected)
    # Left padding (-1) marks nothing, not even token 0.
    padded = torch.cat([torch.full((4, 5), -1), context], dim=1)
    assert torch.equal(
        repetition_penalty(logits, padded, 1.7, last_n), repetition_penalty(logits, context, 1.7, last_n)
    )
    all_pad = torch.full((4, 6), -1)
    assert torch.equal(repetition_penalty(logits, all_pad, 1.7), logits)


def test_sampler_is_the_knobs_in_hugging_face_order_and_neutral_is_nothing():
    assert sampler_transforms(Sampler()) == []
    torch.manual_seed(3)
    logits = torch.randn(8, 40) * 2
    context = torch.randint(0, 40, (8, 12))
    mod = Sampler(temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.3)
    state = apply_modifications(torch.nn.Linear(1, 1), 0, (mod,))
    assert state.needs_context
    expected = repetition_penalty(logits, context, 1.3)
    expected = min_p_filter(top_p_filter(top_k_filter(scale_temperature(expected, 0.7), 20), 0.8), 0.05)
    assert torch.equal(state.transform_logits(logits, context), expected)
    with pytest.raises(ValueError, match="context"):
        state.transform_logits(logits)


def test_single_knob_kinds_compose_in_the_order_given():
    torch.manual_seed(4)
    logits = torch.randn(8, 40) * 2
    first = apply_modifications(torch.nn.Linear(1, 1), 0, (Temperature(2.0), TopP(p=0.5)))
    second = apply_modifications(torch.nn.Linear(1, 1), 0, (TopP(p=0.5), Temperature(2.0)))
    a, b = first.transform_logits(logits), second.transform_logits(logits)
    assert not torch.equal(torch.isneginf(a), torch.isneginf(b)), (
        "temperature before top-p widens the nucleus"
    )
    assert torch.isneginf(a).sum() < torch.isneginf(b).sum()


def test_context_rows_give_each_position_its_prefix():
    ids = torch.arange(2 * 5).view(2, 5)
    rows = context_rows(ids, slice(0, 8))  # 2 windows x 4 predicting positions, width 4
    for r in range(8):
        b, t = divmod(r, 4)
        expected = [-1] * (3 - t) + ids[b, : t + 1].tolist()
        assert rows[r].tolist() == expected
    assert torch.equal(context_rows(ids, slice(3, 6)), rows[3:6])


def test_support_divergence_is_exact_when_the_reference_keeps_every_token():
    torch.manual_seed(5)
    p_lp = torch.log_softmax(torch.randn(16, 30) * 2, -1)
    q_lp = torch.log_softmax(top_p_filter(torch.randn(16, 30) * 2, 0.7), -1)
    top_lp, top_ids = torch.topk(p_lp, 30, dim=-1)
    tail = torch.full((16,), -math.inf)
    kl_rev, cut = support_divergence(top_lp, tail, top_ids, q_lp)
    assert torch.allclose(kl_rev, kl_full(q_lp, p_lp), atol=1e-5)
    assert torch.allclose(cut, (p_lp.exp() * torch.isneginf(q_lp)).sum(-1), atol=1e-6)
    # With a short top-K the cut mass is a lower bound.
    top_lp, top_ids = torch.topk(p_lp, 5, dim=-1)
    tail = torch.logsumexp(p_lp.scatter(1, top_ids, -math.inf), -1)
    assert (support_divergence(top_lp, tail, top_ids, q_lp)[1] <= cut + 1e-6).all()


def test_expected_calibration_error_on_known_values():
    conf = torch.full((10,), 0.9)
    assert expected_calibration_error(conf, torch.arange(10) < 9) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(torch.ones(4), torch.zeros(4, dtype=torch.bool)) == pytest.approx(1.0)
    # Two bins: 0.25 (half right) and 0.95 (all right): |0.5-0.25|/2 + |1-0.95|/2.
    conf = torch.tensor([0.25, 0.25, 0.95, 0.95])
    hit = torch.tensor([True, False, True, True])
    assert expected_calibration_error(conf, hit) == pytest.approx(0.125 + 0.025)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TopK(k=0),
        lambda: TopP(p=0.0),
        lambda: MinP(p=1.0),
        lambda: RepetitionPenalty(penalty=0.5),
        lambda: Sampler(top_p=1.5),
        lambda: DuplicateLayers(start=3, end=3),
        lambda: InsertIdentity(),
        lambda: InsertIdentity(after=1, every=2),
        lambda: RemoveLayers(layers="1+x"),
        lambda: RemoveLayers(layers=-1),
        lambda: CalibrateDecoding(calib_samples=0),
        lambda: KLDistill(params="all"),
    ],
)
def test_impossible_settings_raise_spec_errors(make):
    with pytest.raises(SpecError):
        make()


def test_layer_lists_parse_from_cli_text_and_survive_json():
    assert InsertIdentity(after="3+1; 2").after == (1, 2, 3)
    assert RemoveLayers(layers=5).layers == (5,)
    spec = RunSpec(model="m", mods=(InsertIdentity(after="1+2"), RemoveLayers(layers=[4, 0])))
    again = RunSpec.from_dict(json.loads(spec.to_json()))
    assert again == spec and hash(again) == hash(spec)


# -- decoding: through the profile ---------------------------------------------------------------------------


def test_neutral_sampler_gives_exactly_zero_divergence(runner, tiny_llama_dir, text_file):
    m = runner.run(_spec(tiny_llama_dir, text_file, Sampler())).metrics
    assert m["kl_max"] == 0.0 and m["kl_reverse_max"] == 0.0 and m["mass_cut_max"] == 0.0
    assert m["top1_agreement"] == 1.0 and m["ppl"] == m["ppl_base"] and m["ece"] == m["ece_base"]


def test_truncation_reports_infinite_forward_kl_and_the_exact_mass_cut(runner, tiny_llama_dir, text_file):
    spec = _spec(tiny_llama_dir, text_file, TopK(k=5))
    result = runner.run(spec)
    m = result.metrics
    assert m["kl_mean"] == math.inf and m["kl_forward_infinite_share"] == 1.0
    assert 0 < m["kl_reverse_mean"] < math.inf
    assert m["top1_agreement"] == 1.0, "truncation never changes the most likely token"
    # The mass cut, recomputed from the base model's full distributions on the same windows.
    loaded = runner.base(spec.model)
    windows = runner._inputs_for(spec, runner.corpus(text_file), None)[0]
    with torch.inference_mode():
        lp = torch.log_softmax(loaded.model(input_ids=windows).logits[:, :-1].float(), -1)
    expected = 1 - torch.topk(lp.exp(), 5, dim=-1).values.sum(-1).mean()
    assert m["mass_cut_mean"] == pytest.approx(float(expected), abs=1e-5)
    payload = json.loads(json.dumps(result.to_json_dict()))
    assert payload["metrics"]["kl_mean"] is None and payload["metrics"]["kl_reverse_mean"] > 0


def test_repetition_penalty_profile_matches_a_manual_computation(runner, tiny_llama_dir, text_file):
    spec = _spec(tiny_llama_dir, text_file, RepetitionPenalty(penalty=1.5))
    m = runner.run(spec).metrics
    loaded = runner.base(spec.model)
    windows = runner._inputs_for(spec, runner.corpus(text_file), None)[0]
    processor = RepetitionPenaltyLogitsProcessor(1.5)
    nll = []
    with torch.inference_mode():
        logits = loaded.model(input_ids=windows).logits.float()
        for b in range(windows.shape[0]):
            for t in range(windows.shape[1] - 1):
                z = processor(windows[b : b + 1, : t + 1], logits[b : b + 1, t].clone())
                nll.append(-torch.log_softmax(z, -1)[0, windows[b, t + 1]])
    assert m["ppl"] == pytest.approx(math.exp(float(torch.stack(nll).mean())), rel=1e-5)
    assert m["ppl"] != m["ppl_base"] and m["kl_forward_infinite_share"] == 0.0


# -- depth changes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("mod", [InsertIdentity(after="0+1"), InsertIdentity(every=1)])
def test_identity_blocks_give_exactly_zero_divergence(runner, request, text_file, arch, mod):
    model_dir = request.getfixturevalue(f"tiny_{arch}_dir")
    result = runner.run(_spec(model_dir, text_file, mod))
    m = result.metrics
    # Exactly 0, not 1e-12: the zeroed projections add +0.0 to the residual stream, so every later operation
    # sees bit-identical inputs.
    assert m["kl_max"] == 0.0 and m["kl_reverse_max"] == 0.0
    assert m["top1_agreement"] == 1.0 and m["ppl"] == m["ppl_base"]
    table = result.layer_table()
    assert (table.hidden_rel_error == 0).all() and (table.attn_js_mean == 0).all()
    assert m["num_layers"] == 4


def test_identity_copy_is_zeroed_and_the_original_block_is_not(tiny_llama_dir):
    from hemorrhage_core.models import load_model

    loaded = load_model(str(tiny_llama_dir), device="cpu")
    before = _state_hash(loaded.model)
    state = apply_modifications(loaded.model, loaded.num_layers, (InsertIdentity(after=0),))
    blocks = state.model.model.layers
    assert state.layer_map == [0, 2] and len(blocks) == 3
    assert (
        blocks[1].self_attn.o_proj.weight.abs().sum() == 0 and blocks[1].mlp.down_proj.weight.abs().sum() == 0
    )
    assert torch.equal(
        blocks[0].self_attn.o_proj.weight, loaded.model.model.layers[0].self_attn.o_proj.weight
    )
    assert blocks[1].self_attn.q_proj.weight.data_ptr() != blocks[0].self_attn.q_proj.weight.data_ptr()
    assert [b.self_attn.layer_idx for b in blocks] == [0, 1, 2]
    assert state.model.config.num_hidden_layers == 3 and loaded.model.config.num_hidden_layers == 2
    assert _state_hash(loaded.model) == before
    with pytest.raises(SpecError, match="output projections"):
        residual_writers(_without_mlp(loaded.model))


def test_duplication_disturbs_only_the_layers_after_the_copy(runner, tiny_llama_dir, text_file):
    result = runner.run(_spec(tiny_llama_dir, text_file, DuplicateLayers(start=0, end=1)))
    table = result.layer_table().set_index("layer")
    assert table.loc[0, "hidden_rel_error"] == 0 and table.loc[0, "attn_js_mean"] == 0, "block 0 is untouched"
    assert table.loc[1, "hidden_rel_error"] > 0 and table.loc[1, "attn_js_mean"] > 0
    assert result.metrics["kl_mean"] > 0 and result.metrics["num_layers"] == 3


def test_layer_maps_of_every_depth_change(tiny_llama_dir):
    from hemorrhage_core.models import load_model

    loaded = load_model(str(tiny_llama_dir), device="cpu")
    m, L = loaded.model, loaded.num_layers
    assert apply_modifications(m, L, (DuplicateLayers(start=0, end=2, times=2),)).layer_map == [0, 1]
    assert apply_modifications(m, L, (DepthUpscale(overlap=0),)).layer_map == [0, 1]
    assert apply_modifications(m, L, (RemoveLayers(layers=0),)).layer_map == [None, 0]
    chain = apply_modifications(m, L, (InsertIdentity(after=0), RemoveLayers(layers=0)))
    assert chain.layer_map == [None, 1], "maps compose through the chain"
    for bad in (
        DuplicateLayers(start=0, end=3),
        RemoveLayers(layers="0+1"),
        InsertIdentity(after=5),
        DepthUpscale(overlap=1),
    ):
        with pytest.raises(SpecError):
            apply_modifications(m, L, (bad,))


def test_removed_layers_have_no_counterpart_in_the_profile(runner, tiny_gpt2_dir, text_file):
    result = runner.run(_spec(tiny_gpt2_dir, text_file, RemoveLayers(layers=0)))
    table = result.layer_table().set_index("layer")
    assert math.isnan(table.loc[0, "hidden_rel_error"]) and table.loc[1, "hidden_rel_error"] > 0
    assert result.metrics["num_layers"] == 1


def test_gemma3_layer_types_move_with_their_blocks():
    torch.manual_seed(0)
    types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    config = Gemma3TextConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, layer_types=types,
    )  # fmt: skip
    model = Gemma3ForCausalLM(config).eval()
    ids = torch.randint(0, 64, (2, 12))
    with torch.inference_mode():
        base = model(ids).logits
    state = apply_modifications(model, 4, (InsertIdentity(after="1+2"), RemoveLayers(layers=0)))
    expected = [
        "full_attention",
        "full_attention",
        "sliding_attention",
        "sliding_attention",
        "full_attention",
    ]
    assert state.model.config.layer_types == expected
    assert [b.self_attn.is_sliding for b in state.model.model.layers] == [
        t == "sliding_attention" for t in expected
    ]
    identity = apply_modifications(model, 4, (InsertIdentity(every=2),))
    with torch.inference_mode():
        assert torch.equal(identity.model(ids).logits, base)
        out = identity.model.generate(ids[:1], max_new_tokens=3, do_sample=False)  # KV cache by layer_idx
    assert out.shape == (1, 15)


# -- decoding calibration and distillation -------------------------------------------------------------------


def test_fit_decoding_recovers_a_known_temperature_and_bias():
    torch.manual_seed(6)
    z = torch.randn(300, 40) * 2
    bias = torch.randn(40) * 0.5
    base_lp = torch.log_softmax(z * 0.4 + bias, -1)
    scale, b = fit_decoding(base_lp, z, bias=False)
    assert 0.3 < scale < 0.5
    scale, b = fit_decoding(base_lp, z, bias=True)
    assert scale == pytest.approx(0.4, rel=1e-3)
    assert mean_kl(base_lp, z, scale, b) < 1e-6 < mean_kl(base_lp, z)
    # The bias is identified up to a constant (softmax is shift-invariant).
    assert torch.allclose(b - b.mean(), bias - bias.mean(), atol=5e-3)


def test_fit_scale_finds_the_minimum_of_the_convex_objective():
    torch.manual_seed(7)
    z = torch.randn(500, 300) * 3
    base_lp = torch.log_softmax(z * 0.6 + torch.randn(500, 300) * 0.5, -1)  # no exact temperature fits
    s = fit_scale(base_lp, z)
    for other in (0.98 * s, 1.02 * s):
        assert mean_kl(base_lp, z, s) < mean_kl(base_lp, z, other)
    assert fit_scale(torch.log_softmax(z * 2.5, -1), z) == pytest.approx(2.5, rel=1e-5)  # a sharper original


def test_calibration_undoes_a_temperature_change(runner, tiny_llama_dir, text_file):
    m = runner.run(
        _spec(tiny_llama_dir, text_file, Temperature(2.0), CalibrateDecoding(**_calib(text_file)))
    ).metrics
    assert m["calib_temperature"] == pytest.approx(0.5, rel=1e-3)
    assert m["kl_mean"] < 1e-6 and m["calib_kl_recovered"] > 0.99 and m["beyond_repair"] == 0.0


def test_calibration_with_bias_beats_temperature_alone_and_never_touches_weights(
    runner, tiny_llama_dir, text_file
):
    base = runner.base(str(tiny_llama_dir)).model
    before = _state_hash(base)
    rtn = QuantizeRTN(bits=2)
    plain = runner.run(_spec(tiny_llama_dir, text_file, rtn)).metrics
    temp = runner.run(_spec(tiny_llama_dir, text_file, rtn, CalibrateDecoding(**_calib(text_file)))).metrics
    both = runner.run(
        _spec(tiny_llama_dir, text_file, rtn, CalibrateDecoding(**_calib(text_file, bias=True)))
    ).metrics
    assert both["calib_kl_after"] < temp["calib_kl_after"] <= temp["calib_kl_before"]
    assert temp["kl_mean"] <= plain["kl_mean"], "the temperature fit carries over to held-out text"
    assert _state_hash(base) == before


def test_calibration_before_a_truncating_sampler_only(runner, tiny_llama_dir, text_file):
    with pytest.raises(SpecError, match="before truncating"):
        runner.run(_spec(tiny_llama_dir, text_file, TopK(k=5), CalibrateDecoding(**_calib(text_file))))
    with pytest.raises(SpecError, match="original model"):
        apply_modifications(torch.nn.Linear(1, 1), 0, (CalibrateDecoding(),), ModContext())


@pytest.mark.parametrize("params", ["norm", "lora"])
def test_kl_distillation_lowers_the_kl_and_leaves_a_plain_model(runner, tiny_llama_dir, text_file, params):
    rtn = QuantizeRTN(bits=2)
    distill = KLDistill(steps=25, params=params, lr=1e-2, batch_size=2, **_calib(text_file))
    plain = runner.run(_spec(tiny_llama_dir, text_file, rtn)).metrics
    fixed = runner.run(_spec(tiny_llama_dir, text_file, rtn, distill)).metrics
    assert fixed["distill_kl_end"] < fixed["distill_kl_start"]
    assert fixed["kl_mean"] < plain["kl_mean"], "distillation on calibration text helps on held-out text"
    state = runner.modify(_spec(tiny_llama_dir, text_file, rtn, distill))
    hooks = [getattr(h, "__qualname__", "") for m in state.model.modules() for h in m._forward_hooks.values()]
    assert not any(name.startswith("LoRA") for name in hooks), (
        "LoRA hooks are removed (merged into the weights)"
    )
    assert not any(p.requires_grad for p in state.model.parameters())


def test_recovery_and_beyond_repair():
    before = {"kl_mean": 2.0, "ppl_ratio": 30.0}
    assert recovery(before, {"kl_mean": 1.9, "ppl_ratio": 25.0})["beyond_repair"] == 1.0
    r = recovery(before, {"kl_mean": 0.5, "ppl_ratio": 8.0})
    assert (
        r["recovered"] == pytest.approx(0.75) and r["beyond_repair"] == 0.0
    )  # back under the 10x collapse line
    assert (
        recovery(before, {"kl_mean": 0.5, "ppl_ratio": 12.0})["beyond_repair"] == 1.0
    )  # 75% back, still collapsed
    assert recovery({"kl_mean": 0.2, "ppl_ratio": 1.5}, {"kl_mean": 0.1, "ppl_ratio": 1.2}, "ppl_ratio")[
        "recovered"
    ] == (pytest.approx(0.6))
    assert not is_beyond_repair(3.0) and is_beyond_repair(11.0)
    # Half the KL recovered by flattening a collapsed model is no repair: still x1343 (smollm2 RTN w2 + T=10.1).
    assert recovery({"kl_mean": 14.5, "ppl_ratio": 3.4e6}, {"kl_mean": 7.3, "ppl_ratio": 1343.0})[
        "beyond_repair"
    ]


# -- command line ---------------------------------------------------------------------------------------


def test_new_kinds_are_usable_from_the_cli(tmp_path, monkeypatch, capsys, tiny_llama_dir, text_file):
    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    common = ["--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "256", "--window", "64"]
    common += ["--db", str(tmp_path / "cli.duckdb"), "--json"]
    assert (
        main(
            [
                "run",
                "--mod",
                "insert_identity:after=0+1",
                "--mod",
                "sampler:top_p=0.8,temperature=1.3",
                *common,
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["label"] == "identity after 0+1 → sampler T=1.3, top-p 0.8"
    assert out["metrics"]["kl_mean"] is None and out["metrics"]["kl_reverse_mean"] > 0
    assert main(["sweep", "--param", "top_k.k", "--values", "1,10", *common]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["spec"]["mods"][0]["k"] for r in rows] == [1, 10]
    assert rows[0]["metrics"]["mass_cut_mean"] > rows[1]["metrics"]["mass_cut_mean"]
    assert main(["mods", "--json"]) == 0
    kinds = {r["kind"] for r in json.loads(capsys.readouterr().out)}
    assert {
        "top_k",
        "top_p",
        "min_p",
        "repetition_penalty",
        "sampler",
        "duplicate_layers",
        "depth_upscale",
    } <= kinds
    assert {"insert_identity", "remove_layers", "calibrate_decoding", "kl_distill"} <= kinds
