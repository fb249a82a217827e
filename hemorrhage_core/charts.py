"""Tidy DataFrame -> Plotly figure. No Streamlit and no SQL here, so every chart is testable and exportable.

One visual language: the original model is always blue, the modified one always red, each method family has
its own colour, axes carry units, and perplexity-like quantities use log scales where they explode.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

ORIGINAL = "#4C78A8"
MODIFIED = "#E45756"
FAMILY_COLORS = {
    "quant": "#F58518",
    "prune": "#54A24B",
    "decode": "#B279A2",
    "depth": "#9D755D",
    "mitigation": "#72B7B2",
}
TEMPLATE = "plotly_white"
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)


def _style(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        template=TEMPLATE,
        font=FONT,
        margin=dict(l=60, r=20, t=60, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        # Transparent backgrounds keep the chart readable in Streamlit's light and dark themes; exports set white.
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def attention_heatmap(heads: pd.DataFrame, metric: str = "attn_js", title: str | None = None) -> go.Figure:
    """Layer x head heatmap of one per-head metric (default: JS divergence of attention rows, nats)."""
    data = heads[heads.metric == metric]
    grid = data.pivot(index="layer", columns="head", values="value").sort_index()
    units = {"attn_js": "JS divergence (nats)", "attn_entropy_shift": "entropy shift (nats)"}.get(metric, metric)
    fig = go.Figure(
        go.Heatmap(
            z=grid.values,
            x=[f"h{h}" for h in grid.columns],
            y=[f"L{layer}" for layer in grid.index],
            colorscale="Reds" if metric != "attn_entropy_shift" else "RdBu_r",
            zmid=0 if metric == "attn_entropy_shift" else None,
            colorbar=dict(title=units),
            hovertemplate="layer %{y} head %{x}<br>" + units + " %{z:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="attention head")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    return _style(fig, title or "Attention disruption per layer and head")


def layer_loss_chart(layers: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Relative error ‖h′−h‖/‖h‖ (left axis) and cosine similarity (right axis) of the residual stream per layer.

    `layers` is tidy (layer, metric, value) and may carry a `run` column to overlay several runs.
    """
    runs = layers["run"].unique().tolist() if "run" in layers.columns else [None]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    dash = ["solid", "dash", "dot", "dashdot"]
    for i, run in enumerate(runs):
        df = layers if run is None else layers[layers.run == run]
        suffix = "" if run is None else f" — {run}"
        rel = df[df.metric == "hidden_rel_error"].sort_values("layer")
        cos = df[df.metric == "hidden_cosine"].sort_values("layer")
        fig.add_trace(
            go.Scatter(x=rel.layer, y=rel.value, name=f"relative error{suffix}", mode="lines+markers",
                       line=dict(color=MODIFIED, dash=dash[i % 4])),
            secondary_y=False,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=cos.layer, y=cos.value, name=f"cosine (modified vs original){suffix}", mode="lines",
                       line=dict(color=ORIGINAL, dash=dash[i % 4])),
            secondary_y=True,
        )  # fmt: skip
    fig.add_hline(y=1.0, line=dict(color=ORIGINAL, width=1, dash="dot"), secondary_y=True,
                  annotation_text="original (cosine 1)", annotation_position="bottom right")  # fmt: skip
    fig.update_xaxes(title_text="layer (residual stream after block)")
    fig.update_yaxes(title_text="relative error ‖h′−h‖/‖h‖", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="cosine similarity", secondary_y=True)
    return _style(fig, title or "Layer-wise information loss (the cascade)")


def kl_distribution_chart(kl_hist: pd.DataFrame, metrics: dict[str, float] | None = None, title: str | None = None) -> go.Figure:
    """Histogram of per-token KL(base‖modified) on log-spaced bins, with mean and p99 marked."""
    hist = kl_hist.copy()
    hist["label"] = [f"{lo:.0e}–{hi:.0e}" for lo, hi in zip(hist.bin_lo, hist.bin_hi, strict=True)]
    total = max(int(hist["count"].sum()), 1)
    fig = go.Figure(
        go.Bar(
            x=hist.label,
            y=hist["count"] / total,
            marker_color=MODIFIED,
            name="share of tokens",
            hovertemplate="KL %{x} nats<br>%{y:.1%} of tokens<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="per-token KL(original ‖ modified), nats (log bins; first bin includes 0)")
    fig.update_yaxes(title_text="share of tokens", tickformat=".0%")
    if metrics:
        note = f"mean {metrics.get('kl_mean', float('nan')):.4g} · p99 {metrics.get('kl_p99', float('nan')):.4g} nats"
        fig.add_annotation(text=note, xref="paper", yref="paper", x=0.99, y=0.98, showarrow=False, align="right")
    return _style(fig, title or "Divergence: distribution of per-token KL")


def perplexity_chart(metrics: dict[str, float], title: str | None = None) -> go.Figure:
    """Original vs modified perplexity as two bars (log axis: collapsed models reach thousands)."""
    fig = go.Figure(
        go.Bar(
            x=["original", "modified"],
            y=[metrics["ppl_base"], metrics["ppl"]],
            marker_color=[ORIGINAL, MODIFIED],
            text=[f"{metrics['ppl_base']:.2f}", f"{metrics['ppl']:.2f}"],
            textposition="outside",
        )
    )
    fig.update_yaxes(title_text="perplexity (log scale)", type="log")
    return _style(fig, title or "Perplexity, original vs modified")


def export_bytes(fig: go.Figure, fmt: str, *, width: int = 1000, height: int = 560) -> bytes:
    """PNG/SVG/PDF through kaleido (needs Chrome: Debian's chromium), or standalone HTML (plotly.js inlined)."""
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    printable = go.Figure(fig).update_layout(paper_bgcolor="white", plot_bgcolor="white")
    return printable.to_image(format=fmt, width=width, height=height)
