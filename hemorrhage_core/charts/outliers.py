"""Activation outliers per input channel: why static activation scales fail."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import DASHES, MITIGATED, MODIFIED, _empty, _layer_ticks, _log_axis, _style, shade


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
