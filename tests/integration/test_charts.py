"""Every chart function (tidy DataFrame -> Figure) and every export: real kaleido PNG/SVG/PDF (Debian's chromium),
standalone HTML, and the one-click report (HTML and PDF) built from real runs of a tiny model."""

from __future__ import annotations

import re
import shutil
import struct

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from hemorrhage_core import charts, report
from hemorrhage_core.charts import FAMILY_COLORS, MODIFIED, ORIGINAL
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings, Prune, QuantizeRTN, RunSpec
from hemorrhage_core.store import Store

HAS_CHROME = report.find_chrome() is not None
needs_chrome = pytest.mark.skipif(not HAS_CHROME, reason="kaleido and PDF printing need Debian's chromium")


def _layers(runs=(("w8", "quant"), ("w3", "quant"), ("50%", "prune"))) -> pd.DataFrame:
    rows = []
    for i, (run, fam) in enumerate(runs):
        for layer in range(4):
            err = 0.01 * (i + 1) * (layer + 1)
            rows += [(run, fam, layer, "hidden_rel_error", err), (run, fam, layer, "hidden_cosine", 1 - err / 2),
                     (run, fam, layer, "hidden_sqnr_db", -20 * np.log10(err))]  # fmt: skip
    return pd.DataFrame(rows, columns=["run", "family", "layer", "metric", "value"])


def _heads(value=lambda layer, head: 0.01 * (layer + 1) * (head + 1)) -> pd.DataFrame:
    rows = [(layer, head, m, value(layer, head)) for layer in range(3) for head in range(4)
            for m in ("attn_js", "attn_entropy_shift")]  # fmt: skip
    return pd.DataFrame(rows, columns=["layer", "head", "metric", "value"])


def _hist() -> pd.DataFrame:
    edges = [0.0, *np.logspace(-6, 2, 9)]
    return pd.DataFrame({"bin_lo": edges[:-1], "bin_hi": edges[1:], "count": [5, 10, 20, 40, 20, 4, 1, 0, 0]})


def _titles(fig: go.Figure) -> str:
    layout = fig.to_plotly_json()["layout"]
    return " | ".join(
        str(v.get("title", {}).get("text", "")) for k, v in layout.items() if k.startswith(("xaxis", "yaxis"))
    )


# -- the visual language -------------------------------------------------------------------------------------


def test_run_styles_keep_family_colours_and_tell_runs_apart():
    styles = charts.run_styles(["w8", "w3", "50%"], ["quant", "quant", "prune"])
    assert styles["50%"][0] == FAMILY_COLORS["prune"]
    assert styles["w8"] != styles["w3"], "two runs of one family differ in shade and dash"
    assert charts.run_styles(["only"]) == {"only": (MODIFIED, "solid")}, "a lone run is 'the modified model'"


def test_perplexity_chart_is_blue_original_red_modified_on_a_log_axis():
    fig = charts.perplexity_chart({"ppl_base": 30.0, "ppl": 900.0})
    assert list(fig.data[0].marker.color) == [ORIGINAL, MODIFIED]
    assert fig.layout.yaxis.type == "log" and "perplexity" in fig.layout.yaxis.title.text


def test_layer_charts_overlay_every_run_with_units():
    layers = _layers()
    fig = charts.layer_loss_chart(layers)
    assert len(fig.data) == 2 * 3, "relative error and cosine for each of three runs"
    assert "‖h′−h‖/‖h‖" in _titles(fig) and "layer" in _titles(fig)
    cascade = charts.cascade_chart(layers)
    assert {t.name for t in cascade.data} == {"w8", "w3", "50%"}
    assert "dB" in _titles(cascade)
    panels = [cascade.layout[a] for a in cascade.layout if a.startswith("yaxis")]
    assert panels and all(p.exponentformat == "e" for p in panels), "tiny values as 4e-7, not SI's 400n"
    assert charts.cascade_chart(layers.iloc[:0]).layout.annotations[0].text.startswith("no per-layer rows")


