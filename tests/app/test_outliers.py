"""Activation outliers : the per-layer summary and worst channels (pure, analytic numbers), the chart,
`hemlab outliers` on a tiny Llama (JSON contract, the same numbers as a direct measurement, a written chart), and
the Mitigate page's section driven headless to a chart."""

from __future__ import annotations

import json
import math
import os

import pandas as pd
import pytest
from dashboard_env import applied, make_env
from streamlit.testing.v1 import AppTest

from hemorrhage_core import charts
from hemorrhage_core.analysis.outliers import outlier_summary, records, worst, worst_channels
from hemorrhage_core.charts import MITIGATED, MODIFIED
from hemorrhage_core.cli import main

APP = os.path.join(os.path.dirname(__file__), "..", "..", "app.py")


def _stats() -> pd.DataFrame:
    """Two layers x two input groups of 8 channels. Layer 1's MLP input has channel 5 at 100x the rest (1.0), and
    after smoothing at 4x the rest (0.5); every other input is flat (ratio 1) at 2.0 in layer 0, 1.0 in
    layer 1."""
    rows = []
    for layer in (0, 1):
        for module in ("self_attn.q_proj,k_proj,v_proj", "mlp.down_proj"):
            for channel in range(8):
                outlier = layer == 1 and module == "mlp.down_proj" and channel == 5
                before = 100.0 if outlier else 2.0 - layer
                after = 2.0 if outlier else 0.5
                rows.append((layer, module, channel, before, after))
    return pd.DataFrame(rows, columns=["layer", "module", "channel", "max_abs_before", "max_abs_after"])


# -- the summaries (pure) ------------------------------------------------------------------------------------------


def test_one_channel_a_hundred_times_the_rest_gives_a_ratio_of_a_hundred():
    summary = outlier_summary(_stats())
    assert len(summary) == 4 and summary.channels.eq(8).all()
    row = summary[(summary.layer == 1) & (summary.module == "mlp.down_proj")].iloc[0]
    assert (row.max_before, row.median_before, row.ratio_before) == (100.0, 1.0, 100.0)
    assert (row.max_after, row.median_after, row.ratio_after) == (2.0, 0.5, 4.0)
    assert row.worst_channel == 5
    flat = summary.drop(row.name)
    assert flat.ratio_before.eq(1.0).all() and flat.ratio_after.eq(1.0).all()
    assert flat[flat.layer == 0].max_before.eq(2.0).all(), "a flat input's max is its level"


def test_a_dead_majority_has_no_ratio_rather_than_an_infinite_one():
    stats = _stats()
    stats.loc[(stats.layer == 0) & (stats.channel < 5), "max_abs_before"] = 0.0
    summary = outlier_summary(stats)
    assert summary[summary.layer == 0].ratio_before.isna().all()
    assert records(summary)[0]["ratio_before"] is None, "JSON gets null, not NaN"


def test_worst_channels_are_ranked_and_compared_with_their_own_inputs_median():
    top = worst_channels(_stats(), 3)
    assert top.iloc[0][["layer", "module", "channel"]].tolist() == [1, "mlp.down_proj", 5]
    assert top.iloc[0].x_median_before == 100.0 and top.iloc[0].x_median_after == 4.0
    assert top.max_abs_before.tolist() == [100.0, 2.0, 2.0]
    w = worst(_stats())
    assert (w.layer, w.module, w.channel, w.before, w.after) == (1, "mlp.down_proj", 5, 100.0, 2.0)
    assert worst(_stats().iloc[:0]) is None and outlier_summary(_stats().iloc[:0]).empty


# -- the chart -----------------------------------------------------------------------------------------------------


def test_chart_draws_layers_and_the_worst_inputs_channels_on_log_axes():
    fig = charts.activation_outliers_chart(_stats(), alpha=0.5, top_channels=3)
    title = fig.layout.title.text
    assert "α = 0.5" in title and "layer 1 mlp.down_proj channel 5: 100 → 2" in title
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"
    per_layer = [t for t in fig.data if t.xaxis == "x"]
    assert len(per_layer) == 4, "one before / after pair per module group"
    down_before = next(t for t in per_layer if t.name == "before · mlp.down_proj")
    assert list(down_before.x) == [0, 1] and list(down_before.y) == [2.0, 100.0]
    assert down_before.line.color == MODIFIED
    assert next(t for t in per_layer if t.name == "after · mlp.down_proj").line.color == MITIGATED
    channels = {t.name: t for t in fig.data if t.xaxis == "x2"}
    assert list(channels["before · layer 1 channels"].y) == [1.0] * 5 + [100.0] + [1.0] * 2
    assert list(channels["top 3 channels before"].text)[0] == "5", "the outlier channel is labelled first"
    assert "median channel before (1)" in channels, "the median channel is drawn for scale"
    # Log ranges cover every value (log10 of 0.5 .. 100, the 100 with room for its label).
    lo, hi = fig.layout.yaxis.range
    assert lo < math.log10(0.5) and hi > math.log10(100)
    assert fig.layout.yaxis2.range[1] > math.log10(250)


