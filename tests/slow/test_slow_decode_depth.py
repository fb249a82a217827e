"""Decoding, depth changes and decoding calibration on the real smollm2-135m: the paper's claims 8 and 9 and the
decoding-calibration mitigation. Minutes on 2 cores: `make test-slow` (add `-s` to see the tables).

Every number is measured against the original model (4-bit GGUF weights dequantized to fp32) on the first 2,048
tokens of the news corpus (4 windows of 512) and on 8 built-in prompts x 2 seeds x 32 generated tokens.
"""

import math
import os

import pandas as pd
import pytest

from hemorrhage_core.generation import GenerationSettings, generation_divergence
from hemorrhage_core.mitigation import recovery
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import (
    CalibrateDecoding,
    KLDistill,
    ProbeSettings,
    Prune,
    QuantizeRTN,
    RunSpec,
    Temperature,
)
from hemorrhage_core.specs.decode import MinP, RepetitionPenalty, Sampler, TopK, TopP
from hemorrhage_core.specs.depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers
from hemorrhage_core.store import Store

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m"
PROBE = ProbeSettings(corpus="news", tokens=2048, window=512)
SAMPLED = GenerationSettings(max_new_tokens=32, seeds=(0, 1))
GREEDY = GenerationSettings(max_new_tokens=32, sample=False)
PROFILE_COLS = [
    "ppl_ratio",
    "kl_mean",
    "kl_reverse_mean",
    "mass_cut_mean",
    "top1_agreement",
    "ece",
]
GEN_COLS = ["gen_matching_prefix_mean", "gen_identical_share", "gen_traj_kl_mean"]


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    # The default cache holds the prepared model and the base reference. Results go to a throwaway database,
    # or to HEMLAB_SLOW_DB when set, so a rerun reuses the stored profiles (generation is always recomputed).
    db = os.environ.get("HEMLAB_SLOW_DB") or tmp_path_factory.mktemp("slow") / "decode_depth.duckdb"
    return Runner(Store(db), device="cpu")


def _spec(*mods) -> RunSpec:
    return RunSpec(model=MODEL, mods=mods, probe=PROBE)


def _label(*mods) -> str:
    return _spec(*mods).label()


def _row(runner, mods, generation=SAMPLED) -> dict:
    spec = _spec(*mods)
    m = runner.run(spec).metrics
    row = {"setting": spec.label(), **{c: m.get(c, math.nan) for c in PROFILE_COLS}}
    if generation is not None:
        row.update({c: generation_divergence(runner, spec, settings=generation).summary[c] for c in GEN_COLS})
    row |= {k: v for k, v in m.items() if k.startswith(("calib_", "distill_", "beyond", "num_layers"))}
    # Printed as soon as measured (with -s), so a long session shows its numbers as it goes.
    print(
        " | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True
    )
    return row


def _show(title: str, rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows).set_index("setting")
    with pd.option_context(
        "display.width", 250, "display.max_columns", 30, "display.float_format", "{:.4g}".format
    ):
        print(f"\n== {title}\n{table}")
    return table


def test_decoding_settings_against_the_reference_setting(runner):
    """Claim 8, decoding half: higher temperature and tighter truncation make sampled generations diverge sooner."""
    settings = [
        (),
        (Temperature(0.7),),
        (Temperature(1.2),),
        (Temperature(1.5),),
        (Temperature(2.0),),
        (TopP(p=0.95),),
        (TopP(p=0.9),),
        (TopP(p=0.5),),
        (TopK(k=50),),
        (TopK(k=10),),
        (MinP(p=0.1),),
        (RepetitionPenalty(penalty=1.3),),
        (Sampler(temperature=0.7, top_p=0.9),),
    ]
    t = _show("decoding vs the original at T=1, no truncation", [_row(runner, mods) for mods in settings])
    assert t.loc["original", "kl_mean"] == 0 and t.loc["original", "gen_identical_share"] == 1.0
    prefix = t["gen_matching_prefix_mean"]
    assert prefix["T=2"] < prefix["T=1.5"] < prefix["T=1.2"] < prefix["original"]
    assert prefix["top-p 0.5"] < prefix["top-p 0.95"]
    assert (
        t.loc["top-p 0.5", "mass_cut_mean"]
        > t.loc["top-p 0.9", "mass_cut_mean"]
        > t.loc["top-p 0.95", "mass_cut_mean"]
    )
    assert math.isinf(t.loc["top-k 10", "kl_mean"]) and t.loc["top-k 10", "top1_agreement"] == 1.0
    assert t.loc["rep-penalty 1.3", "top1_agreement"] < 1.0