def test_attention_heatmap_grid_matches_layers_and_heads():
    heads = _heads()
    fig = charts.attention_heatmap(heads)
    z = np.array(fig.data[0].z)
    assert z.shape == (3, 4) and z[2, 3] == pytest.approx(0.12)
    assert fig.data[0].zmin == 0
    shift = charts.attention_heatmap(heads, "attn_entropy_shift")
    assert shift.data[0].zmid == 0, "entropy shift is signed: diverging colours centred at 0"


def test_heatmap_cells_are_clickable_and_the_inspected_one_is_outlined():
    fig = charts.attention_heatmap(_heads(), clickable=True, highlight=(2, 1))
    cells = fig.data[1]
    assert cells.type == "scatter" and len(cells.x) == 12, "one (invisible) marker per layer x head cell"
    assert cells.hoverinfo != "skip", "skipped hover would also drop the clicks"
    box = [s for s in fig.layout.shapes if s.type == "rect"][0]
    assert (box.x0, box.x1, box.y0, box.y1) == (0.5, 1.5, 1.5, 2.5)


def test_unmodified_attention_reads_as_zero_not_as_mid_scale():
    fig = charts.attention_heatmap(_heads(lambda layer, head: 0.0))
    assert fig.data[0].zmin == 0 and fig.data[0].zmax > 0


def test_attention_maps_put_tokens_on_both_axes_and_centre_the_difference():
    base = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]
    mod = base.copy()
    mod[3] = [0.7, 0.1, 0.1, 0.1]
    fig = charts.attention_maps_chart(base, mod, ["The", " cat", " sat", "."], layer=1, head=2)
    assert len(fig.data) == 3 and list(fig.data[0].x) == ["0:The", "1: cat", "2: sat", "3:."]
    diff = np.array(fig.data[2].z)
    assert diff[3, 0] == pytest.approx(0.45) and fig.data[2].zmid == 0
    assert "layer 1, head 2" in fig.layout.title.text


def test_kl_distribution_and_cdf_are_shares_that_reach_one():
    fig = charts.kl_distribution_chart(_hist(), {"kl_mean": 0.01, "kl_p99": 0.5})
    assert sum(fig.data[0].y) == pytest.approx(1.0)
    assert fig.data[0].x[0] == "1e-6" and "nats" in fig.layout.xaxis.title.text
    cdf = charts.kl_cdf_chart(_hist().assign(run="a", family="quant"))
    assert cdf.data[0].y[-1] == pytest.approx(1.0) and cdf.layout.xaxis.type == "log"
    assert all(np.diff(cdf.data[0].y) >= 0)


def test_metric_bars_use_log_for_ratios_and_percent_for_agreement():
    runs = pd.DataFrame({"label": ["w8", "w2"], "family": ["quant", "quant"], "model": ["m", "m"],
                         "ppl_ratio": [1.01, 40.0], "kl_mean": [0.001, 2.0], "top1_agreement": [0.99, 0.3]})  # fmt: skip
    fig = charts.metric_bars_chart(runs)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis3.tickformat == ".0%"
    assert any(s.y0 == 1.0 for s in fig.layout.shapes), "the original's ratio of 1 is marked"


def _sweep() -> pd.DataFrame:
    return pd.DataFrame({"series": ["rtn"] * 5, "x": [8, 6, 4, 3, 2], "ppl_ratio": [1.0, 1.02, 1.2, 3.0, 80.0],
                         "family": ["quant"] * 5})  # fmt: skip


def test_sweep_chart_draws_thresholds_zone_and_knee_with_bits_reversed():
    fig = charts.sweep_chart(_sweep(), "x", x_label="bits", zones={"rtn": (8, 6)}, knees={"rtn": 4})
    lines = sorted(s.y0 for s in fig.layout.shapes if s.type == "line" and s.y0 == s.y1)
    assert lines == [1.0, 1.1, 2.0, 10.0]
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 1 and {rects[0].x0, rects[0].x1} == {8, 6}
    assert any(s.type == "line" and s.x0 == 4 and s.x1 == 4 for s in fig.layout.shapes), "the knee"
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.autorange == "reversed"
    sparsity = charts.sweep_chart(_sweep().assign(x=[0.1, 0.2, 0.3, 0.4, 0.5]), "x", x_label="sparsity")
    assert sparsity.layout.xaxis.autorange is True