def test_chart_of_no_statistics_says_so():
    fig = charts.activation_outliers_chart(_stats().iloc[:0], alpha=0.5)
    assert "no activation statistics" in fig.layout.annotations[0].text


# -- hemlab outliers on a tiny Llama -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from dashboard_env import SENTENCE

    path = tmp_path_factory.mktemp("outliers") / "words.txt"
    words = SENTENCE.split()
    path.write_text(" ".join(words[i * 7 % len(words)] for i in range(3000)))
    return str(path)


def test_cli_json_matches_a_direct_measurement_and_writes_the_chart(
    tiny_llama_dir, corpus, tmp_path, monkeypatch, capsys
):
    from hemorrhage_core.modify.scaling import activation_outlier_stats
    from hemorrhage_core.runner import Runner
    from hemorrhage_core.specs import ProbeSettings, RunSpec
    from hemorrhage_core.store import Store

    monkeypatch.setenv("HEMLAB_CACHE", str(tmp_path / "cache"))
    html = tmp_path / "charts" / "outliers.html"
    argv = ["outliers", "--model", str(tiny_llama_dir), "--corpus", corpus, "--tokens", "256", "--window", "64",
            "--calib-samples", "4", "--calib-len", "64", "--alpha", "0.6", "--top", "3",
            "--db", str(tmp_path / "r.duckdb"), "--device", "cpu"]  # fmt: skip
    assert main([*argv, "--json", "--chart", str(html)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"model", "alpha", "calib_samples", "calib_len", "worst", "summary", "channels"} <= out.keys()
    assert out["alpha"] == 0.6 and len(out["channels"]) == 3
    # 2 blocks x 4 inputs (q/k/v, o_proj, gate/up, down_proj), each row with every summary column.
    assert len(out["summary"]) == 8 and {r["layer"] for r in out["summary"]} == {0, 1}
    assert set(out["summary"][0]) == {"layer", "module", "channels", "max_before", "median_before",
                                      "ratio_before", "max_after", "median_after", "ratio_after",
                                      "worst_channel"}  # fmt: skip
    # The same windows and numbers as measuring directly: the command adds nothing of its own.
    runner = Runner(Store(tmp_path / "direct.duckdb"), device="cpu")
    probe = ProbeSettings(corpus=corpus, tokens=256, window=64)
    windows = runner.calibration_windows(RunSpec(str(tiny_llama_dir), (), probe), corpus, 4, 64)
    direct = outlier_summary(
        activation_outlier_stats(runner.base(str(tiny_llama_dir)).model, windows, alpha=0.6)
    )
    got = pd.DataFrame(out["summary"])
    pd.testing.assert_frame_equal(got[direct.columns], direct, check_dtype=False)
    assert out["worst"]["before"] == pytest.approx(direct.max_before.max())
    assert html.stat().st_size > 10_000 and b"plotly" in html.read_bytes()[:200_000]

    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "worst channel: layer" in text and "max / median" in text
    assert main([*argv, "--chart", str(tmp_path / "x.jpg")]) == 2, "an unknown chart format is a user error"
    assert main([*argv, "--alpha", "1.5"]) == 2, "alpha outside [0, 1] is refused with SmoothQuant's message"


# -- the Mitigate page's section -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_env(tmp_path_factory, tiny_llama_dir):
    env = make_env(tmp_path_factory.mktemp("outliers-app"), tiny_llama_dir)
    with applied(env):
        yield env


def test_mitigate_page_measures_outliers_on_demand_and_keeps_them(app_env):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/mitigate.py").run()
    at.selectbox(key="mitigate.source").set_value("W8A8 static").run()
    assert not at.exception, [e.value for e in at.exception]
    section = next(e for e in at.expander if e.label.startswith("Activation outliers"))
    assert not section.get("plotly_chart"), "forward passes only on the button"
    at.number_input(key="outliers.samples").set_value(2)
    at.number_input(key="outliers.len").set_value(32)
    at.slider(key="outliers.alpha").set_value(0.8).run()
    at.button(key="outliers.measure").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    section = next(e for e in at.expander if e.label.startswith("Activation outliers"))
    figures = [json.loads(c.proto.spec) for c in section.get("plotly_chart")]
    assert len(figures) == 1 and "α = 0.8" in figures[0]["layout"]["title"]["text"]
    assert len(section.dataframe) == 2  # the per-layer summary and the largest channels
    # A rerun (another widget) keeps the measured result; a new α waits for the button again.
    at.run()
    assert len(next(e for e in at.expander if e.label.startswith("Activation")).get("plotly_chart")) == 1
    at.slider(key="outliers.alpha").set_value(0.3).run()
    assert not next(e for e in at.expander if e.label.startswith("Activation")).get("plotly_chart")
