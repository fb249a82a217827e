"""Charts of one run's profile: layer loss, cascade, attention heatmaps and maps, KL distribution, perplexity."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..metric_names import header_with_unit, infinite_at, label, log_scale, unit
from .style import (
    FAMILY_COLORS,
    MODIFIED,
    NEUTRAL,
    ORIGINAL,
    _empty,
    _layer_ticks,
    _log_axis,
    _runs_of,
    _style,
    wrap,
)


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
    plotly reports clicks (Streamlit selections) on markers but not on heatmap cells; each marker carries
    [layer, head, value] as customdata, so a click names its cell exactly (`clicked_cell`), whatever the axis
    labels. `highlight` (layer, head) outlines the cell being inspected.
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
                customdata=[[int(layer), int(h), float(grid.loc[layer, h])] for layer, h in cells],
                mode="markers",
                marker=dict(
                    size=max(8, min(40, 600 // max(len(grid.index), len(grid.columns)))),
                    color="rgba(0,0,0,0.003)",  # invisible but hit-testable (hoverinfo "skip" would drop clicks)
                    symbol="square",
                ),
                hovertemplate="layer %{y} head %{x}<br>" + units + " %{customdata[2]:.4g}<extra></extra>",
                showlegend=False,
                name="cells",
            )
        )
    if highlight is not None and highlight[0] in grid.index and highlight[1] in grid.columns:
        row, col = list(grid.index).index(highlight[0]), list(grid.columns).index(highlight[1])
        # Dark under light: the outline reads on pale and on dark red cells, on a light and on a dark page.
        for color, width in (("#111111", 4), ("#FFFFFF", 1.5)):
            fig.add_shape(
                type="rect",
                x0=col - 0.5,
                x1=col + 0.5,
                y0=row - 0.5,
                y1=row + 0.5,
                line=dict(color=color, width=width),
            )
    # Ranges fitted to the cells: the invisible click markers would otherwise pad the axes.
    fig.update_xaxes(title_text="attention head", range=[-0.5, len(grid.columns) - 0.5])
    fig.update_yaxes(title_text="layer", range=[len(grid.index) - 0.5, -0.5])
    fig.update_layout(height=max(360, 16 * len(grid.index) + 160))  # rows tall enough to read and to click
    return _style(fig, title, legend=False)


def clicked_cell(point: dict) -> tuple[int, int] | None:
    """(layer, head) of a clicked cell of a clickable attention_heatmap, from the point Streamlit reports
    (its customdata); None for a point without one."""
    data = point.get("customdata")
    if isinstance(data, (list, tuple)) and len(data) >= 2:
        try:
            return int(data[0]), int(data[1])
        except (TypeError, ValueError):
            return None
    return None


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
        rel = df[df.metric == "hidden_rel_error"].sort_values("layer")
        cos = df[df.metric == "hidden_cosine"].sort_values("layer")
        # Several runs: one legend entry per run (its two curves toggle together; the axis titles say which
        # line is which), so the legend does not grow to twice the runs and crowd the plot.
        fig.add_trace(
            go.Scatter(
                x=rel.layer,
                y=rel.value,
                name="relative error" if run is None else str(run),
                legendgroup=None if run is None else str(run),
                mode="lines+markers",
                line=dict(color=color, dash=dash),
            ),
            secondary_y=False,
        )
        fig.add_trace(
            go.Scatter(
                x=cos.layer,
                y=cos.value,
                name="cosine" if run is None else f"cosine — {run}",
                legendgroup=None if run is None else str(run),
                showlegend=run is None,
                mode="lines",
                line=dict(color=ORIGINAL if run is None else color, dash="dot", width=1.5),
            ),
            secondary_y=True,
        )
    # The original's cosine 1 as a dotted line named in the axis title: a label written at cosine 1 would sit
    # on the curves, which run along it.
    fig.add_hline(y=1.0, line=dict(color=ORIGINAL, width=1, dash="dot"), secondary_y=True)
    fig.update_xaxes(title_text="layer (residual stream after block)", **_layer_ticks(layers))
    rel = layers.loc[layers.metric == "hidden_rel_error", "value"]
    several = runs != [None]
    fig.update_yaxes(
        title_text="relative error ‖h′−h‖/‖h‖" + (" (solid)" if several else ""),
        secondary_y=False,
        **_rel_error_axis(rel),
    )
    cos = layers.loc[layers.metric == "hidden_cosine", "value"].dropna()
    fig.update_yaxes(
        title_text="cosine similarity (original: 1, dotted)",
        secondary_y=True,
        showgrid=False,
        **_cosine_axis(cos),
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
        values = layers.loc[layers.metric == metric, "value"]
        axis, top = _panel_axis(metric, values)
        cap = infinite_at(metric)
        for run in runs:
            df = layers if run is None else layers[layers.run == run]
            d = df[df.metric == metric].sort_values("layer")
            color, dash = styles[str(run)]
            infinite = d.value >= cap if cap is not None else pd.Series(False, index=d.index)
            fig.add_trace(
                go.Scatter(
                    x=d.layer,
                    y=d.value.where(~infinite),  # the stand-in for ∞ is not a number to draw a line through
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
            if infinite.any():
                # Unchanged layers: ∞ dB, drawn as open triangles along the top of the panel.
                fig.add_trace(
                    go.Scatter(
                        x=d.layer[infinite],
                        y=[top] * int(infinite.sum()),
                        mode="markers",
                        name=f"{run or 'modified'}: ∞ (layer unchanged)",
                        legendgroup=str(run),
                        showlegend=False,
                        marker=dict(symbol="triangle-up-open", size=8, color=color),
                        hovertemplate=f"{run or ''} layer %{{x}}<br>{label(metric)} ∞ (unchanged)<extra></extra>",
                    ),
                    row=row,
                    col=1,
                )
        # Tiny values (the logit-lens KL of an 8-bit run) as 4e-7, as the tables write them: plotly's SI
        # default writes "400n", which reads as a unit beside "nats".
        fig.update_yaxes(title_text=unit(metric), row=row, col=1, **{"exponentformat": "e", **axis})
        if cap is not None and (values >= cap).any():
            fig.add_trace(  # one legend entry for what the triangles mean, whichever runs have them
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="markers",
                    name="△ ∞: layer unchanged",
                    marker=dict(symbol="triangle-up-open", size=8, color=NEUTRAL),
                ),
                row=row,
                col=1,
            )
    fig.update_xaxes(**_layer_ticks(layers))
    fig.update_xaxes(title_text="layer (residual stream after block)", row=len(present), col=1)
    height = max(320, 230 * len(present))
    fig.update_layout(height=height)
    _style(fig, title)
    if fig.layout.legend.orientation == "h":
        # A legend on top sits above the first panel's title, not on it (30 px above the plot area).
        fig.update_layout(margin_t=110, legend_y=1 + 30 / (height - 160))
    return fig


def _rel_error_axis(values: pd.Series) -> dict:
    """Relative error: a log axis when the curves span more than two decades (an 8-bit run beside a removed
    block), so the small one is not a flat line at 0; else linear from 0."""
    positive = values[values > 0].dropna()
    if len(positive) > 1 and positive.max() / positive.min() > 100:
        return _log_axis(positive)
    return dict(rangemode="tozero")


def _cosine_axis(values: pd.Series) -> dict:
    """Cosine similarity up to 1 (the original), down to at least 0.9999: an unchanged layer's 1 ± float noise
    (1e-9) is not drawn as a slope, while an 8-bit run's 0.9995 and a collapse's 0.5 both fill the axis. Ticks
    are the axis' own (never synchronised with a primary axis, which gives values such as 0.96381)."""
    low = min(0.9999, float(values.min()) if not values.dropna().empty else 0.9999)
    span = 1 - low
    return dict(range=[low - span * 0.08, 1 + span * 0.08], tickformat=".5~f", tickmode="auto", nticks=6)


