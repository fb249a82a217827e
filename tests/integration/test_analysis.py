"""Analyses: thresholds on analytic curves, sweep summaries through the CLI and the store, and (on tiny models)
the cascade, per-module errors, attention maps, flips, the memory table and the claims report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tiny_runs import tiny_spec

from hemorrhage_core.analysis.thresholds import find_knee, thresholds

# ------------------------------------------------------------------------------------------------------------
# Thresholds and the knee on analytic curves
# ------------------------------------------------------------------------------------------------------------


def test_first_setting_over_each_level_in_severity_order_for_bits():
    bits = [8, 6, 5, 4, 3, 2]
    ratios = [1.001, 1.004, 1.02, 1.15, 2.6, 40.0]
    t = thresholds(bits, ratios)
    assert t.direction == "descending"  # fewer bits hurt more
    assert t.values == (8, 6, 5, 4, 3, 2)
    assert t.first_over == {"1.1": 4, "2": 3, "10": 2}
    assert t.robust_zone == (8, 6, 5)


def test_thresholds_ignore_input_order_and_find_ascending_knobs():
    sparsity = [0.7, 0.1, 0.5, 0.3]
    ratios = [12.0, 1.01, 1.5, 1.05]
    t = thresholds(sparsity, ratios)
    assert t.direction == "ascending"
    assert t.values == (0.1, 0.3, 0.5, 0.7)
    assert t.first_over == {"1.1": 0.5, "2": 0.7, "10": 0.7}
    assert t.robust_zone == (0.1, 0.3)


def test_levels_never_reached_and_zone_that_is_empty():
    t = thresholds([0.1, 0.2, 0.3], [1.0, 1.01, 1.05])
    assert t.first_over == {"1.1": None, "2": None, "10": None}
    assert t.robust_zone == (0.1, 0.2, 0.3)
    t = thresholds([0.1, 0.2, 0.3], [1.5, 3.0, 30.0])
    assert t.robust_zone == () and t.first_over["1.1"] == 0.1 and t.crossing["1.1"] is None


def test_crossing_interpolates_log_ratio_linearly_in_the_knob():
    # ln r grows linearly from ln 1 at 0 to ln 4 at 1: r crosses 2 exactly half-way.
    t = thresholds([0.0, 1.0], [1.0, 4.0], direction="ascending")
    assert t.crossing["2"] == pytest.approx(0.5)
    t = thresholds([8, 4], [1.0, 4.0], direction="descending")  # same curve, bits-style orientation
    assert t.crossing["2"] == pytest.approx(6.0)


def test_explicit_direction_overrides_auto():
    t = thresholds([1.0, 2.0, 3.0], [3.0, 1.5, 1.0], direction="ascending")
    assert t.direction == "ascending" and t.first_over["2"] == 1.0


@pytest.mark.parametrize("slope", [0.0, 0.05, 0.7])
def test_a_straight_line_in_log_ppl_has_no_knee(slope):
    x = np.arange(8.0)
    assert find_knee(x, slope * x) is None


def test_knee_of_an_exact_hinge_is_its_breakpoint():
    x = np.arange(10.0)
    y = 0.05 * x + 0.8 * np.maximum(x - 6, 0)
    k, knee = find_knee(x, y)
    assert k == 6 and knee.value == 6.0
    assert knee.slope_before == pytest.approx(0.05) and knee.slope_after == pytest.approx(0.85)


def test_knee_of_flat_then_exploding_bits_curve_in_knob_units():
    bits = [8, 7, 6, 5, 4, 3, 2]
    # ln ppl ratio flat to 5 bits, then grows 1.2 per bit lost: the knee is the last flat setting, 5 bits.
    ratios = [math.exp(max(0.0, 5 - b) * 1.2) for b in bits]
    t = thresholds(bits, ratios)
    assert t.knee is not None and t.knee.value == 5
    assert t.knee.slope_after == pytest.approx(1.2)


def test_knee_of_exponential_growth_sits_where_the_curve_bends():
    x = np.linspace(0, 1, 11)
    y = np.exp(6 * x) / 400  # convex everywhere: the hinge picks a bend in the upper half, never an endpoint
    k, knee = find_knee(x, y)
    assert 5 <= k <= 9
    assert knee.slope_after > 2 * max(knee.slope_before, 0)


def test_concave_curve_has_no_knee():
    x = np.arange(8.0)
    assert find_knee(x, np.sqrt(x)) is None  # growth slows down: not a knee


def test_two_points_have_no_knee_and_bad_inputs_are_refused():
    assert thresholds([4, 3], [1.2, 3.0]).knee is None
    with pytest.raises(ValueError, match="duplicated"):
        thresholds([4, 4], [1.0, 2.0])
    with pytest.raises(ValueError, match="direction"):
        thresholds([4, 3], [1.0, 2.0], direction="up")


def test_non_finite_ratio_counts_as_over_every_level():
    t = thresholds([0.2, 0.5, 0.9], [1.0, 1.3, float("nan")])
    assert t.first_over == {"1.1": 0.5, "2": 0.9, "10": 0.9}
    assert t.notes and "non-finite" in t.notes[0]
    json.dumps(t.to_dict(), allow_nan=True)


# ------------------------------------------------------------------------------------------------------------
# Sweeps end to end on a tiny model: stored points are reused, summaries are printed and stored
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentence_file(tmp_path_factory):
    """Sentences (capitalised, full stops) of the shared vocabulary: the cloze analyses need sentence ends."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "seven", "wizards", "quietly", "judge", "boxing", "matches", "and", "a", "calm", "river", "carries", "old", "leaves", "toward", "the", "distant", "sea"]  # fmt: skip
    rng = __import__("random").Random(0)
    sentences = []
    for _ in range(700):
        sentences.append(" ".join(rng.choice(words) for _ in range(rng.randint(6, 12))).capitalize() + ".")
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(" ".join(sentences))
    return str(path)


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """One reference cache for the module: tests share base references (each is built once)."""
    tmp = tmp_path_factory.mktemp("analysis")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEMLAB_CACHE", str(tmp / "cache"))
        yield tmp


