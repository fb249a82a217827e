"""Before / after a mitigation: recovered shares, KL overlays and attention pairs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..metric_names import METRICS, label, unit
from .profile import _edge
from .style import MITIGATED, MODIFIED, ORIGINAL, _empty, _log_axis, _runs_of, _style


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
