"""Tidy DataFrame -> Plotly figure. No Streamlit and no SQL here, so every chart is testable and exportable.

One visual language: the original model is always blue, the modified one always red, a mitigated one teal (the
mitigation family's colour), each method family has
its own colour (several runs of one family get shades and dashes of it), axes carry units, and
perplexity-like quantities use log scales because collapsed models reach thousands. Backgrounds are
transparent so charts read in Streamlit's light and dark themes; exports are rendered on white.
"""

from __future__ import annotations

import colorsys
import math
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .metric_names import METRICS, label, log_scale, unit
from .specs.families import FAMILIES

ORIGINAL = "#4C78A8"
MODIFIED = "#E45756"
# Each family's colour is its registry entry's (specs/families.py); the rest name the sides of a comparison.
FAMILY_COLORS = {
    **{name: f.colour for name, f in FAMILIES.items()},
    "original": ORIGINAL,
    "paper": "#8C8C8C",
    "other": "#7F7F7F",
    "modified": MODIFIED,  # the unmitigated side of a before / after comparison (Mitigate page)
}
MITIGATED = FAMILY_COLORS["mitigation"]
TEMPLATE = "plotly_white"
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
THRESHOLDS = (1.1, 2.0, 10.0)  # perplexity ratios of the robustness thresholds (docs/metrics.md §4)


def _style(fig: go.Figure, title: str, *, legend: bool = True) -> go.Figure:
    # A long legend (many runs or methods) goes to the right, where it can grow; a short one sits on top.
    names = [t.name for t in fig.data if t.name and t.showlegend is not False]
    long_legend = legend and (len(names) > 5 or sum(len(n) for n in names) > 90)
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        template=TEMPLATE,
        font=FONT,
        margin=dict(l=60, r=20, t=80 if legend and not long_legend else 60, b=50),
        legend=dict(orientation="v", yanchor="top", y=1, xanchor="left", x=1.02, font=dict(size=11))
        if long_legend
        else dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        showlegend=legend,
        # Transparent backgrounds keep the chart readable in Streamlit's light and dark themes; exports set white.
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def _empty(title: str, message: str) -> go.Figure:
    """A figure that says why there is nothing to draw (instead of an empty grid)."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14)
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, title, legend=False)


def _reference_line(
    fig: go.Figure, y: float, text: str, *, log: bool, original: bool = False, below: bool = False
):
    """A labelled horizontal reference (the original's 1×, a threshold). Drawn as a shape plus an annotation
    placed by hand: plotly places an hline's own label at 10**y on a log axis (annotations use log units there),
    which sends a 10× label to 10^10 and stretches the axis."""
    line = dict(color=ORIGINAL, width=1.5) if original else dict(color="#888888", width=1, dash="dash")
    fig.add_hline(y=y, line=line)
    fig.add_annotation(
        x=1,
        xref="paper",
        y=math.log10(y) if log else y,
        yref="y",
        text=text,
        showarrow=False,
        xanchor="right",
        yanchor="top" if below else "bottom",
        font=dict(size=11, color=ORIGINAL if original else "#888888"),
    )


def _log_axis(values, *, include: Sequence[float] = ()) -> dict:
    """Log-axis settings: a fixed range (see _log_range) and readable ticks: powers of ten over a wide range,
    1-2-5 (or every digit) over a narrow one, always written out in full (plotly's own minor labels on a short
    log range are bare digits such as "2" and "5", which read as noise)."""
    lo, hi = _log_range(values, include=include)
    if hi - lo > 3:
        return dict(type="log", range=[lo, hi], dtick=1)
    ticks = []
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
        ticks = [t for t in ticks if lo <= math.log10(t) <= hi]
        if len(ticks) >= 3:
            break
    if (
        len(ticks) < 2
    ):  # under a factor of ~2: plotly's own decimal labels (1.05, 1.1, ...) are the clear ones
        return dict(type="log", range=[lo, hi])
    return dict(type="log", range=[lo, hi], tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _log_range(values, *, include: Sequence[float] = ()) -> list[float]:
    """A log10 axis range covering the finite positive `values` and the reference lines in `include` (e.g. the
    1.1× / 2× / 10× thresholds), with a little room: shapes and annotations then never stretch the axis."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v) and v > 0] + [
        float(v) for v in include
    ]
    if not finite:
        return [-1.0, 1.0]
    lo, hi = math.log10(min(finite)), math.log10(max(finite))
    pad = max((hi - lo) * 0.08, 0.04)
    return [lo - pad, hi + pad]


