"""Remedies as chain rewrites, the recovered fraction, the before / after charts, and one remedy end to end
through the Runner on a tiny model."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
from tiny_runs import tiny_spec

from hemorrhage_core import charts, mitigation
from hemorrhage_core.charts import MITIGATED, MODIFIED, ORIGINAL
from hemorrhage_core.errors import SpecError
from hemorrhage_core.mitigation import CalibrationSet, Comparison, applicable, mitigate, recovered_fraction
from hemorrhage_core.runner import RunResult
from hemorrhage_core.specs import (
    AWQ,
    GPTQ,
    ActQuant,
    CalibrateDecoding,
    KLDistill,
    ProbeSettings,
    Prune,
    PruneBlocks,
    PruneChannels,
    PruneHeads,
    QuantizeRTN,
    RunSpec,
    SmoothQuant,
    Temperature,
)
from hemorrhage_core.specs.decode import TopK

SETTINGS = dict(corpus="news", corpus_sha256="abc", window=64, stride=64, tokens=256, code_version="2")


def _names(mods) -> list[str]:
    return [r.name for r in applicable(mods)]


# -- the recovered fraction ----------------------------------------------------------------------------------


def test_recovered_fraction_is_the_share_of_the_damage_removed():
    assert recovered_fraction(2.0, 0.5) == pytest.approx(0.75)
    assert recovered_fraction(2.0, 2.0) == 0.0
    assert recovered_fraction(1.0, 1.5) == pytest.approx(-0.5), "a remedy that hurts is negative"
    assert recovered_fraction(1.0, -0.1) == pytest.approx(1.1), "better than the original is above 1"
    for before in (
        0.0,
        -0.2,
        math.inf,
    ):  # nothing (finite) to recover: not applicable, never a division error
        assert math.isnan(recovered_fraction(before, 0.1))


def _frames(scale: float):
    layers = pd.DataFrame(
        [(layer, m, v * scale * (layer + 1)) for layer in range(3)
         for m, v in (("hidden_rel_error", 0.1), ("hidden_cosine", -0.01))],
        columns=["layer", "metric", "value"],
    )  # fmt: skip
    layers.loc[layers.metric == "hidden_cosine", "value"] += 1.0
    heads = pd.DataFrame(
        [(layer, h, "attn_js", scale * 0.01 * (layer + h + 1)) for layer in range(3) for h in range(4)],
        columns=["layer", "head", "metric", "value"],
    )
    edges = [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    counts = [10, 20, 30, 20, 10] if scale > 0.5 else [40, 30, 20, 10, 0]
    kl_hist = pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": counts})
    return layers, heads, kl_hist


def _result(
    mods, *, ppl_ratio: float, kl: float, top1: float = 0.9, scale: float = 1.0, **settings
) -> RunResult:
    """A run as the store returns it, with the metrics given (analytic numbers, not a measurement)."""
    layers, heads, kl_hist = _frames(scale)
    metrics = {"ppl_base": 20.0, "ppl": 20.0 * ppl_ratio, "ppl_ratio": ppl_ratio, "kl_mean": kl,
               "top1_agreement": top1}  # fmt: skip
    spec = RunSpec("tiny", tuple(mods), ProbeSettings(tokens=256, window=64))
    return RunResult(spec, "k", True, metrics, layers, heads, kl_hist, {**SETTINGS, **settings})


def _comparison(before=(3.0, 0.4), after=(1.5, 0.1)) -> Comparison:
    chain = (Prune(sparsity=0.5),)
    return Comparison(
        _result(chain, ppl_ratio=before[0], kl=before[1], top1=0.8),
        _result(mitigate(chain, ["gradient-aware pruning"]), ppl_ratio=after[0], kl=after[1], scale=0.4),
    )


def test_comparison_recovers_analytic_shares_and_tabulates_original_before_after():
    c = _comparison()
    assert c.recovered("ppl_ratio") == pytest.approx(0.75)  # damage 2 -> 0.5
    assert c.recovered("kl_mean") == pytest.approx(0.75)  # 0.4 -> 0.1 nats
    assert not c.beyond_repair
    t = c.table()
    assert t["model"].tolist() == ["original", "before", "after"]
    assert t["perplexity"].tolist() == pytest.approx([20.0, 60.0, 30.0])
    assert t["perplexity ratio"].tolist() == pytest.approx([1.0, 3.0, 1.5])
    assert t["KL mean (nats)"].tolist() == pytest.approx([0.0, 0.4, 0.1])
    assert t["top-1 agreement"].tolist() == pytest.approx([1.0, 0.8, 0.9])
    assert t["recovered (perplexity)"].iloc[2] == pytest.approx(0.75)
    assert t["recovered (perplexity)"].iloc[:2].isna().all()
    assert t["chain"].iloc[2] == "gblm 50%"


def test_undamaged_chain_recovers_nan_and_collapse_is_beyond_repair():
    c = _comparison(before=(1.0, 0.0), after=(1.0, 0.0))
    assert math.isnan(c.recovered("ppl_ratio")) and math.isnan(c.recovered("kl_mean"))
    assert not c.beyond_repair
    assert _comparison(before=(80.0, 5.0), after=(60.0, 4.8)).beyond_repair  # 4% of the KL, still x60
    assert _comparison(before=(80.0, 5.0), after=(60.0, 2.5)).beyond_repair  # half the KL back, still x60
    assert not _comparison(before=(80.0, 5.0), after=(9.0, 4.8)).beyond_repair  # back under x10
    with pytest.raises(SpecError, match="ppl_ratio or kl_mean"):
        c.recovered("top1_agreement")


def test_before_and_after_must_share_model_and_tokens():
    before = _result((Prune(),), ppl_ratio=2.0, kl=0.1)
    with pytest.raises(SpecError, match="different tokens"):
        Comparison(before, _result((Prune(method="gblm"),), ppl_ratio=1.5, kl=0.1, corpus_sha256="other"))
    other = dataclasses.replace(before, spec=RunSpec("elsewhere", before.spec.mods, before.spec.probe))
    with pytest.raises(SpecError, match="one model"):
        Comparison(before, other)


# -- remedies ------------------------------------------------------------------------------------------------


def test_gradient_aware_pruning_swaps_scores_at_the_same_sparsity():
    assert _names((Prune(sparsity=0.5),)) == ["gradient-aware pruning", "KL distillation (norms)",
                                               "decoding calibration"]  # fmt: skip
    wanda = Prune(sparsity=0.5, pattern="2:4", method="wanda", calib_corpus="bible", calib_samples=8)
    (new,) = mitigate((wanda,), ["gradient-aware pruning"], CalibrationSet("wiki", 4, 64))
    assert new == dataclasses.replace(wanda, method="gblm"), "Wanda's own calibration set is kept"
    (new,) = mitigate((Prune(sparsity=0.6),), ["gradient-aware pruning"], CalibrationSet("wiki", 4, 64))
    assert (new.method, new.sparsity, new.calib_corpus, new.calib_samples, new.calib_len) == (
        "gblm",
        0.6,
        "wiki",
        4,
        64,
    )
    heads = PruneHeads(fraction=0.5, unit="kv")
    (new,) = mitigate((heads,), ["gradient-aware pruning"])
    assert new == dataclasses.replace(heads, importance="taylor")
    for done in (
        Prune(method="sparsegpt"),
        Prune(method="gblm"),
        PruneChannels(importance="taylor"),
        PruneBlocks(),
    ):
        assert "gradient-aware pruning" not in _names((done,)), done.label()
    assert "gradient-aware pruning" not in _names((QuantizeRTN(bits=3),))


def test_dynamic_scaling_keeps_bits_and_groups():
    static = ActQuant(w_bits=4, a_bits=8, a_mode="static")
    assert mitigate((static,), ["dynamic quantization scaling"]) == (
        dataclasses.replace(static, a_mode="dynamic"),
    )
    rtn = QuantizeRTN(bits=3, scheme="asym", granularity="group", group_size=64)
    assert mitigate((rtn,), ["dynamic quantization scaling"]) == (AWQ(bits=3, group_size=64, scheme="asym"),)
    (awq,) = mitigate((QuantizeRTN(bits=4),), ["dynamic quantization scaling"])
    assert (awq.bits, awq.group_size, awq.scheme) == (4, -1, "sym"), "per channel is AWQ's group_size -1"
    # No AWQ grid matches these at the same compression; GPTQ and dynamic scales need no rescue.
    for other in (QuantizeRTN(granularity="tensor"), QuantizeRTN(include_lm_head=True), GPTQ(), ActQuant()):
        assert "dynamic quantization scaling" not in _names((other,)), other.label()


def test_each_remedy_says_which_method_it_runs():
    rtn = (QuantizeRTN(bits=4, granularity="group", group_size=128),)
    assert mitigation.what_runs("dynamic quantization scaling", rtn).startswith("AWQ w4")
    assert mitigation.what_runs("decoding calibration", rtn) == "calibrate T"
    assert mitigation.what_runs("gradient-aware pruning", rtn) == "", "does not apply: says nothing"


def test_smoothquant_is_prepended_to_each_activation_quantizer_once():
    chain = (Prune(sparsity=0.3), ActQuant(a_mode="static"))
    smoothed = mitigate(chain, ["SmoothQuant migration"], CalibrationSet("bible"))
    assert [m.kind for m in smoothed] == ["prune", "smoothquant", "act_quant"]
    assert smoothed[1] == SmoothQuant(calib_corpus="bible")
    assert "SmoothQuant migration" not in _names(smoothed)
    assert "SmoothQuant migration" not in _names((QuantizeRTN(),))


def test_distillation_follows_the_weights_and_calibration_comes_last():
    chain = (Prune(sparsity=0.5), QuantizeRTN(bits=4), Temperature(1.5))
    out = mitigate(chain, ["decoding calibration", "KL distillation (norms)"], CalibrationSet("wiki", 4, 64))
    assert [m.kind for m in out] == ["prune", "quant_rtn", "kl_distill", "temperature", "calibrate_decoding"]
    assert out[2] == KLDistill(params="norm", calib_corpus="wiki", calib_samples=4, calib_len=64)
    assert out[4] == CalibrateDecoding(calib_corpus="wiki", calib_samples=4, calib_len=64)
    assert _names((Temperature(2.0),)) == ["decoding calibration"], "nothing to distil without weight changes"
    assert _names((QuantizeRTN(bits=4), TopK(k=40))) == [
        "dynamic quantization scaling",
        "KL distillation (norms)",
    ]
    assert _names(()) == []
    assert _names(out) == ["gradient-aware pruning", "dynamic quantization scaling"], (
        "each remedy applies once"
    )


def test_mitigate_applies_remedies_in_a_fixed_order_and_refuses_what_does_not_apply():
    chain = (Prune(sparsity=0.5), ActQuant(a_mode="static"))
    names = [
        "decoding calibration",
        "dynamic quantization scaling",
        "SmoothQuant migration",
        "gradient-aware pruning",
    ]
    out = mitigate(chain, names)
    assert out == mitigate(chain, names[::-1])
    assert [m.kind for m in out] == ["prune", "smoothquant", "act_quant", "calibrate_decoding"]
    assert out[0].method == "gblm" and out[2].a_mode == "dynamic"
    RunSpec.from_dict(RunSpec("m", out).to_dict())  # an ordinary, serialisable chain
    with pytest.raises(SpecError, match="unknown remedy"):
        mitigate(chain, ["prayer"])
    with pytest.raises(SpecError, match="at least one"):
        mitigate(chain, [])
    with pytest.raises(SpecError, match="does not apply"):
        mitigate((QuantizeRTN(),), ["gradient-aware pruning"])
    assert list(mitigation.REMEDIES) == [
        "gradient-aware pruning", "SmoothQuant migration", "dynamic quantization scaling",
        "KL distillation (norms)", "decoding calibration",
    ]  # fmt: skip


# -- charts --------------------------------------------------------------------------------------------------


def test_recovery_bars_draw_original_before_after_with_the_recovered_share():
    fig = charts.recovery_bars(_comparison())
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2
    for bar in bars:
        assert list(bar.x) == ["original", "before", "after"]
        assert list(bar.marker.color) == [ORIGINAL, MODIFIED, MITIGATED]
    assert list(bars[0].y) == pytest.approx([1.0, 3.0, 1.5]) and list(bars[1].y) == pytest.approx(
        [0.0, 0.4, 0.1]
    )
    titles = [a.text for a in fig.layout.annotations]
    assert any("recovered 75%" in t and "perplexity" in t for t in titles)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type != "log", "KL of the original is 0"
    undamaged = charts.recovery_bars(_comparison(before=(1.0, 0.0), after=(1.0, 0.0)))
    assert any("recovered n/a" in a.text for a in undamaged.layout.annotations)


def test_before_after_overlays_use_modified_and_mitigated_colours():
    c = _comparison()
    cascade = charts.cascade_chart(c.layers(), ["hidden_rel_error", "hidden_cosine"])
    colours = {t.name: t.line.color for t in cascade.data}
    assert colours == {"before (unmitigated)": MODIFIED, "after (mitigated)": MITIGATED}
    kl = charts.kl_overlay_chart(c.kl_hist())
    assert [t.marker.color for t in kl.data] == [MODIFIED, MITIGATED]
    for trace in kl.data:
        assert sum(trace.y) == pytest.approx(1.0), "shares of tokens"
    assert kl.layout.barmode == "group"


def test_attention_pair_shares_one_colour_scale():
    fig = charts.attention_pair_heatmap(_comparison().heads())
    maps = [t for t in fig.data if t.type == "heatmap"]
    assert len(maps) == 2 and all(t.coloraxis == "coloraxis" for t in maps)
    assert fig.layout.coloraxis.cmin == 0
    assert fig.layout.coloraxis.cmax == pytest.approx(0.06), "the larger of both peaks (before: 0.01 * 6)"
    assert [a.text for a in fig.layout.annotations] == ["before (unmitigated)", "after (mitigated)"]
    assert "no per-head" in charts.attention_pair_heatmap(pd.DataFrame()).layout.annotations[0].text


# -- end to end on a tiny model ------------------------------------------------------------------------------


def _run(runner, model, text_file, mods):
    return runner.run(tiny_spec(model, text_file, *mods))


def test_decoding_calibration_undoes_a_temperature_end_to_end(runner, tiny_llama_dir, text_file):
    chain = (Temperature(0.4),)  # sharpening a (random) tiny model raises its perplexity and its KL
    mitigated = mitigate(chain, ["decoding calibration"], CalibrationSet(text_file, 4, 64))
    c = Comparison(
        _run(runner, tiny_llama_dir, text_file, chain), _run(runner, tiny_llama_dir, text_file, mitigated)
    )
    # The fit acts on the already tempered logits z / 0.4: it undoes the temperature with T = 1 / 0.4.
    assert c.before.metrics["ppl_ratio"] > 1.05
    assert c.after.metrics["calib_temperature"] == pytest.approx(1 / 0.4, rel=0.05)
    assert c.recovered("kl_mean") > 0.95 and c.recovered("ppl_ratio") > 0.9
    assert not c.beyond_repair
    assert set(c.layers().run) == {"before (unmitigated)", "after (mitigated)"}


def test_gradient_aware_pruning_runs_through_the_runner(runner, tiny_llama_dir, text_file):
    chain = (Prune(sparsity=0.5),)
    mitigated = mitigate(chain, ["gradient-aware pruning"], CalibrationSet(text_file, 4, 64))
    c = Comparison(
        _run(runner, tiny_llama_dir, text_file, chain), _run(runner, tiny_llama_dir, text_file, mitigated)
    )
    assert c.after.spec.mods[0].method == "gblm"
    assert c.after.metrics["achieved_sparsity"] == pytest.approx(c.before.metrics["achieved_sparsity"])
    assert math.isfinite(c.recovered("kl_mean")) and len(c.table()) == 3


def test_cli_mitigate_measures_before_and_each_remedy(
    tmp_path, monkeypatch, capsys, tiny_llama_dir, text_file
):
    from hemorrhage_core.cli import main

    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    argv = ["mitigate", "--model", str(tiny_llama_dir), "--corpus", text_file, "--tokens", "256", "--window", "64",
            "--batch-size", "2", "--db", str(tmp_path / "m.duckdb"), "--device", "cpu", "--mod", "temperature:value=0.4",
            "--calib-samples", "4", "--calib-len", "64"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["before"]["spec"]["mods"][0]["kind"] == "temperature"
    (fix,) = out["mitigations"]  # a decoding-only chain: decoding calibration is the one remedy that applies
    assert fix["remedies"] == ["decoding calibration"]
    assert fix["recovered_kl"] > 0.95 and fix["beyond_repair"] is False
    assert main(argv) == 0  # stored: the table again, from the store
    text = capsys.readouterr().out
    assert "+ decoding calibration" in text and "recovered: perplexity" in text
    assert main([*argv, "--remedy", "gradient-aware pruning"]) == 2  # no pruning to repair: a clear error
    assert "does not apply" in capsys.readouterr().err


# -- the report's summary -------------------------------------------------------------------------------------


def test_report_summary_finds_the_mitigation_pair_the_sweep_and_says_a_verdict():
    from hemorrhage_core import report_summary

    chain = (Prune(sparsity=0.5),)
    before = _result(chain, ppl_ratio=3.0, kl=0.4, top1=0.8)
    after = _result(mitigate(chain, ["gradient-aware pruning"]), ppl_ratio=1.5, kl=0.1)
    sweep = [
        _result((QuantizeRTN(bits=b),), ppl_ratio=r, kl=0.01) for b, r in ((8, 1.0), (6, 1.05), (4, 1.8))
    ]
    names = ["magnitude 50%", "gblm 50%", "w8", "w6", "w4"]
    s = report_summary.summarise([before, after, *sweep], names)
    assert [c.level for c in s.changes] == [
        "serious damage",
        "noticeable damage",
        "robust",
        "robust",
        "noticeable damage",
    ]
    (rec,) = s.recoveries
    assert rec.before == "magnitude 50%" and rec.remedies == ("gradient-aware pruning",)
    assert rec.ppl_recovered == pytest.approx(0.75)
    (sweep_line,) = s.thresholds
    assert "robust down to 6 bits" in sweep_line and "between 6 and 4" in sweep_line
    assert s.verdict.startswith("Of 5 runs, 2 stay robust") and "recovered 75%" in s.verdict


def test_report_summary_of_one_sampler_run_explains_the_infinite_ratio():
    from hemorrhage_core import report_summary

    run = _result((TopK(k=5),), ppl_ratio=math.inf, kl=math.inf)
    s = report_summary.summarise([run], ["top-k 5"])
    assert s.changes[0].level == "∞ by definition"
    assert "∞ by definition" in s.verdict