def test_paper_overlay_tells_the_papers_methods_apart_by_colour():
    from hemorrhage_core import paper

    rows, _ = paper.normalised("quant")
    overlay = charts.paper_overlay_chart(rows, pd.DataFrame(columns=["series", "x", "ratio", "family"]),
                                         x_label="bits", title="t")  # fmt: skip
    colours = [t.line.color for t in overlay.data if t.name.startswith("paper")]
    assert len(colours) >= 5 and len(set(colours)) == len(colours), colours


def test_sweep_chart_shades_a_one_setting_robust_zone_visibly():
    fig = charts.sweep_chart(_sweep(), "x", x_label="bits", zones={"rtn": (8, 8)})
    (rect,) = [s for s in fig.layout.shapes if s.type == "rect"]
    assert rect.x1 - rect.x0 > 0, "a zone of one setting is still a visible band"


def test_quality_memory_chart_places_runs_by_bytes():
    pts = pd.DataFrame({"label": ["w8", "w4"], "memory_mb": [300.0, 160.0], "ppl_ratio": [1.0, 1.3],
                        "family": ["quant", "quant"], "series": ["rtn", "rtn"]})  # fmt: skip
    fig = charts.quality_memory_chart(pts)
    assert list(fig.data[0].x) == [160.0, 300.0] and "MB" in fig.layout.xaxis.title.text


def test_paper_charts_and_overlay_keep_ours_distinct():
    from hemorrhage_core import paper

    rows, _ = paper.normalised("quant")
    fig = charts.paper_chart(rows, x_label="weight bits", title="quant", reverse_x=True)
    assert {t.name for t in fig.data} >= {"GPTQ", "AWQ", "GGUF"} and fig.layout.yaxis.type == "log"
    ours = pd.DataFrame(
        {"series": ["m · rtn"] * 2, "x": [8, 4], "ratio": [1.0, 1.4], "family": ["quant"] * 2}
    )
    overlay = charts.paper_overlay_chart(rows, ours, x_label="bits", title="t")
    mine = [t for t in overlay.data if t.name.startswith("ours")]
    assert len(mine) == 1 and mine[0].line.width == 3 and mine[0].line.color == FAMILY_COLORS["quant"]
    assert all(t.line.width < 3 for t in overlay.data if t.name.startswith("paper"))


def test_decoding_heatmap_is_relative_to_greedy():
    from hemorrhage_core import paper

    fig = charts.decoding_heatmap(paper.decoding_scores(), "GSM8K")
    z = np.array(fig.data[0].z, dtype=float)
    greedy = list(fig.data[0].x).index("Greedy")
    assert np.allclose(z[:, greedy], 0) and fig.data[0].zmid == 0


def test_step_kl_chart_uses_a_log_axis():
    steps = pd.DataFrame({"step": range(4), "kl": [0.0, 0.01, 0.2, 1.5]})
    fig = charts.step_kl_chart(steps)
    assert fig.layout.yaxis.type == "log" and min(fig.data[0].y) > 0


# -- exports ---------------------------------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@needs_chrome
def test_static_exports_are_real_png_svg_and_pdf():
    fig = charts.layer_loss_chart(_layers())
    assert _png_size(charts.export_bytes(fig, "png")) == (1000, 560)
    tall = charts.cascade_chart(_layers())
    assert _png_size(charts.export_bytes(tall, "png"))[1] == tall.layout.height, (
        "small multiples keep their height"
    )
    svg = charts.export_bytes(fig, "svg").decode()
    assert "<svg" in svg and "relative error" in svg
    pdf = charts.export_bytes(fig, "pdf")
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000


def test_perplexity_bars_hold_both_sides_and_draw_infinity_as_a_labelled_bar():
    fig = charts.perplexity_chart({"ppl_base": 31.48, "ppl": float("inf")}, modified_label="top-p 0.9")
    lo, hi = fig.layout.yaxis.range
    assert lo < np.log10(31.48) < hi, "the axis holds the original"
    assert list(fig.data[0].text) == ["31.48", "∞"] and np.isfinite(fig.data[0].y[1])
    assert fig.data[0].x[1] == "top-p 0.9"
    finite = charts.perplexity_chart({"ppl_base": 31.48, "ppl": 16.0})
    lo, hi = finite.layout.yaxis.range
    assert lo < np.log10(16.0) and np.log10(31.48) < hi


