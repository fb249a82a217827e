"""Slow: the quantization catalogue on smollm2-135m (2,048 news tokens, window 512), the checks behind the tables
in docs/quantization.md (measured with `bench/quant_table.py`, same specs and settings).

- GPTQ beats RTN at the same bits and group size, at 4 and 3 bits, in perplexity and in KL.
- Dynamic per-token activation scales and SmoothQuant recover most of the damage static per-tensor W8A8 does,
  and SmollM2's activations do have the outlier channels that explain it .
- AWQ-style searched scales recover part of weight-only RTN's damage at 3 and 4 bits .
- bitsandbytes LLM.int8() is near-lossless and NF4 beats FP4 at the same footprint.

Runs on a fresh results file unless HEMLAB_SLOW_DB names one (e.g. the bench's, to check its stored numbers);
the base reference is cached under data/cache like every run's. About 1 h on 2 busy cores, mostly GPTQ/AWQ
calibration (see docs/quantization.md for the runtime of each method).
"""

from __future__ import annotations

import logging
import os

import pytest

from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import (
    AWQ,
    GPTQ,
    ActQuant,
    Bnb4bit,
    BnbInt8,
    ProbeSettings,
    QuantizeRTN,
    RunSpec,
    SmoothQuant,
)
from hemorrhage_core.store import Store

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

MODEL = "smollm2-135m"
PROBE = ProbeSettings(corpus="news", tokens=2048)
CALIB = dict(calib_corpus="news", calib_samples=16, calib_len=512)  # as bench/quant_table.py


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    db = os.environ.get("HEMLAB_SLOW_DB") or tmp_path_factory.mktemp("slow-quant") / "quant.duckdb"
    return Runner(Store(db))


def _metrics(runner, *mods) -> dict[str, float]:
    result = runner.run(RunSpec(MODEL, mods, PROBE))
    m = result.metrics
    log.warning(
        "%-40s ppl %.2f (x%.3f) KL %.4f top-1 %.3f bits/w %.2f modify %.0fs profile %.0fs",
        result.spec.label(), m["ppl"], m["ppl_ratio"], m["kl_mean"], m["top1_agreement"],
        m.get("bits_per_weight", float("nan")), m["modify_s"], m["profile_s"],
    )  # fmt: skip
    return m


def _recovered(before: float, after: float) -> float:
    return (before - after) / before


@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_beats_rtn_at_the_same_bits_and_group_size(runner, bits):
    rtn = _metrics(runner, QuantizeRTN(bits=bits, granularity="group", group_size=128))
    gptq = _metrics(runner, GPTQ(bits=bits, group_size=128, **CALIB))
    assert gptq["bits_per_weight"] == pytest.approx(rtn["bits_per_weight"])
    assert gptq["ppl"] < rtn["ppl"], (gptq["ppl"], rtn["ppl"])
    assert gptq["kl_mean"] < 0.8 * rtn["kl_mean"], (gptq["kl_mean"], rtn["kl_mean"])


def test_smollm2_has_activation_outlier_channels_that_smoothing_tames(runner):
    from hemorrhage_core.modify.scaling import activation_outlier_stats

    windows = runner.calibration_windows(RunSpec(MODEL, (), PROBE), "news", 16, 512)
    stats = activation_outlier_stats(runner.base(MODEL).model, windows, alpha=0.5)
    assert stats.layer.nunique() == 30
    ratio_before = (
        stats.groupby("module").max_abs_before.max() / stats.groupby("module").max_abs_before.median()
    )
    ratio_after = stats.groupby("module").max_abs_after.max() / stats.groupby("module").max_abs_after.median()
    assert ratio_before.max() > 100  # massive activations: a few channels hundreds of times the typical one
    assert (ratio_after < ratio_before).all()


@pytest.mark.parametrize("w_bits", [8, 4])
def test_dynamic_scales_and_smoothing_recover_static_per_tensor_activation_quantization(runner, w_bits):
    static = _metrics(runner, ActQuant(w_bits=w_bits, a_bits=8, a_mode="static", **CALIB))
    dynamic = _metrics(runner, ActQuant(w_bits=w_bits, a_bits=8, a_mode="dynamic"))
    smoothed = _metrics(
        runner, SmoothQuant(alpha=0.5, **CALIB), ActQuant(w_bits=w_bits, a_bits=8, a_mode="static", **CALIB)
    )
    damage = static["ppl_ratio"] - 1
    assert _recovered(damage, dynamic["ppl_ratio"] - 1) > 0.5
    assert _recovered(static["kl_mean"], dynamic["kl_mean"]) > 0.5
    assert _recovered(damage, smoothed["ppl_ratio"] - 1) > 0.3
    assert _recovered(static["kl_mean"], smoothed["kl_mean"]) > 0.3


@pytest.mark.parametrize("bits", [4, 3])
def test_awq_scales_recover_part_of_weight_only_rtn_damage(runner, bits):
    rtn = _metrics(runner, QuantizeRTN(bits=bits, scheme="asym", granularity="group", group_size=128))
    awq = _metrics(runner, AWQ(bits=bits, group_size=128, **CALIB))
    assert _recovered(rtn["ppl_ratio"] - 1, awq["ppl_ratio"] - 1) > 0.1
    assert _recovered(rtn["kl_mean"], awq["kl_mean"]) > 0.1


def test_bitsandbytes_backends_on_a_real_model(runner):
    int8 = _metrics(runner, BnbInt8(threshold=6.0))
    nf4 = _metrics(runner, Bnb4bit(quant_type="nf4"))
    fp4 = _metrics(runner, Bnb4bit(quant_type="fp4"))
    assert int8["ppl_ratio"] < 1.05 and int8["bits_per_weight"] == pytest.approx(8 + 32 / 576, rel=0.05)
    assert nf4["bits_per_weight"] == fp4["bits_per_weight"] == pytest.approx(4.5)
    assert nf4["kl_mean"] < fp4["kl_mean"]