def _cli_common(model_dir, sentence_file, db):
    return ["--model", str(model_dir), "--corpus", sentence_file, "--tokens", "256", "--window", "64",
            "--batch-size", "2", "--db", str(db), "--device", "cpu"]  # fmt: skip


def test_sweep_prints_and_stores_thresholds_and_reuses_stored_points(
    cache_env, capsys, tiny_llama_dir, sentence_file
):
    from hemorrhage_core.cli import build_parser, main
    from hemorrhage_core.cli.options import spec_from_args, sweep_specs
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    db = cache_env / "sweep.duckdb"
    assert not db.exists()
    common = _cli_common(tiny_llama_dir, sentence_file, db)
    argv = ["sweep", "--param", "quant_rtn.bits", "--values", "8,4,3,2", *common]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "thresholds: >1.1x at" in out and "robust zone" in out and "knee" in out
    stored = Store(db).sweeps()
    assert len(stored) == 1
    summary = stored[0]
    assert summary["param"] == "quant_rtn.bits" and [p["value"] for p in summary["points"]] == [8, 4, 3, 2]
    assert summary["thresholds"]["direction"] == "descending"
    ratios = [p["ppl_ratio"] for p in summary["points"]]
    first = summary["thresholds"]["first_over"]["1.1"]
    if first is not None:  # the stored threshold is the first setting, in falling bits, over 1.1x
        expected = next(v for v, r in zip([8, 4, 3, 2], ratios, strict=True) if r > 1.1)
        assert first == expected

    # The same sweep again: every point comes from the store, no model is loaded, and no second summary row.
    assert main([*argv, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and all(r["cached"] for r in rows)
    assert len(Store(db).sweeps()) == 1
    args = build_parser().parse_args(argv)
    fresh = Runner(Store(db), device="cpu")
    results = fresh.sweep(sweep_specs(args))
    assert all(r.cached for r in results) and fresh._models == {}, "stored points must not touch a model"
    assert spec_from_args(args).model == str(tiny_llama_dir)

    assert main([*argv, "--summary-json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert summaries[0]["sweep_id"] == summary["sweep_id"] and "knee" in summaries[0]["thresholds"]
    assert main(["thresholds", "--db", str(db)]) == 0
    assert "quant_rtn.bits" in capsys.readouterr().out


def test_sweep_over_two_models_gives_one_summary_each(
    cache_env, capsys, tiny_llama_dir, tiny_gpt2_dir, sentence_file
):
    from hemorrhage_core.cli import main

    db = cache_env / "two.duckdb"
    common = _cli_common(f"{tiny_llama_dir},{tiny_gpt2_dir}", sentence_file, db)
    assert main(["sweep", "--param", "prune.sparsity", "--values", "0.2,0.6", "--summary-json", *common]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["model"] for s in summaries] == [str(tiny_llama_dir), str(tiny_gpt2_dir)]
    assert all(s["thresholds"]["direction"] in ("ascending", "descending") for s in summaries)


# ------------------------------------------------------------------------------------------------------------
# The cascade in the profile: cascade ratio, logit lens, top-k attended-position overlap
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def runner(cache_env, tmp_path):
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.store import Store

    return Runner(Store(tmp_path / "r.duckdb"), device="cpu")


def test_identity_run_has_zero_lens_kl_full_overlap_and_no_cascade(runner, tiny_llama_dir, sentence_file):
    r = runner.run(tiny_spec(tiny_llama_dir, sentence_file))
    table = r.layer_table()
    assert (table.lens_kl == 0).all()
    assert (table.attn_topk_overlap == 1).all()
    assert "cascade_ratio" not in table.columns or table.cascade_ratio.isna().all()
    assert r.metrics["lens_positions"] == 16 * 2  # 4 windows in 2 batches, 16 lens positions per batch
    assert "cascade_growth" not in r.metrics


def test_a_decoding_only_chain_unembeds_no_lens_rows_and_reads_zero(
    runner, tiny_llama_dir, sentence_file, monkeypatch
):
    from hemorrhage_core.probes import profile
    from hemorrhage_core.specs import QuantizeRTN, Temperature

    calls = []
    real = profile.lens_kl
    monkeypatch.setattr(profile, "lens_kl", lambda *a: calls.append(a) or real(*a))
    r = runner.run(tiny_spec(tiny_llama_dir, sentence_file, Temperature(value=1.5)))
    assert r.metrics["kl_mean"] > 0  # the output distribution did change ...
    assert (r.layer_table().lens_kl == 0).all()  # ... but no residual stream did
    assert calls == []
    runner.run(tiny_spec(tiny_llama_dir, sentence_file, Temperature(value=1.5), QuantizeRTN(bits=4)))
    assert calls, "a weight change must still be read through the lens"


def test_cascade_ratio_is_the_ratio_of_consecutive_errors(runner, tiny_llama_dir, sentence_file):
    from hemorrhage_core.specs import QuantizeRTN

    r = runner.run(tiny_spec(tiny_llama_dir, sentence_file, QuantizeRTN(bits=3)))
    t = r.layer_table().sort_values("layer")
    e = t.hidden_rel_error.to_numpy()
    assert e[0] > 0
    assert t.cascade_ratio.iloc[1] == pytest.approx(e[1] / e[0])
    assert r.metrics["cascade_growth"] == pytest.approx(e[1] / e[0])  # two layers: one ratio
    assert (t.lens_kl > 0).all()


def test_logit_lens_at_the_last_layer_is_the_output_kl(runner, tiny_gpt2_dir, sentence_file):
    """Through the final norm and unembedding, the last block's residual stream *is* the output distribution, so
    the lens KL of the last layer equals the exact KL of the two models' outputs at the same positions (up to
    the fp16 storage of the reference's hidden states)."""
    import torch

    from hemorrhage_core.probes.lens import lens_rows
    from hemorrhage_core.probes.metrics import kl_full
    from hemorrhage_core.specs import Prune

    spec = tiny_spec(tiny_gpt2_dir, sentence_file, Prune(sparsity=0.5))
    r = runner.run(spec)
    lens_last = r.layer_table().sort_values("layer").lens_kl.iloc[-1]
    windows, _ = runner._inputs_for(spec, runner.corpus(sentence_file), None)
    base = runner.base(spec.model).model
    modified = runner.modify(spec).model
    kls = []
    for start in range(0, windows.shape[0], spec.probe.batch_size):
        ids = windows[start : start + spec.probe.batch_size]
        with torch.inference_mode():
            p = torch.log_softmax(base(input_ids=ids).logits[:, :-1].reshape(-1, base.config.vocab_size), -1)
            q = torch.log_softmax(
                modified(input_ids=ids).logits[:, :-1].reshape(-1, base.config.vocab_size), -1
            )
        rows = lens_rows(p.shape[0])
        kls.append(kl_full(p[rows], q[rows]))
    exact = float(torch.cat(kls).mean())
    assert exact > 0
    assert lens_last == pytest.approx(exact, rel=0.02)


def test_topk_overlap_counts_shared_attended_positions():
    import torch

    from hemorrhage_core.probes.profile import topk_overlap

    t = 8
    p = torch.tril(torch.ones(t, t))
    p = p / p.sum(-1, keepdim=True)
    p[5] = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05, 0.0, 0.0, 0.0])  # top-4 keys: 0, 1, 2, 3
    q = p.clone()
    q[5] = torch.tensor([0.5, 0.2, 0.0, 0.0, 0.05, 0.15, 0.0, 0.0])  # top-4 keys: 0, 1, 5, 4 -> 2 shared
    share = topk_overlap(p, q, k=4)
    assert torch.isnan(share[:4]).all()  # fewer than k+1 visible keys
    assert share[5] == 0.5 and share[4] == 1 and share[7] == 1


# ------------------------------------------------------------------------------------------------------------
# Per-module errors
# ------------------------------------------------------------------------------------------------------------


def _calib(model_dir, n=2, t=32):
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randint(5, 300, (n, t), generator=g)


def test_module_error_is_the_output_error_of_the_changed_weight_only(tiny_llama_dir):
    """Perturb one weight by dW: exactly one row, with out_error = ||dW X|| on the inputs that module saw."""
    import copy

    import torch

    from hemorrhage_core.analysis.modules import module_errors
    from hemorrhage_core.models import load_model

    base = load_model(str(tiny_llama_dir), device="cpu").model
    modified = copy.deepcopy(base)
    name = "model.layers.1.mlp.down_proj"
    target = dict(modified.named_modules())[name]
    delta = torch.randn_like(target.weight) * 0.01
    target.weight.data += delta
    calib = _calib(tiny_llama_dir)

    seen = []
    handle = dict(base.named_modules())[name].register_forward_hook(
        lambda m, i, o: seen.append(i[0].detach())
    )
    with torch.inference_mode():
        base(input_ids=calib, use_cache=False)
    handle.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])
    expected = float((x @ delta.T).norm())

    df = module_errors(base, modified, calib, batch_size=1)
    assert list(df.module) == [name] and df["rank"].tolist() == [1]
    assert df.out_error.iloc[0] == pytest.approx(expected, rel=1e-4)
    assert df.layer.iloc[0] == 1 and df.kind.iloc[0] == "down_proj"