def test_decoding_chart_has_a_panel_per_measure_the_run_has():
    m = {"entropy_mean": 2.4, "entropy_base_mean": 2.7, "ece": 0.09, "ece_base": 0.06, "support_topk_mean": 100.0,
         "kl_reverse_mean": 0.08, "mass_cut_mean": 0.07, "target_cut_share": 0.12}  # fmt: skip
    fig = charts.decoding_chart(m, top_k=256, modified_label="top-p 0.9")
    assert len(fig.data) == 6 and fig.data[2].y[0] == 256, "support of the original: its whole top-K"
    assert list(fig.data[3].y) == [0.0, 0.08], "the original's reverse KL to itself is 0"
    old = charts.decoding_chart({"kl_reverse_mean": 0.08, "mass_cut_mean": 0.07})
    assert len(old.data) == 2, "a run measured before entropy and support existed draws what it has"


def test_cascade_keeps_the_sqnr_of_unchanged_layers_off_the_axis():
    layers = _layers((("w8", "quant"),))
    layers.loc[(layers.metric == "hidden_sqnr_db") & (layers.layer == 0), "value"] = 200.0  # stored ∞
    fig = charts.cascade_chart(layers, ["hidden_sqnr_db"])
    assert fig.layout.yaxis.range[1] < 100, "200 dB (∞) does not set the range"
    assert any("∞" in (t.name or "") for t in fig.data), "unchanged layers are marked and named"


def test_relative_error_axis_goes_log_when_runs_span_decades():
    layers = _layers()
    layers.loc[(layers.run == "50%") & (layers.metric == "hidden_rel_error"), "value"] *= 1000
    fig = charts.cascade_chart(layers, ["hidden_rel_error", "hidden_cosine"])
    assert fig.layout.yaxis.type == "log"
    ticks = fig.layout.yaxis2.tickformat
    assert ticks == ".5~f" and 1 < fig.layout.yaxis2.range[1] < 1.01, "cosine: at most five decimals, up to 1"


def test_clicked_cell_comes_from_customdata_not_axis_labels():
    fig = charts.attention_heatmap(_heads(), clickable=True)
    assert list(fig.data[1].customdata[5][:2]) == [1, 1]
    assert charts.clicked_cell({"x": "h9", "y": "L9", "customdata": [2, 3, 0.1]}) == (2, 3)
    assert charts.clicked_cell({"x": "h0", "y": "L0"}) is None


@needs_chrome
def test_png_exports_carry_the_caption_and_scale():
    fig = charts.perplexity_chart({"ppl_base": 30.0, "ppl": 31.0})
    assert _png_size(charts.export_bytes(fig, "png", scale=2, caption="RTN w4 on m")) == (2000, 1120)
    svg = charts.export_bytes(fig, "svg", caption="RTN w4 on m · corpus news").decode()
    assert "RTN w4 on m · corpus news" in svg


def test_themed_figures_keep_transparent_backgrounds():
    dark = charts.themed(charts.perplexity_chart({"ppl_base": 30.0, "ppl": 31.0}), "dark")
    assert dark.layout.paper_bgcolor == "rgba(0,0,0,0)", "the page's background shows through"
    assert dark.layout.template.layout.paper_bgcolor != "white", "the dark template, not the light one"


def test_html_export_is_standalone():
    page = charts.export_bytes(charts.perplexity_chart({"ppl_base": 30.0, "ppl": 31.0}), "html").decode()
    assert "<html>" in page[:100] and "Plotly.newPlot" in page
    assert not re.search(r"<script[^>]+src=", page), "plotly.js is inlined, not fetched"
    with pytest.raises(ValueError):
        charts.export_bytes(go.Figure(), "gif")


# -- the report ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_llama_dir):
    root = tmp_path_factory.mktemp("report")
    text = root / "text.txt"
    text.write_text(" ".join(["the quick brown fox jumps over the lazy dog"] * 600))
    mp = pytest.MonkeyPatch()
    mp.setenv("HEMLAB_CACHE", str(root / "cache"))
    runner = Runner(Store(root / "r.duckdb"), device="cpu")
    probe = ProbeSettings(
        corpus=str(text), tokens=256, window=64, batch_size=2, attn_probes=2, attn_len=16, top_k=32
    )
    results = [
        runner.run(RunSpec(str(tiny_llama_dir), mods, probe))
        for mods in ((QuantizeRTN(bits=4),), (Prune(sparsity=0.5),))
    ]
    yield results
    mp.undo()


