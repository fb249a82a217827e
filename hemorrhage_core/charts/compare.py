"""Charts across runs: metric bars, sweep curves with thresholds, quality against bytes of weights."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..metric_names import label, log_scale, unit
from .style import NEUTRAL, ORIGINAL, THRESHOLDS, _empty, _log_axis, _reference_line, _style, run_styles


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
            lo, hi = sorted(zones[s])
            # A zone of one setting (8 bits only) is widened by a sliver of the axis on each side: it would
            # otherwise be a zero-width band, a label floating over nothing.
            span = float(points[x].max() - points[x].min()) or 1.0
            pad = span * 0.02 if hi == lo else 0.0
            fig.add_vrect(
                x0=lo - pad,
                x1=hi + pad,
                fillcolor=color,
                opacity=0.2,
                line=dict(color=color, width=1, dash="dot"),
                layer="below",
                annotation_text="robust (≤ 1.1×)" + (f" — {s}" if len(series) > 1 else ""),
                # Centred inside the band: at an edge that is the axis (8 bits on a reversed axis) the label
                # sat on the tick labels.
                annotation_position="top",
                annotation_font_size=11,
                annotation_font_color=color,
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
                line=dict(color=NEUTRAL, width=1.5, dash="dash"),
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