def test_module_ranking_orders_by_relative_error_and_survives_the_store(
    runner, tiny_llama_dir, sentence_file
):
    from hemorrhage_core.analysis.modules import from_rows, rank_modules, to_rows
    from hemorrhage_core.specs import QuantizeRTN

    spec = tiny_spec(tiny_llama_dir, sentence_file, QuantizeRTN(bits=3))
    df = rank_modules(runner, spec, n=2, length=32)
    assert len(df) == 14  # 2 blocks x (q, k, v, o, gate, up, down); lm_head excluded by RTN's default
    assert df.rel_error.is_monotonic_decreasing and (df.rel_error > 0).all()
    runner.store.save_analysis("k", "module_errors", to_rows(df))
    back = from_rows(runner.store.analysis("k", "module_errors"))
    assert back.module.tolist() == df.module.tolist()
    assert back.rel_error.to_numpy() == pytest.approx(df.rel_error.to_numpy())


def test_identity_insertion_has_no_module_error_blocks_matched_through_the_layer_map(
    runner, tiny_llama_dir, sentence_file
):
    from hemorrhage_core.analysis.modules import counterpart_name, rank_modules
    from hemorrhage_core.specs import MODIFICATIONS

    if "insert_identity" not in MODIFICATIONS:
        pytest.skip("depth changes have not landed")
    spec = tiny_spec(tiny_llama_dir, sentence_file, MODIFICATIONS["insert_identity"](after=(0,)))
    assert counterpart_name("model.layers.1.mlp.up_proj", [0, 2]) == "model.layers.2.mlp.up_proj"
    assert counterpart_name("model.layers.1.mlp.up_proj", [0, None]) is None
    df = rank_modules(runner, spec, n=2, length=32)
    assert df.empty, df