def _panel_axis(metric: str, values: pd.Series) -> tuple[dict, float]:
    """The y axis of one cascade panel and where ∞ markers go (the top of the finite values). The store's
    finite stand-in for ∞ (SQNR of an unchanged layer, 200 dB) never sets the range: it would squash the real
    curves into the bottom of the panel."""
    cap = infinite_at(metric)
    finite = values[values < cap].dropna() if cap is not None else values.dropna()
    if metric == "hidden_cosine":
        return _cosine_axis(finite), 1.0
    if metric == "hidden_rel_error":
        return _rel_error_axis(finite), float(finite.max()) if not finite.empty else 1.0
    if finite.empty:  # every layer unchanged: the ∞ markers alone, on a nominal axis
        return dict(range=[0, 1], showticklabels=False), 0.9
    lo, hi = float(finite.min()), float(finite.max())
    if log_scale(metric) and lo > 0:
        return _log_axis(finite), hi * 1.3
    span = (hi - lo) or max(abs(hi), 1.0)
    top = hi + span * 0.12
    return dict(range=[lo - span * 0.08, top + span * 0.08]), top


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
        horizontal_spacing=0.09,  # room for each panel's colour bar
        shared_yaxes=True,
        subplot_titles=("original", "modified", "modified − original"),
    )
    common = dict(x=labels, y=labels, hovertemplate="query %{y}<br>key %{x}<br>%{z:.4f}<extra></extra>")
    # Each panel its own colour bar, just right of it: weights (0-1) for the original and the modified map, the
    # signed change for the difference.
    domains = [fig.layout[f"xaxis{'' if i == 1 else i}"].domain for i in (1, 2, 3)]

    def bar(col: int, text: str) -> dict:
        return dict(title=dict(text=text, side="right"), x=domains[col][1] + 0.004, len=0.9, thickness=10)

    fig.add_trace(
        go.Heatmap(z=base, colorscale="Blues", zmin=0, zmax=1, colorbar=bar(0, "attention weight"), **common),
        1,
        1,
    )
    fig.add_trace(
        go.Heatmap(
            z=modified, colorscale="Reds", zmin=0, zmax=1, colorbar=bar(1, "attention weight"), **common
        ),
        1,
        2,
    )
    fig.add_trace(
        go.Heatmap(
            z=diff,
            colorscale="RdBu_r",
            zmid=0,
            zmin=-lim,
            zmax=lim,
            colorbar=bar(2, "Δ attention weight"),
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
    # Every bin is a bar, but only the decades are labelled (three labels a decade overlapped at half width);
    # the hover names each bin's range.
    decades = [label for label in labels if label.startswith("1e")]
    fig.update_xaxes(
        title_text="per-token KL(original ‖ modified), nats: upper edge of each log bin",
        **(dict(tickmode="array", tickvals=decades) if len(decades) >= 3 else dict(tickangle=-45)),
    )
    fig.update_yaxes(title_text="share of tokens", tickformat=".0%")
    if metrics:
        # Under the title, not over the bars: the peak can sit anywhere along the axis.
        mean, p99 = metrics.get("kl_mean", float("nan")), metrics.get("kl_p99", float("nan"))
        title = f"{title}<br><sup>mean {mean:.4g} · p99 {p99:.4g} nats</sup>"
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
    fig.update_xaxes(
        title_text="per-token KL(original ‖ modified), nats (log scale)",
        **_log_axis(kl_hist.bin_hi.clip(lower=1e-12)),
    )
    fig.update_yaxes(title_text="share of tokens at or below", tickformat=".0%", range=[0, 1.02])
    return _style(fig, title, legend=len(runs) > 1)


def perplexity_chart(
    metrics: dict[str, float], title: str | None = None, *, modified_label: str = "modified"
) -> go.Figure:
    """Original vs modified perplexity as two labelled bars on a log axis (collapsed models reach thousands).

    The axis always holds both bars. An infinite perplexity (a truncating sampler gave a reference token
    probability 0) is drawn as a hatched bar up to the top of the axis, labelled ∞ with the reason, never left
    out (which would leave one bar on an axis fitted to the other).
    """
    base, mod = float(metrics.get("ppl_base", math.nan)), float(metrics.get("ppl", math.nan))
    finite = [v for v in (base, mod) if math.isfinite(v) and v > 0]
    title = title or "Perplexity, original vs modified"
    if not finite:
        return _empty(title, "no finite perplexity for this run")
    low, high = min(finite), max(finite)
    # From half the lower bar (bars need a floor on a log axis) to room above the higher one for its label.
    axis = _log_axis([low / 2, high * 1.6])
    top = 10 ** axis["range"][1]
    heights, texts, patterns = [], [], []
    for value in (base, mod):
        if math.isfinite(value):
            heights.append(value)
            texts.append(f"{value:.2f}")
            patterns.append("")
        else:
            heights.append(top / 1.25)  # to just under the top: its label stays inside the axis
            texts.append("∞" if value > 0 else "not measured")
            patterns.append("/")
    fig = go.Figure(
        go.Bar(
            x=["original", wrap(modified_label)],
            y=heights,
            marker_color=[ORIGINAL, MODIFIED],
            marker_pattern_shape=patterns,
            text=texts,
            textposition="outside",
            textfont=dict(size=[13 if t != "∞" else 20 for t in texts]),
            cliponaxis=False,
            # The hatched bar's height means nothing: ∞ (some actual next token got probability 0) has no height.
            hovertemplate="%{x}<br>perplexity %{text}<extra></extra>",
        )
    )
    fig.update_yaxes(title_text="perplexity (log scale)", **axis)
    fig.update_xaxes(title_text=None)
    return _style(fig, title, legend=False)


# Panels of the decoding chart: (metric of the modified model, the original's value: a metric, a number, or
# "top_k" for the reference size), in reading order. The original keeps its whole top-K, cuts nothing and
# diverges from itself by 0.
DECODING_PANELS: tuple[tuple[str, str | float], ...] = (
    ("entropy_mean", "entropy_base_mean"),
    ("ece", "ece_base"),
    ("support_topk_mean", "top_k"),
    ("kl_reverse_mean", 0.0),
    ("mass_cut_mean", 0.0),
    ("target_cut_share", 0.0),
)


def decoding_chart(
    metrics: dict[str, float],
    title: str | None = None,
    *,
    top_k: int | None = None,
    modified_label: str = "modified",
) -> go.Figure:
    """What a decoding change does to the distribution a user samples from, one small panel per measure, each
    with the original (blue) and the modified (red) bar: entropy, calibration error, support, reverse KL,
    probability mass cut, next token cut (probes/decoding.py). Panels whose measure the run lacks are left out."""
    title = title or "What the sampler changes"
    panels = []
    for name, reference in DECODING_PANELS:
        value = metrics.get(name)
        if value is None or not math.isfinite(value):
            continue
        if reference == "top_k":
            base = float(top_k) if top_k else None
        elif isinstance(reference, str):
            base = metrics.get(reference)
        else:
            base = reference
        panels.append((name, base, float(value)))
    if not panels:
        return _empty(title, "this run has no decoding measures (measured before they existed)")
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        # The unit in the panel title (no per-panel axis titles: they collide with the neighbouring panel).
        subplot_titles=[header_with_unit(n) for n, _, _ in panels],
        horizontal_spacing=0.05,
    )
    for col, (name, base, value) in enumerate(panels, start=1):
        share = unit(name) == "share"
        fmt = "{:.1%}" if share else ("{:.1f}" if unit(name) == "tokens" else "{:.3g}")
        ys = [base if base is not None else math.nan, value]
        fig.add_trace(
            go.Bar(
                x=["original", wrap(modified_label, 14)],
                y=ys,
                marker_color=[ORIGINAL, MODIFIED],
                text=["—" if base is None else fmt.format(base), fmt.format(value)],
                textposition="outside",
                cliponaxis=False,
                showlegend=False,
                hovertemplate="%{x}<br>" + label(name) + " %{text}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        # Room above the taller bar for its label; a measure that is 0 on both sides gets a small nominal axis
        # (0-5 % for a share) rather than a 0-1 axis that suggests a scale the value never approaches.
        peak = max((v for v in ys if v == v), default=0.0)
        fig.update_yaxes(
            range=[0, peak * 1.25 if peak > 0 else (0.05 if share else 0.01)],
            tickformat=".0%" if share else None,
            nticks=5,
            row=1,
            col=col,
        )
    fig.update_annotations(font_size=12, yshift=6)  # the panel titles, clear of the top tick labels
    fig.update_xaxes(tickangle=0, tickfont=dict(size=10))
    fig.update_layout(height=380)
    return _style(fig, title, legend=False)