def test_stronger_compression_diverges_sooner(runner):
    """Claim 8, compression half: first divergent step falls as bits fall and sparsity rises (greedy and sampled)."""
    settings = [(QuantizeRTN(bits=b),) for b in (8, 6, 4, 3)] + [
        (Prune(sparsity=s),) for s in (0.1, 0.3, 0.5)
    ]
    rows = []
    for mods in settings:
        row = _row(runner, mods)
        greedy = generation_divergence(runner, _spec(*mods), settings=GREEDY).summary
        rows.append(row | {"greedy_matching_prefix": greedy["gen_matching_prefix_mean"]})
    t = _show("compression strength vs generation divergence", rows)
    for col in ("gen_matching_prefix_mean", "greedy_matching_prefix"):
        assert t.loc[_label(QuantizeRTN(bits=3)), col] < t.loc[_label(QuantizeRTN(bits=8)), col]
        assert t.loc[_label(Prune(sparsity=0.5)), col] < t.loc[_label(Prune(sparsity=0.1)), col]


def test_duplication_disturbs_attention_and_identity_does_not(runner):
    """Claim 9: layer duplication disturbs attention and raises perplexity; an identity block changes nothing."""
    settings = [
        (InsertIdentity(after=14),),
        (InsertIdentity(every=6),),
        (DuplicateLayers(start=12, end=16),),
        (DuplicateLayers(start=20, end=24),),
        (DepthUpscale(overlap=8),),
        (RemoveLayers(layers=15),),
        (RemoveLayers(layers="20+21+22+23"),),
    ]
    rows = []
    for mods in settings:
        spec = _spec(*mods)
        result = runner.run(spec)
        layers = result.layer_table()
        row = _row(runner, mods, GREEDY)
        row["attn_js_mean"] = result.metrics["attn_js_mean"]
        row["attn_js_max_layer"] = float(layers["attn_js_mean"].max())
        row["last_layer_rel_error"] = result.metrics["last_layer_rel_error"]
        rows.append(row)
    t = _show("depth changes (greedy generation)", rows)
    for label in ("identity after 14", "identity every 6"):
        assert t.loc[label, "kl_mean"] == 0 and t.loc[label, "attn_js_max_layer"] == 0
        assert t.loc[label, "ppl_ratio"] == 1.0 and t.loc[label, "gen_identical_share"] == 1.0
    for label in ("duplicate [12,16)", "duplicate [20,24)", "SOLAR upscale overlap 8"):
        assert t.loc[label, "ppl_ratio"] > 1.0 and t.loc[label, "attn_js_max_layer"] > 0.01
        assert t.loc[label, "gen_identical_share"] < 1.0


def test_decoding_calibration_recovery_and_beyond_repair(runner):
    """Decoding calibration: a fitted temperature against the unmitigated change, on held-out tokens; the per-token bias (49k
    parameters fitted on 2,048 calibration positions) once, on RTN w3, to show whether it generalises."""
    calib_t = CalibrateDecoding()
    damages = {
        "T=1.5 (decoding)": ((Temperature(1.5),), (calib_t,)),
        "RTN w3 channel": ((QuantizeRTN(bits=3),), (calib_t, CalibrateDecoding(bias=True, max_iter=30))),
        "magnitude 50%": ((Prune(sparsity=0.5),), (calib_t,)),
        "RTN w2 channel (collapsed)": ((QuantizeRTN(bits=2),), (calib_t,)),
    }
    rows, recovered = [], {}
    for name, (mods, fixes) in damages.items():
        before = _row(runner, mods)
        rows.append(before | {"setting": f"{name}"})
        for fix in fixes:
            after = _row(runner, (*mods, fix))
            rec = recovery(before, after)
            recovered[(name, fix.bias)] = rec
            rows.append(after | {"setting": f"{name} + {fix.label()}", "recovered_kl": rec["recovered"]})
            rows[-1]["recovered_ppl"] = recovery(before, after, "ppl_ratio")["recovered"]
            rows[-1]["beyond_repair"] = rec["beyond_repair"]
    _show("decoding calibration (held-out news tokens; calibration text from the corpus end)", rows)
    assert recovered[("T=1.5 (decoding)", False)]["recovered"] > 0.95, "a pure temperature change is undone"
    # The asserted setting: RTN w3, whose logits are mostly too flat (T fitted ~1.7); measured 16% of the KL.
    assert recovered[("RTN w3 channel", False)]["recovered"] > 0.05
    # magnitude 50% is reported, not asserted: its damage is a change of ranking that no temperature undoes
    # (measured: T = 1.07, 0.2% of the KL recovered).
    assert recovered[("RTN w2 channel (collapsed)", False)]["beyond_repair"] == 1.0


def test_kl_distillation_goes_further_than_temperature(runner):
    """Decoding calibration, the stronger variant: 100 steps of KL distillation (norms or LoRA) on RTN w3, profile only
    (generation divergence is measured by the calibration test)."""
    damage = (QuantizeRTN(bits=3),)
    before = _row(runner, damage, None)
    rows = [before]
    for fix in (
        (CalibrateDecoding(),),
        (KLDistill(steps=100, params="norm"),),
        (KLDistill(steps=100, params="lora", lr=5e-4),),
    ):
        after = _row(runner, (*damage, *fix), None)
        rows.append(after | {"recovered_kl": recovery(before, after)["recovered"]})
    t = _show("KL distillation vs temperature on RTN w3 channel", rows)
    assert (t["kl_mean"].iloc[1:] < t["kl_mean"].iloc[0]).all()