def test_report_html_carries_specs_settings_and_code_version(two_runs):
    page = report.build_html(two_runs, title="Two runs")
    for r in two_runs:
        assert r.settings["corpus_sha256"] in page and r.run_key in page
        assert r.spec.label() in page
    assert "window / stride" in page and "64 / 64 tokens" in page
    assert re.search(r"git_commit|hemorrhage_lab_code", page)
    assert page.count("<script type='text/javascript'>") == 1, "plotly.js inlined once"
    assert page.count('class="plotly-graph-div"') == len(report.default_figures(two_runs))


def test_report_opens_with_its_summary_and_ends_with_settings_and_versions(two_runs):
    page = report.build_html(two_runs, title="Two runs")
    summary, charts_, appendix = (page.index(t) for t in ("<h2>Summary</h2>", "<h2>Charts</h2>", "Appendix"))
    assert summary < charts_ < appendix, "summary first, the charts, then the appendix"
    assert page.index("hemorrhage_lab_code") > appendix and page.index("window / stride") > appendix
    head = page[summary:charts_]
    assert "Of 2 runs" in head and "perplexity ratio" in head
    assert "kl_mean" not in head and "ppl_ratio" not in head, "no raw metric keys in the summary"
    assert page.count("class='caption'") == len(report.default_figures(two_runs)), "every chart captioned"


@needs_chrome
def test_report_chart_images_are_twice_the_pixels_with_the_settings(two_runs):
    images = report.chart_images(two_runs[:1])
    assert len(images) == len(report.default_figures(two_runs[:1]))
    first = next(iter(images.values()))
    assert _png_size(first)[0] == 2000


def test_report_refuses_an_empty_selection():
    from hemorrhage_core.errors import HemlabError

    with pytest.raises(HemlabError):
        report.build_html([])


@needs_chrome
def test_report_pdf_is_printed_with_static_charts(two_runs):
    static = report.build_html(two_runs, static=True)
    assert "<svg" in static and "plotly-graph-div" not in static
    pdf = report.build_pdf(two_runs)
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000


def test_find_chrome_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HEMLAB_CHROME", str(tmp_path / "missing"))
    assert report.find_chrome() is None
    monkeypatch.setenv("HEMLAB_CHROME", shutil.which("sh"))
    assert report.find_chrome() == shutil.which("sh")


def test_short_log_axes_label_a_few_ticks_not_every_digit():
    from hemorrhage_core.charts.style import _log_axis

    axis = _log_axis([3e-4, 1e-3])  # half a decade: 1-2-5 leaves two labels, every digit would pile up eight
    assert axis["ticktext"] == ["0.0003", "0.0005", "0.001"]
    tiny = _log_axis([1.9e-7, 3.8e-7])["ticktext"]  # Python's own "2e-07" pads the exponent
    assert {"2e-7", "3e-7"} <= set(tiny) and not any("e-0" in t for t in tiny), tiny
    assert _log_axis([1e-3, 1e-1])["ticktext"] == ["0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1"]


def test_wide_log_axes_write_powers_of_ten_one_way():
    from hemorrhage_core.charts.style import _log_axis

    axis = _log_axis([1e-6, 50.0])  # plotly's own labels read "1μ, 10μ, 100μ, 0.001": SI beside decimals
    assert axis["ticktext"][:8] == ["1e-6", "1e-5", "1e-4", "0.001", "0.01", "0.1", "1", "10"]
    assert [float(t) for t in axis["ticktext"]] == pytest.approx(axis["tickvals"])
    cdf = charts.kl_cdf_chart(pd.DataFrame({"bin_lo": [1e-6, 1e-3], "bin_hi": [1e-3, 10.0], "count": [3, 1]}))
    assert cdf.layout.xaxis.type == "log" and "μ" not in "".join(cdf.layout.xaxis.ticktext)