def test_a_removed_block_ranks_as_the_block_and_float_noise_does_not_rank(
    runner, tiny_llama_dir, sentence_file
):
    from hemorrhage_core.analysis.modules import from_rows, rank_modules, to_rows
    from hemorrhage_core.specs import MODIFICATIONS

    if "remove_layers" not in MODIFICATIONS:
        pytest.skip("depth changes have not landed")
    spec = tiny_spec(tiny_llama_dir, sentence_file, MODIFICATIONS["remove_layers"](layers=(1,)))
    df = rank_modules(runner, spec, n=2, length=32)
    top = df.iloc[0]
    assert top["rank"] == 1 and top.module == "model.layers.1" and top.kind == "block (removed)", df
    assert top.rel_error > 1e-3, "skipping a block of a random model changes its stream"
    assert "lm_head" not in set(df.module), "an unchanged module is not ranked at float noise"
    ranked = df[df.comparable]
    assert list(ranked.kind) == ["block (removed)"], "the removed block's own Linears have no counterpart"
    runner.store.save_analysis("d", "module_errors", to_rows(df))
    back = from_rows(runner.store.analysis("d", "module_errors"))
    assert back.iloc[0].kind == "block (removed)" and back.iloc[0].layer == 1


def test_added_blocks_rank_by_what_they_write(runner, tiny_llama_dir, sentence_file):
    from hemorrhage_core.analysis.modules import rank_modules
    from hemorrhage_core.specs import MODIFICATIONS

    if "duplicate_layers" not in MODIFICATIONS:
        pytest.skip("depth changes have not landed")
    spec = tiny_spec(
        tiny_llama_dir, sentence_file, MODIFICATIONS["duplicate_layers"](start=0, end=1, times=1)
    )
    df = rank_modules(runner, spec, n=2, length=32)
    assert (df.kind == "block (added)").sum() == 1 and df.iloc[0].kind == "block (added)", df


