"""The paper's tables and our runs on a normalised axis; decoding heatmaps and per-step KL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from .style import (
    DASHES,
    PAPER_PALETTE,
    THRESHOLDS,
    _empty,
    _log_axis,
    _reference_line,
    _runs_of,
    _style,
    run_styles,
)


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
    """The paper's curves (thin, dashed, one PAPER_PALETTE colour per method: method, x, ratio) with our runs
    (bold diamonds in the family colour: series, x, ratio, family) on one normalised axis: perplexity ratio to
    each model's own baseline."""
    fig = go.Figure()
    methods = paper["method"].drop_duplicates().tolist() if not paper.empty else []
    for i, method in enumerate(methods):
        d = paper[paper.method == method].dropna(subset=["ratio"]).sort_values("x")
        color = PAPER_PALETTE[i % len(PAPER_PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=d.x,
                y=d.ratio,
                mode="lines+markers",
                name=f"paper: {method}",
                line=dict(color=color, width=1.5, dash=DASHES[1 + i % (len(DASHES) - 1)]),
                marker=dict(size=5, symbol="circle"),
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


def step_kl_chart(steps: pd.DataFrame, title: str | None = None, *, reverse: bool = False) -> go.Figure:
    """Per-step KL along the original model's own generation (tidy: step, kl[, kl_reverse, run, family]); log y.
    `reverse`: KL(modified ‖ original) instead, finite where a truncating sampler makes the forward KL ∞."""
    column = "kl_reverse" if reverse else "kl"
    title = title or (
        "Per-step reverse KL along the original trajectory"
        if reverse
        else "Per-step KL along the original trajectory"
    )
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
                y=d[column].clip(lower=1e-8),
                mode="lines+markers",
                name=str(run or "modified"),
                line=dict(color=color, dash=dash),
            )
        )
    fig.update_xaxes(title_text="generated token (step)")
    # A step where both models agree exactly has KL 0: drawn at 1e-8 so the log axis can hold it.
    divergence = "KL(modified ‖ original)" if reverse else "KL(original ‖ modified)"
    fig.update_yaxes(
        title_text=f"{divergence}, nats (log scale)", **_log_axis(steps[column].clip(lower=1e-8))
    )
    return _style(fig, title, legend=len(runs) > 1)