def shade(color: str, i: int, n: int) -> str:
    """The i-th of n shades of a hex colour (lighter to darker around the base), so runs of one family differ."""
    if n <= 1:
        return color
    r, g, b = (int(color[k : k + 2], 16) / 255 for k in (1, 3, 5))
    h, light, s = colorsys.rgb_to_hls(r, g, b)
    light = min(max(light + (0.22 * (i / (n - 1)) - 0.11) * 2, 0.15), 0.8)
    r, g, b = colorsys.hls_to_rgb(h, light, s)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def run_styles(runs: Sequence[str], families: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
    """(colour, dash) per run: the family colour, shaded and dashed when a family has several runs.

    A single run with no family is drawn in MODIFIED red (it is "the modified model").
    """
    families = list(families) if families is not None else [None] * len(runs)
    if len(runs) == 1 and families[0] is None:
        return {runs[0]: (MODIFIED, "solid")}
    by_family: dict[str, list[str]] = {}
    for run, fam in zip(runs, families, strict=True):
        by_family.setdefault(fam or "other", []).append(run)
    out = {}
    palette = list(FAMILY_COLORS.values())
    for f_index, (fam, members) in enumerate(by_family.items()):
        base = FAMILY_COLORS.get(fam.split("+")[0], palette[f_index % len(palette)])
        if fam == "other" and families[0] is None:
            base = MODIFIED
        for i, run in enumerate(members):
            out[run] = (shade(base, i, len(members)), DASHES[i % len(DASHES)])
    return out


def _layer_ticks(layers: pd.DataFrame) -> dict:
    """Whole-number layer ticks (a layer 0.5 does not exist), about a dozen of them at most."""
    n = int(layers["layer"].max()) + 1 if not layers.empty else 1
    return dict(tick0=0, dtick=max(1, math.ceil(n / 12)))


def _runs_of(df: pd.DataFrame) -> tuple[list, dict[str, tuple[str, str]]]:
    runs = df["run"].drop_duplicates().tolist() if "run" in df.columns else [None]
    fams = None
    if "family" in df.columns and "run" in df.columns:
        fams = df.drop_duplicates("run").set_index("run").loc[runs, "family"].tolist()
    styles = run_styles([str(r) for r in runs], fams)
    return runs, styles


# -- per-run profile charts ---------------------------------------------------------------------------------------


def attention_heatmap(
    heads: pd.DataFrame,
    metric: str = "attn_js",
    title: str | None = None,
    *,
    clickable: bool = False,
    highlight: tuple[int, int] | None = None,
) -> go.Figure:
    """Layer x head heatmap of one per-head metric (default: JS divergence of attention rows, nats).

    `heads` is tidy: layer, head, metric, value. `clickable` lays an invisible marker on every cell, because
    plotly reports clicks (Streamlit selections) on markers but not on heatmap cells; a click then selects
    ("L3", "h5"). `highlight` (layer, head) outlines the cell being inspected.
    """
    units = {
        "attn_js": "JS divergence (nats)",
        "attn_entropy_shift": "entropy shift H(A′)−H(A) (nats)",
        "attn_sink": "sink mass, modified (share)",
        "attn_sink_base": "sink mass, original (share)",
        "attn_topk_overlap": "top-k attended overlap (share)",
    }.get(metric, metric)
    title = title or "Attention disruption per layer and head"
    data = heads[heads.metric == metric] if not heads.empty else heads
    if data.empty:
        return _empty(title, "no per-head attention rows for this run")
    grid = data.pivot(index="layer", columns="head", values="value").sort_index()
    diverging = metric == "attn_entropy_shift"
    peak = float(np.nanmax(np.abs(grid.values))) if grid.size else 0.0
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[f"h{h}" for h in grid.columns],
            y=[f"L{layer}" for layer in grid.index],
            colorscale="RdBu_r" if diverging else "Reds",
            zmid=0 if diverging else None,
            zmin=None if diverging else 0,
            # An unmodified model is all zeros: pin the scale so zero reads as "none", not as mid-scale.
            zmax=None if diverging or peak > 0 else 1e-9,
            colorbar=dict(title=dict(text=units, side="right"), tickformat=".2~g", exponentformat="e"),
            hovertemplate="layer %{y} head %{x}<br>" + units + " %{z:.4g}<extra></extra>",
        )
    )
    if clickable:
        cells = [(layer, h) for layer in grid.index for h in grid.columns]
        fig.add_trace(
            go.Scatter(
                x=[f"h{h}" for _, h in cells],
                y=[f"L{layer}" for layer, _ in cells],
                customdata=[grid.loc[layer, h] for layer, h in cells],
                mode="markers",
                marker=dict(
                    size=max(8, min(40, 600 // max(len(grid.index), len(grid.columns)))),
                    color="rgba(0,0,0,0.003)",  # invisible but hit-testable (hoverinfo "skip" would drop clicks)
                    symbol="square",
                ),
                hovertemplate="layer %{y} head %{x}<br>" + units + " %{customdata:.4g}<extra></extra>",
                showlegend=False,
                name="cells",
            )
        )
    if highlight is not None and highlight[0] in grid.index and highlight[1] in grid.columns:
        row, col = list(grid.index).index(highlight[0]), list(grid.columns).index(highlight[1])
        fig.add_shape(
            type="rect",
            x0=col - 0.5,
            x1=col + 0.5,
            y0=row - 0.5,
            y1=row + 0.5,
            line=dict(color="#222222", width=2.5),
        )
    fig.update_xaxes(title_text="attention head")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    fig.update_layout(height=max(360, 16 * len(grid.index) + 160))  # rows tall enough to read and to click
    return _style(fig, title, legend=False)


def layer_loss_chart(layers: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Relative error ‖h′−h‖/‖h‖ (left axis) and cosine similarity (right axis) of the residual stream per layer.

    `layers` is tidy (layer, metric, value) and may carry a `run` column (and `family`) to overlay several runs.
    """
    title = title or "Layer-wise information loss (the cascade)"
    if layers.empty or not layers.metric.isin(["hidden_rel_error", "hidden_cosine"]).any():
        return _empty(title, "no per-layer rows for this run")
    runs, styles = _runs_of(layers)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for run in runs:
        df = layers if run is None else layers[layers.run == run]
        color, dash = styles[str(run)]
        suffix = "" if run is None else f" — {run}"
        rel = df[df.metric == "hidden_rel_error"].sort_values("layer")
        cos = df[df.metric == "hidden_cosine"].sort_values("layer")
        fig.add_trace(
            go.Scatter(
                x=rel.layer,
                y=rel.value,
                name=f"relative error{suffix}",
                mode="lines+markers",
                line=dict(color=color, dash=dash),
            ),
            secondary_y=False,
        )
        fig.add_trace(
            go.Scatter(
                x=cos.layer,
                y=cos.value,
                name=f"cosine{suffix}",
                mode="lines",
                line=dict(color=ORIGINAL if run is None else color, dash="dot", width=1.5),
            ),
            secondary_y=True,
        )
    fig.add_hline(
        y=1.0,
        line=dict(color=ORIGINAL, width=1, dash="dot"),
        secondary_y=True,
        annotation_text="original (cosine 1)",
        annotation_position="bottom right",
    )
    fig.update_xaxes(title_text="layer (residual stream after block)", **_layer_ticks(layers))
    fig.update_yaxes(title_text="relative error ‖h′−h‖/‖h‖", secondary_y=False, rangemode="tozero")
    # Cosine of an unchanged layer is 1 up to float noise (1.0000000015): a floor of 0.99 keeps that noise from
    # being drawn as a slope, while real damage (0.9 and below) still fills the axis.
    cos = layers.loc[layers.metric == "hidden_cosine", "value"].dropna()
    low = min(0.99, float(cos.min()) if not cos.empty else 0.99)
    fig.update_yaxes(
        title_text="cosine similarity",
        secondary_y=True,
        showgrid=False,
        range=[low - (1 - low) * 0.05, 1.0005],
    )
    return _style(fig, title)


def cascade_chart(
    layers: pd.DataFrame, metrics: Sequence[str] | None = None, title: str | None = None
) -> go.Figure:
    """Small multiples, one panel per per-layer metric (relative error, cosine, SQNR, logit-lens KL, ...),
    with every run of `layers` (tidy: [run, family,] layer, metric, value) overlaid in its own style."""
    title = title or "Information-loss cascade per layer"
    wanted = list(metrics or ["hidden_rel_error", "hidden_cosine", "hidden_sqnr_db", "lens_kl"])
    present = [m for m in wanted if not layers.empty and (layers.metric == m).any()]
    if not present:
        return _empty(title, "no per-layer rows for these runs")
    runs, styles = _runs_of(layers)
    fig = make_subplots(
        rows=len(present),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        subplot_titles=[label(m) for m in present],
    )
    for row, metric in enumerate(present, start=1):
        for run in runs:
            df = layers if run is None else layers[layers.run == run]
            d = df[df.metric == metric].sort_values("layer")
            color, dash = styles[str(run)]
            fig.add_trace(
                go.Scatter(
                    x=d.layer,
                    y=d.value,
                    mode="lines+markers",
                    name=str(run or "modified"),
                    legendgroup=str(run),
                    showlegend=row == 1,
                    line=dict(color=color, dash=dash),
                    marker=dict(size=5),
                    hovertemplate=f"{run or ''} layer %{{x}}<br>{label(metric)} %{{y:.4g}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        values = layers.loc[layers.metric == metric, "value"]
        log = log_scale(metric) and bool((values > 0).all())
        fig.update_yaxes(title_text=unit(metric), row=row, col=1, **(_log_axis(values) if log else {}))
    fig.update_xaxes(**_layer_ticks(layers))
    fig.update_xaxes(title_text="layer (residual stream after block)", row=len(present), col=1)
    fig.update_layout(height=max(320, 230 * len(present)))
    return _style(fig, title)


def module_ranking_chart(
    modules: pd.DataFrame,
    value: str = "value",
    top: int = 20,
    title: str | None = None,
    units: str = "relative output error ‖(W′−W)X‖/‖WX‖",
) -> go.Figure:
    """Horizontal bars of the `top` modules that bleed most. `modules`: module, value[, layer, family]."""
    title = title or "Modules that bleed most"
    if modules.empty:
        return _empty(title, "no per-module rows for this run")
    d = modules.sort_values(value, ascending=False).head(top).iloc[::-1]
    color = [FAMILY_COLORS.get(f, MODIFIED) for f in d["family"]] if "family" in d.columns else MODIFIED
    fig = go.Figure(
        go.Bar(
            x=d[value],
            y=d["module"],
            orientation="h",
            marker_color=color,
            hovertemplate="%{y}<br>" + units + " %{x:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text=units)
    fig.update_yaxes(title_text="module", automargin=True)
    fig.update_layout(height=max(320, 22 * len(d) + 120))
    return _style(fig, title, legend=False)


def attention_maps_chart(
    base: np.ndarray,
    modified: np.ndarray,
    tokens: Sequence[str],
    title: str | None = None,
    layer: int | None = None,
    head: int | None = None,
) -> go.Figure:
    """Original, modified and difference attention maps [T, T] (query rows, key columns) with tokens on axes."""
    where = f"layer {layer}, head {head}" if layer is not None else ""
    title = title or f"Attention maps {where}".strip()
    base, modified = np.asarray(base, dtype=float), np.asarray(modified, dtype=float)
    labels = [f"{i}:{t}" for i, t in enumerate(tokens)]
    diff = modified - base
    lim = float(np.abs(diff).max()) or 1e-9
    fig = make_subplots(
        rows=1,
        cols=3,
        horizontal_spacing=0.07,
        shared_yaxes=True,
        subplot_titles=("original", "modified", "modified − original"),
    )
    common = dict(x=labels, y=labels, hovertemplate="query %{y}<br>key %{x}<br>%{z:.4f}<extra></extra>")
    fig.add_trace(go.Heatmap(z=base, colorscale="Blues", zmin=0, zmax=1, showscale=False, **common), 1, 1)
    fig.add_trace(go.Heatmap(z=modified, colorscale="Reds", zmin=0, zmax=1, showscale=False, **common), 1, 2)
    fig.add_trace(
        go.Heatmap(
            z=diff,
            colorscale="RdBu_r",
            zmid=0,
            zmin=-lim,
            zmax=lim,
            colorbar=dict(title=dict(text="Δ attention weight", side="right")),
            **common,
        ),
        1,
        3,
    )
    fig.update_yaxes(autorange="reversed", tickfont=dict(size=9))
    fig.update_xaxes(tickfont=dict(size=9), tickangle=-60, title_text="key token")
    fig.update_yaxes(title_text="query token", row=1, col=1)
    fig.update_layout(height=max(420, 14 * len(tokens) + 200))
    return _style(fig, title, legend=False)


def kl_distribution_chart(
    kl_hist: pd.DataFrame, metrics: dict[str, float] | None = None, title: str | None = None
) -> go.Figure:
    """Histogram of per-token KL(base‖modified) on log-spaced bins, with mean and p99 noted."""
    title = title or "Divergence: distribution of per-token KL"
    if kl_hist.empty:
        return _empty(title, "no KL histogram for this run")
    hist = kl_hist.sort_values("bin_lo")
    total = max(int(hist["count"].sum()), 1)
    # Categorical bars named by each log bin's upper edge ("1e-6" = KL up to 1e-6 nats): short, readable labels.
    labels = [_edge(hi) for hi in hist.bin_hi]
    ranges = [f"{lo:.1e} – {hi:.1e}" for lo, hi in zip(hist.bin_lo, hist.bin_hi, strict=True)]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=hist["count"] / total,
            customdata=ranges,
            marker_color=MODIFIED,
            name="share of tokens",
            hovertemplate="KL %{customdata} nats<br>%{y:.1%} of tokens<extra></extra>",
        )
    )
    fig.update_xaxes(
        title_text="per-token KL(original ‖ modified), nats: upper edge of each log bin", tickangle=-45
    )
    fig.update_yaxes(title_text="share of tokens", tickformat=".0%")
    if metrics:
        note = f"mean {metrics.get('kl_mean', float('nan')):.4g} · p99 {metrics.get('kl_p99', float('nan')):.4g} nats"
        fig.add_annotation(
            text=note, xref="paper", yref="paper", x=0.99, y=0.98, showarrow=False, align="right"
        )
    return _style(fig, title, legend=False)


def _edge(value: float) -> str:
    """1e-06 -> '1e-6', 0.01 -> '1e-2', 3.2e-05 -> '3.2e-5', inf -> '∞' (compact log-bin edges)."""
    if math.isinf(value):
        return "∞"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def kl_cdf_chart(kl_hist: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Cumulative share of tokens with KL below x (log x), from the stored log-binned histogram.

    `kl_hist`: bin_lo, bin_hi, count[, run, family]. Each step is drawn at the upper edge of its bin, so the
    curve is exact at the bin edges.
    """
    title = title or "Divergence: cumulative distribution of per-token KL"
    if kl_hist.empty:
        return _empty(title, "no KL histogram for these runs")
    runs, styles = _runs_of(kl_hist)
    fig = go.Figure()
    for run in runs:
        d = (kl_hist if run is None else kl_hist[kl_hist.run == run]).sort_values("bin_lo")
        total = max(float(d["count"].sum()), 1.0)
        edges = d.bin_hi.clip(lower=1e-12)
        color, dash = styles[str(run)]
        fig.add_trace(
            go.Scatter(
                x=edges,
                y=d["count"].cumsum() / total,
                mode="lines+markers",
                line_shape="hv",
                name=str(run or "modified"),
                line=dict(color=color, dash=dash),
                hovertemplate="KL ≤ %{x:.2g} nats: %{y:.1%} of tokens<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="per-token KL(original ‖ modified), nats (log scale)", type="log")
    fig.update_yaxes(title_text="share of tokens at or below", tickformat=".0%", range=[0, 1.02])
    return _style(fig, title, legend=len(runs) > 1)


def perplexity_chart(metrics: dict[str, float], title: str | None = None) -> go.Figure:
    """Original vs modified perplexity as two bars (log axis: collapsed models reach thousands)."""
    fig = go.Figure(
        go.Bar(
            x=["original", "modified"],
            y=[metrics["ppl_base"], metrics["ppl"]],
            marker_color=[ORIGINAL, MODIFIED],
            text=[f"{metrics['ppl_base']:.2f}", f"{metrics['ppl']:.2f}"],
            textposition="outside",
            cliponaxis=False,
        )
    )
    low, top = min(metrics["ppl_base"], metrics["ppl"]), max(metrics["ppl_base"], metrics["ppl"])
    # From half the lower bar (bars need a floor on a log axis) to room above the higher one for its label.
    fig.update_yaxes(title_text="perplexity (log scale)", **_log_axis([low / 2, top * 1.6]))
    return _style(fig, title or "Perplexity, original vs modified", legend=False)


# -- comparisons across runs --------------------------------------------------------------------------------------


def metric_bars_chart(
    runs: pd.DataFrame,
    metrics: Sequence[str] = ("ppl_ratio", "kl_mean", "top1_agreement"),
    title: str | None = None,
) -> go.Figure:
    """One panel per metric, one bar per run (wide table: label, family, metrics as columns)."""
    title = title or "Runs compared"
    present = [m for m in metrics if m in runs.columns]
    if runs.empty or not present:
        return _empty(title, "no runs selected")
    labels = runs["label"].astype(str).tolist()
    if len(set(labels)) < len(labels):  # same label on several models or corpora: make them distinct
        labels = [f"{lb} · {m}" for lb, m in zip(labels, runs.get("model", [""] * len(runs)), strict=True)]
    styles = run_styles(labels, runs["family"].tolist() if "family" in runs.columns else None)
    fig = make_subplots(
        rows=1,
        cols=len(present),
        subplot_titles=[label(m) for m in present],
        horizontal_spacing=0.08,
    )
    for col, metric in enumerate(present, start=1):
        fig.add_trace(
            go.Bar(
                x=labels,
                y=runs[metric],
                marker_color=[styles[lb][0] for lb in labels],
                showlegend=False,
                hovertemplate="%{x}<br>" + label(metric) + " %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if log_scale(metric) and (runs[metric] > 0).all():
            fig.update_yaxes(
                **_log_axis(runs[metric], include=(1.0,) if metric == "ppl_ratio" else ()), row=1, col=col
            )
        if unit(metric) == "share":
            fig.update_yaxes(tickformat=".0%", row=1, col=col)
        if metric == "ppl_ratio":
            fig.add_hline(y=1.0, line=dict(color=ORIGINAL, dash="dot"), row=1, col=col)
    fig.update_xaxes(tickangle=-30, automargin=True)
    return _style(fig, title, legend=False)


def sweep_chart(
    points: pd.DataFrame,
    x: str,
    *,
    x_label: str | None = None,
    y: str = "ppl_ratio",
    thresholds: Sequence[float] = THRESHOLDS,
    zones: dict[str, tuple[float, float]] | None = None,
    knees: dict[str, float] | None = None,
    reverse_x: bool | None = None,
    title: str | None = None,
) -> go.Figure:
    """Quality along one knob, one line per series, with the 1.1× / 2× / 10× thresholds, the robust zones and
    the knees.

    `points`: series, x, y[, family]. `zones`: series -> (mildest setting, last setting with ratio ≤ 1.1×),
    shaded in the series' colour; `knees`: series -> the setting where log-perplexity stops growing linearly,
    a dotted vertical line. Bits fall as compression grows, so the x axis is reversed for them (compression
    always grows to the right).
    """
    title = title or "Sweep: perplexity ratio along the knob"
    if points.empty:
        return _empty(title, "no sweep points yet")
    reverse_x = ("bits" in (x_label or x)) if reverse_x is None else reverse_x
    series = points["series"].drop_duplicates().tolist()
    fams = (
        points.drop_duplicates("series").set_index("series").loc[series, "family"].tolist()
        if "family" in points
        else None
    )
    styles = run_styles([str(s) for s in series], fams)
    fig = go.Figure()
    for s in series:
        d = points[points.series == s].sort_values(x)
        color, dash = styles[str(s)]
        fig.add_trace(
            go.Scatter(
                x=d[x],
                y=d[y],
                mode="lines+markers",
                name=str(s),
                line=dict(color=color, dash=dash),
                hovertemplate=f"{s}<br>{x_label or x} %{{x}}<br>{label(y)} %{{y:.4g}}<extra></extra>",
            )
        )
        if zones and s in zones:
            x0, x1 = zones[s]
            fig.add_vrect(
                x0=x0,
                x1=x1,
                fillcolor=color,
                opacity=0.12,
                line_width=0,
                layer="below",
                annotation_text="robust zone (≤1.1×)" + (f" — {s}" if len(series) > 1 else ""),
                annotation_position="top left",
                annotation_font_size=11,
            )
        if knees and s in knees:
            fig.add_vline(
                x=knees[s],
                line=dict(color=color, width=1.5, dash="dot"),
                annotation_text="knee",
                annotation_position="bottom right",
            )
    positive = bool((points[y] > 0).all())
    log_y = log_scale(y) and positive
    if y == "ppl_ratio":
        _reference_line(fig, 1.0, "original", log=log_y, original=True, below=True)
        for t in thresholds:
            _reference_line(fig, t, f"{t:g}×", log=log_y)
    fig.update_yaxes(
        title_text=label(y) + (" (log scale)" if log_y else ""),
        **(_log_axis(points[y], include=(1.0, *thresholds) if y == "ppl_ratio" else ()) if log_y else {}),
    )
    if unit(y) == "share":
        fig.update_yaxes(tickformat=".0%")
    fig.update_xaxes(
        title_text=(x_label or x) + (" (compression grows →)" if reverse_x else ""),
        autorange="reversed" if reverse_x else True,
    )
    return _style(fig, title)


def quality_memory_chart(
    points: pd.DataFrame, title: str | None = None, *, joined: bool = True, front: pd.DataFrame | None = None
) -> go.Figure:
    """Perplexity ratio against the weights' memory: one marker per run (label, memory_mb, ppl_ratio, family[,
    series]); with `joined`, the runs of one series are joined by a line. `front` (memory_mb, ppl_ratio): the
    Pareto front, drawn as a dashed line. Lower-left is better."""
    title = title or "Quality against memory"
    if points.empty:
        return _empty(title, "no runs with a memory estimate")
    fig = go.Figure()
    group = "series" if "series" in points.columns else "family"
    keys = points[group].drop_duplicates().tolist()
    fams = (
        points.drop_duplicates(group).set_index(group).loc[keys, "family"].tolist()
        if "family" in points
        else None
    )
    styles = run_styles([str(k) for k in keys], fams)
    for k in keys:
        d = points[points[group] == k].sort_values("memory_mb")
        color, dash = styles[str(k)]
        fig.add_trace(
            go.Scatter(
                x=d.memory_mb,
                y=d.ppl_ratio,
                mode="lines+markers" if joined else "markers",
                name=str(k),
                text=d.label,
                line=dict(color=color, dash=dash),
                marker=dict(size=9, color=ORIGINAL if k == "original" else color),
                hovertemplate="%{text}<br>%{x:.1f} MB<br>×%{y:.3f}<extra></extra>",
            )
        )
    if front is not None and len(front) > 1:
        f = front.sort_values("memory_mb")
        fig.add_trace(
            go.Scatter(
                x=f.memory_mb,
                y=f.ppl_ratio,
                mode="lines",
                name="Pareto front",
                line=dict(color="#888888", width=1.5, dash="dash"),
                hoverinfo="skip",
            )
        )
    _reference_line(fig, 1.0, "original quality", log=True, original=True, below=True)
    _reference_line(fig, 1.1, "1.1×", log=True)
    fig.update_xaxes(title_text="weight memory (MB)")
    fig.update_yaxes(
        title_text="perplexity ratio (log scale)", **_log_axis(points.ppl_ratio, include=(1.0, 1.1))
    )
    return _style(fig, title)


# -- the paper -------------------------------------------------------------------------------------------------


def paper_chart(
    table: pd.DataFrame,
    *,
    x: str = "x",
    y: str = "ppl",
    x_label: str,
    y_label: str = "perplexity",
    title: str,
    log_y: bool = True,
    reverse_x: bool = False,
) -> go.Figure:
    """One of the paper's tables as lines, one per method (tidy: method, x, y). Grey-scale-free palette: the
    paper's methods are told apart by colour; our own runs are never drawn here."""
    if table.empty:
        return _empty(title, "empty table")
    fig = go.Figure()
    palette = [
        "#4C78A8",
        "#F58518",
        "#54A24B",
        "#E45756",
        "#72B7B2",
        "#B279A2",
        "#FF9DA6",
        "#9D755D",
        "#BAB0AC",
        "#EECA3B",
    ]
    patterns = table["pattern"] if "pattern" in table.columns else pd.Series("", index=table.index)
    symbols = {"2:4": "diamond", "4:8": "square", "1:4": "triangle-up", "8:16": "cross"}
    for i, (method, d) in enumerate(table.groupby("method", sort=False)):
        color = palette[i % len(palette)]
        d = d.dropna(subset=[y])
        curve = d[patterns.loc[d.index] == ""].sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=curve[x],
                y=curve[y],
                mode="lines+markers",
                name=str(method),
                legendgroup=str(method),
                line=dict(color=color, dash=DASHES[(i // len(palette)) % len(DASHES)]),
                hovertemplate=f"{method}<br>{x_label} %{{x}}<br>{y_label} %{{y:.4g}}<extra></extra>",
            )
        )
        # N:M patterns sit at their own sparsity (50 %) but are not points of the unstructured curve.
        for pattern, p in d[patterns.loc[d.index] != ""].groupby("pattern"):
            fig.add_trace(
                go.Scatter(
                    x=p[x],
                    y=p[y],
                    mode="markers",
                    name=f"{method} {pattern}",
                    legendgroup=str(method),
                    showlegend=False,
                    marker=dict(color=color, symbol=symbols.get(pattern, "x"), size=10, line=dict(width=1)),
                    hovertemplate=f"{method} {pattern}<br>{y_label} %{{y:.4g}}<extra></extra>",
                )
            )
    fig.update_xaxes(title_text=x_label, autorange="reversed" if reverse_x else True)
    fig.update_yaxes(
        title_text=y_label + (" (log scale)" if log_y else ""), **(_log_axis(table[y]) if log_y else {})
    )
    return _style(fig, title)


def paper_overlay_chart(
    paper: pd.DataFrame, ours: pd.DataFrame, *, x_label: str, title: str, reverse_x: bool = False
) -> go.Figure:
    """The paper's curves (thin, grey shades: method, x, ratio) with our runs (bold, family colour: series, x,
    ratio, family) on one normalised axis: perplexity ratio to each model's own baseline."""
    fig = go.Figure()
    methods = paper["method"].drop_duplicates().tolist() if not paper.empty else []
    for i, method in enumerate(methods):
        d = paper[paper.method == method].dropna(subset=["ratio"]).sort_values("x")
        grey = shade("#8C8C8C", i, max(len(methods), 1))
        fig.add_trace(
            go.Scatter(
                x=d.x,
                y=d.ratio,
                mode="lines+markers",
                name=f"paper: {method}",
                line=dict(color=grey, width=1.2, dash=DASHES[i % len(DASHES)]),
                marker=dict(size=5),
                hovertemplate=f"paper · {method}<br>{x_label} %{{x}}<br>×%{{y:.3g}}<extra></extra>",
            )
        )
    if not ours.empty:
        series = ours["series"].drop_duplicates().tolist()
        fams = ours.drop_duplicates("series").set_index("series").loc[series, "family"].tolist()
        styles = run_styles([str(s) for s in series], fams)
        for s in series:
            d = ours[ours.series == s].sort_values("x")
            color, dash = styles[str(s)]
            fig.add_trace(
                go.Scatter(
                    x=d.x,
                    y=d.ratio,
                    mode="lines+markers",
                    name=f"ours: {s}",
                    line=dict(color=color, width=3, dash=dash),
                    marker=dict(size=10, symbol="diamond"),
                    hovertemplate=f"ours · {s}<br>{x_label} %{{x}}<br>×%{{y:.3g}}<extra></extra>",
                )
            )
    if not methods and ours.empty:
        return _empty(title, "nothing to compare")
    _reference_line(fig, 1.0, "baseline", log=True, original=True, below=True)
    for t in THRESHOLDS:
        _reference_line(fig, t, f"{t:g}×", log=True)
    fig.update_xaxes(title_text=x_label, autorange="reversed" if reverse_x else True)
    ratios = [*paper.get("ratio", []), *ours.get("ratio", [])]
    fig.update_yaxes(
        title_text="perplexity ratio to the model's own baseline (log scale)",
        **_log_axis(ratios, include=(1.0, *THRESHOLDS)),
    )
    return _style(fig, title)


def decoding_heatmap(scores: pd.DataFrame, task: str, title: str | None = None) -> go.Figure:
    """Score change of each decoder against greedy, per model, for one task (tidy: model, task, decoder,
    score). Diverging colours centred at 0: blue better than greedy, red worse."""
    title = title or f"Decoding methods vs greedy — {task}"
    d = scores[scores.task == task]
    if d.empty:
        return _empty(title, f"no rows for task {task}")
    grid = d.pivot(index="model", columns="decoder", values="score")
    order = [c for c in d.decoder.drop_duplicates() if c in grid.columns]
    grid = grid[order]
    delta = grid.sub(grid["Greedy"], axis=0) if "Greedy" in grid.columns else grid
    lim = float(np.nanmax(np.abs(delta.values))) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=delta.values,
            x=list(delta.columns),
            y=list(delta.index),
            colorscale="RdBu",
            zmid=0,
            zmin=-lim,
            zmax=lim,
            customdata=grid.values,
            colorbar=dict(title=dict(text="score − greedy (points)", side="right")),
            hovertemplate="%{y}<br>%{x}: %{customdata:.2f} (%{z:+.2f} vs greedy)<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="decoding method")
    fig.update_yaxes(title_text="model", automargin=True, autorange="reversed")
    return _style(fig, title, legend=False)


def step_kl_chart(steps: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Per-step KL along the original model's own generation (tidy: step, kl[, run, family]); log y."""
    title = title or "Per-step KL along the original trajectory"
    if steps.empty:
        return _empty(title, "no generation steps")
    runs, styles = _runs_of(steps)
    fig = go.Figure()
    for run in runs:
        d = (steps if run is None else steps[steps.run == run]).sort_values("step")
        color, dash = styles[str(run)]
        fig.add_trace(
            go.Scatter(
                x=d.step,
                y=d.kl.clip(lower=1e-8),
                mode="lines+markers",
                name=str(run or "modified"),
                line=dict(color=color, dash=dash),
            )
        )
    fig.update_xaxes(title_text="generated token (step)")
    # A step where both models agree exactly has KL 0: drawn at 1e-8 so the log axis can hold it.
    fig.update_yaxes(
        title_text="KL(original ‖ modified), nats (log scale)", **_log_axis(steps.kl.clip(lower=1e-8))
    )
    return _style(fig, title, legend=len(runs) > 1)


# -- mitigation: before / after ----------------------------------------------------------------------------------


def _percent(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.0%}"


def recovery_bars(comparison, title: str | None = None) -> go.Figure:
    """Perplexity ratio (log) and KL mean of the original, the unmitigated (before) and the mitigated (after)
    model side by side, in blue / red / teal, each panel annotated with the share of its damage recovered.

    `comparison`: a hemorrhage_core.mitigation.Comparison (its `table()` and `recovered(metric)`).
    """
    title = title or "Recovery: original, before and after the remedies"
    rows = comparison.table().set_index("model")
    sides = ["original", "before", "after"]
    colors = [ORIGINAL, MODIFIED, MITIGATED]
    panels = [(m, METRICS[m].header) for m in ("ppl_ratio", "kl_mean")]
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=[f"{label(m)} — recovered {_percent(comparison.recovered(m))}" for m, _ in panels],
    )
    for col, (metric, column) in enumerate(panels, start=1):
        values = [float(rows.loc[s, column]) for s in sides]
        fig.add_trace(
            go.Bar(
                x=sides,
                y=values,
                marker_color=colors,
                text=[f"×{v:.3g}" if metric == "ppl_ratio" else f"{v:.3g}" for v in values],
                textposition="outside",
                cliponaxis=False,
                showlegend=False,
                hovertemplate="%{x}<br>" + label(metric) + " %{y:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    ratios = rows[METRICS["ppl_ratio"].header].tolist()
    if all(math.isfinite(v) and v > 0 for v in ratios):
        # Bars need a floor on a log axis: from a little under the lowest ratio to room for the labels.
        fig.update_yaxes(
            title_text="ratio to the original (log scale)",
            **_log_axis([min(ratios) / 1.3, max(ratios) * 1.6], include=(1.0,)),
            row=1,
            col=1,
        )
    fig.add_hline(y=1.0, line=dict(color=ORIGINAL, width=1, dash="dot"), row=1, col=1)
    kl = [v for v in rows[METRICS["kl_mean"].header] if math.isfinite(v)]
    fig.update_yaxes(title_text="nats", range=[0, max(kl + [1e-9]) * 1.25], row=1, col=2)
    return _style(fig, title, legend=False)


def kl_overlay_chart(kl_hist: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Per-token KL histograms of several runs (tidy: run, family, bin_lo, bin_hi, count) as grouped bars of the
    share of tokens per log bin, each run in its family's colour (before red, after teal on the Mitigate page)."""
    title = title or "Divergence: per-token KL, before and after"
    if kl_hist.empty:
        return _empty(title, "no KL histograms for these runs")
    runs, styles = _runs_of(kl_hist)
    bins = kl_hist.drop_duplicates("bin_hi").sort_values("bin_lo")
    labels = [_edge(hi) for hi in bins.bin_hi]
    fig = go.Figure()
    for run in runs:
        d = kl_hist if run is None else kl_hist[kl_hist.run == run]
        counts = d.groupby("bin_hi")["count"].sum().reindex(bins.bin_hi, fill_value=0)
        share = counts.to_numpy() / max(float(counts.sum()), 1.0)
        fig.add_trace(
            go.Bar(
                x=labels,
                y=share,
                name=str(run or "modified"),
                marker_color=styles[str(run)][0],
                hovertemplate=f"{run or ''}<br>KL up to %{{x}} nats: %{{y:.1%}} of tokens<extra></extra>",
            )
        )
    fig.update_layout(barmode="group", bargap=0.15)
    fig.update_xaxes(
        title_text="per-token KL(original ‖ model), nats: upper edge of each log bin", tickangle=-45
    )
    fig.update_yaxes(title_text="share of tokens", tickformat=".0%")
    return _style(fig, title)


def attention_pair_heatmap(
    heads: pd.DataFrame, metric: str = "attn_js", title: str | None = None
) -> go.Figure:
    """Layer × head heatmaps of one per-head metric for two runs side by side (tidy: run, layer, head, metric,
    value; runs in order of appearance) on one shared colour scale, so equal colours mean equal disruption."""
    title = title or "Attention disruption per layer and head, before | after"
    data = heads[heads.metric == metric] if not heads.empty else heads
    runs = data["run"].drop_duplicates().tolist() if not data.empty else []
    if not runs:
        return _empty(title, "no per-head attention rows for these runs")
    grids = [
        data[data.run == r].pivot(index="layer", columns="head", values="value").sort_index() for r in runs
    ]
    peak = max(float(np.nanmax(g.values)) if g.size else 0.0 for g in grids)
    units = f"{label(metric)} ({unit(metric)})" if unit(metric) == "nats" else label(metric)
    fig = make_subplots(
        rows=1,
        cols=len(runs),
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=[str(r) for r in runs],
    )
    for col, grid in enumerate(grids, start=1):
        fig.add_trace(
            go.Heatmap(
                z=grid.values,
                x=[f"h{h}" for h in grid.columns],
                y=[f"L{layer}" for layer in grid.index],
                coloraxis="coloraxis",
                hovertemplate="layer %{y} head %{x}<br>" + units + " %{z:.4g}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        fig.update_xaxes(title_text="attention head", row=1, col=col)
    fig.update_layout(
        # zmax pinned above 0 so an undisturbed run reads as "none", not as mid-scale (as attention_heatmap).
        coloraxis=dict(
            colorscale="Reds",
            cmin=0,
            cmax=peak if peak > 0 else 1e-9,
            colorbar=dict(title=dict(text=units, side="right")),
        ),
        height=max(360, 16 * max(len(g.index) for g in grids) + 160),
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(title_text="layer", row=1, col=1)
    return _style(fig, title, legend=False)


# -- activation outliers (why static activation scales fail) ------------------------------------------------------


def activation_outliers_chart(
    stats: pd.DataFrame, *, alpha: float, top_channels: int = 10, title: str | None = None
) -> go.Figure:
    """Max |activation| of every layer input before and after SmoothQuant smoothing (α = `alpha`), log scale.

    Top panel: per layer, the largest max |x| over the input channels, one line pair per module group (before in
    the unmitigated red, after in the mitigation teal; one dash per group). Bottom panel: every input channel of
    the worst (layer, module), before and after, its `top_channels` largest channels labelled and the median
    channel drawn, so the outliers stand out at a glance. `stats`: tidy rows of
    modify.scaling.activation_outlier_stats (layer, module, channel, max_abs_before, max_abs_after).
    """
    if stats.empty:
        return _empty(title or "Activation outliers", "no activation statistics")
    row = stats.loc[stats.max_abs_before.idxmax()]
    layer, module = int(row.layer), str(row.module)
    title = title or (
        f"Activation outliers, max |x| per input channel, before / after SmoothQuant α = {alpha:g}"
        f"<br><sup>worst: layer {layer} {module} channel {int(row.channel)}: "
        f"{row.max_abs_before:.4g} → {row.max_abs_after:.4g}</sup>"
    )
    fig = make_subplots(
        rows=2,
        cols=1,
        vertical_spacing=0.14,
        subplot_titles=(
            "largest input channel per layer (max over channels of max |x|)",
            f"every input channel of layer {layer} {module}",
        ),
    )
    sides = (("before", "max_abs_before", MODIFIED), ("after", "max_abs_after", MITIGATED))
    per_layer = stats.groupby(["module", "layer"], sort=False)[["max_abs_before", "max_abs_after"]]
    peaks, medians = per_layer.max().reset_index(), per_layer.median().reset_index()
    for i, name in enumerate(stats.module.drop_duplicates()):
        d = peaks[peaks.module == name].sort_values("layer")
        med = medians[medians.module == name].sort_values("layer")
        for side, column, color in sides:
            fig.add_trace(
                go.Scatter(
                    x=d.layer,
                    y=d[column],
                    customdata=med[column],
                    mode="lines+markers",
                    name=f"{side} · {name}",
                    legendgroup=side,
                    line=dict(color=color, dash=DASHES[i % len(DASHES)]),
                    marker=dict(size=6),
                    hovertemplate=f"{side} · {name}<br>layer %{{x}}: max |x| %{{y:.4g}}, "
                    "median channel %{customdata:.3g}<extra></extra>",
                ),
                row=1,
                col=1,
            )
    worst_group = stats[(stats.layer == layer) & (stats.module == module)].sort_values("channel")
    for side, column, color in sides:
        fig.add_trace(
            go.Scatter(
                x=worst_group.channel,
                y=worst_group[column],
                mode="lines",
                name=f"{side} · layer {layer} channels",
                legendgroup=side,
                line=dict(color=color, width=1),
                hovertemplate=f"{side}<br>channel %{{x}}: max |x| %{{y:.4g}}<extra></extra>",
            ),
            row=2,
            col=1,
        )
        median = float(worst_group[column].median())
        fig.add_trace(
            go.Scatter(
                x=[worst_group.channel.min(), worst_group.channel.max()],
                y=[median, median],
                mode="lines",
                name=f"median channel {side} ({median:.3g})",
                legendgroup=side,
                # Darker and wider than the channel line it lies on, which hides a thin one.
                line=dict(color=shade(color, 0, 2), width=2.5, dash="dash"),
                hoverinfo="skip",
            ),
            row=2,
            col=1,
        )
    top = worst_group.nlargest(top_channels, "max_abs_before")
    fig.add_trace(
        go.Scatter(
            x=top.channel,
            y=top.max_abs_before,
            mode="markers+text",
            text=[str(c) for c in top.channel],
            textposition="top center",
            textfont=dict(size=10, color=MODIFIED),
            marker=dict(color=MODIFIED, size=8, symbol="circle-open"),
            name=f"top {len(top)} channels before",
            legendgroup="before",
            hovertemplate="channel %{x}: max |x| %{y:.4g} before<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_yaxes(
        title_text="max |x| (log scale)",
        **_log_axis(pd.concat([peaks.max_abs_before, peaks.max_abs_after])),
        row=1,
        col=1,
    )
    fig.update_yaxes(
        title_text="max |x| (log scale)",
        # Room above the largest channel for its label.
        **_log_axis(pd.concat([worst_group.max_abs_before * 2.5, worst_group.max_abs_after])),
        row=2,
        col=1,
    )
    fig.update_xaxes(title_text="layer", row=1, col=1, **_layer_ticks(stats))
    fig.update_xaxes(title_text="input channel", row=2, col=1)
    fig.update_layout(height=820)
    _style(fig, title)
    fig.update_layout(
        margin_t=110
    )  # a two-line title (the worst channel on the second) above the subplot titles
    return fig


# -- export ------------------------------------------------------------------------------------------------------


_EXPORT_LOCK = threading.Lock()


def _kaleido_server() -> None:
    """Keep one headless Chrome for every static export of the process (starting one per image costs seconds).

    kaleido's shared server answers calls in order through one queue, so callers take _EXPORT_LOCK around a call:
    two sessions exporting at once would otherwise each be able to receive the other's image.
    """
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)


def export_bytes(fig: go.Figure, fmt: str, *, width: int = 1000, height: int | None = None) -> bytes:
    """PNG/SVG/PDF through kaleido (needs Chrome: Debian's chromium), or standalone HTML (plotly.js inlined).

    Static exports are drawn on white with dark text whatever the app theme. Height defaults to the figure's
    own (tall small-multiples keep their proportions), else 560 px.
    """
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"unknown export format {fmt!r}; use png, svg, pdf or html")
    printable = go.Figure(fig).update_layout(paper_bgcolor="white", plot_bgcolor="white")
    height = height or fig.layout.height or 560
    with _EXPORT_LOCK, warnings.catch_warnings():
        # plotly passes browser options the shared server already has; its warning about ignoring them is noise.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        _kaleido_server()
        return printable.to_image(format=fmt, width=width, height=height, scale=1)