# ------------------------------------------------------------------------------------------------------------
# Attention maps for a prompt
# ------------------------------------------------------------------------------------------------------------


def test_attention_view_of_an_unmodified_model_has_zero_difference(runner, tiny_llama_dir, sentence_file):
    from hemorrhage_core.analysis.attention import attention_view

    view = attention_view(
        runner, tiny_spec(tiny_llama_dir, sentence_file), "the quick brown fox jumps over the dog", 1
    )
    assert view.base.shape[0] == 4 and view.base.shape[1] == view.base.shape[2] == len(view.tokens)
    assert (view.diff == 0).all()
    assert (view.heads.js == 0).all() and (
        view.heads.topk_overlap[view.heads.topk_overlap.notna()] == 1
    ).all()
    assert len(set(view.labels)) == len(view.labels)  # unique axis labels


def test_attention_view_of_one_head_after_quantization(runner, tiny_gpt2_dir, sentence_file):
    import numpy as np

    from hemorrhage_core.analysis.attention import attention_view
    from hemorrhage_core.specs import QuantizeRTN

    spec = tiny_spec(tiny_gpt2_dir, sentence_file, QuantizeRTN(bits=2))
    view = attention_view(runner, spec, "a calm river carries old leaves toward the distant sea", 0, head=2)
    t = len(view.tokens)
    assert view.base.shape == view.modified.shape == (t, t)
    np.testing.assert_allclose(view.base.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(view.modified.sum(-1), 1, atol=1e-5)
    assert np.abs(view.diff).max() > 0 and (view.heads.js > 0).all()
    frame = view.to_frame()
    assert len(frame) == t * t and set(frame.columns) >= {
        "query_token",
        "key_token",
        "base",
        "modified",
        "diff",
    }
    with pytest.raises(ValueError, match="layer"):
        attention_view(runner, spec, "hello there", 7)


# ------------------------------------------------------------------------------------------------------------
# Flips on the built-in cloze set
# ------------------------------------------------------------------------------------------------------------


def test_cloze_set_is_deterministic_and_well_formed(sentence_file):
    from hemorrhage_core.analysis.flips import build_cloze
    from hemorrhage_core.corpora import load_corpus

    corpus = load_corpus(sentence_file)
    a = build_cloze(corpus, n_items=12, n_choices=4)
    b = build_cloze(corpus, n_items=12, n_choices=4)
    assert a == b and a.set_id == b.set_id
    assert build_cloze(corpus, n_items=12, seed=1).set_id != a.set_id
    for item in a.items:
        assert len(item.choices) == 4 and len(set(item.choices)) == 4
        # The context is the text right before the held-out word, in the second half of the corpus.
        at = corpus.text.find(f"{item.context} {item.choices[item.answer]}")
        assert at >= len(corpus.text) // 2 - len(item.context)


def test_flips_count_changed_correctness_both_ways():
    import torch

    from hemorrhage_core.analysis.flips import ClozeItem, ClozeSet, compare

    items = tuple(ClozeItem(context=f"c{i}", choices=("a", "b", "c"), answer=0) for i in range(4))
    cloze = ClozeSet("x", "sha", items, {})
    base = torch.tensor([[3.0, 1, 0], [3.0, 1, 0], [0.0, 3, 1], [0.0, 3, 1]])  # right, right, wrong, wrong
    mod = torch.tensor([[3.0, 1, 0], [0.0, 3, 1], [3.0, 1, 0], [0.0, 1, 3]])  # right, wrong, right, wrong(c)
    r = compare(cloze, base, mod)
    assert (r.accuracy_base, r.accuracy_modified) == (0.5, 0.5)  # accuracy flat ...
    assert (r.flips_right_to_wrong, r.flips_wrong_to_right) == (1, 1)  # ... while answers flip
    assert r.changed_choices == 3 and r.flip_rate == 0.5


def test_flip_report_of_the_original_model_has_no_flips(runner, tiny_llama_dir, sentence_file):
    from hemorrhage_core.analysis.flips import flip_report
    from hemorrhage_core.specs import QuantizeRTN

    same = flip_report(runner, tiny_spec(tiny_llama_dir, sentence_file), n_items=8)
    assert same.flips == 0 and same.changed_choices == 0 and same.accuracy_base == same.accuracy_modified
    hurt = flip_report(runner, tiny_spec(tiny_llama_dir, sentence_file, QuantizeRTN(bits=2)), n_items=8)
    assert hurt.accuracy_base == same.accuracy_base and hurt.n_items == 8
    assert 0 <= hurt.flip_rate <= 1


# ------------------------------------------------------------------------------------------------------------
# Quality against bytes of weights
# ------------------------------------------------------------------------------------------------------------


def test_memory_table_uses_reported_bytes_and_counts_the_original_at_16_bits(
    runner, tiny_llama_dir, sentence_file
):
    from hemorrhage_core.analysis.memory import memory_table, parameter_count, pareto_front
    from hemorrhage_core.specs import Prune, QuantizeRTN

    for mod in (QuantizeRTN(bits=4), QuantizeRTN(bits=8), Prune(sparsity=0.5)):
        runner.run(tiny_spec(tiny_llama_dir, sentence_file, mod))
    df = memory_table(runner.store, [str(tiny_llama_dir)])
    n = parameter_count(str(tiny_llama_dir))
    assert n == sum(p.numel() for p in runner.base(str(tiny_llama_dir)).model.parameters())
    original = df[df.label == "original (16-bit)"]
    assert len(original) == 1 and original.weight_bytes.iloc[0] == n * 2
    q4 = df[df.label.str.contains("w4")].iloc[0]
    q8 = df[df.label.str.contains("w8")].iloc[0]
    assert q4.bytes_source == "report" and q4.weight_bytes < q8.weight_bytes < n * 2
    pruned = df[df.family == "prune"].iloc[0]
    assert (
        pruned.weight_bytes == n * 2 and pruned.weight_bytes_sparse < n * 2
    )  # dense as stored; mask estimate
    assert df.bpb.notna().all() and (df.bpb > 0).all()
    front = pareto_front(df)
    assert front.weight_bytes.is_monotonic_increasing and front.bpb.is_monotonic_decreasing


# ------------------------------------------------------------------------------------------------------------
# Claims: verdicts follow the checks; the CLI writes the evidence table
# ------------------------------------------------------------------------------------------------------------


def test_claim_verdicts_follow_their_checks():
    from hemorrhage_core.analysis.claims import Check, ClaimResult

    r = ClaimResult(number=4, claim="c")
    assert r.verdict == "not testable"
    r.checks = [Check("a", True, "x1"), Check("b", True, "x2")]
    assert r.verdict == "holds"
    r.checks.append(Check("c", False, "x3"))
    assert r.verdict == "partly holds"
    r.checks = [Check("c", False, "x3")]
    assert r.verdict == "does not hold"
    assert ClaimResult(number=1, claim="c", testable=False, checks=r.checks).verdict == "not testable"


def test_claims_command_writes_the_evidence_table(cache_env, tmp_path, capsys, tiny_llama_dir):
    from hemorrhage_core.cli import main

    out = tmp_path / "claims.md"
    argv = ["claims", "--model", str(tiny_llama_dir), "--only", "9", "--tokens", "512", "--db",
            str(tmp_path / "c.duckdb"), "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["number"] == 9 and result["asserted"] is True
    identity = next(c for c in result["checks"] if c["statement"].startswith("identity"))
    assert identity["passed"], identity  # an identity block is exactly the identity on any model
    text = out.read_text()
    assert "| 9 |" in text and f"## Claim 9: {result['verdict']}" in text and "identity after 0+1" in text
