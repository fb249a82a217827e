"""Benchmark tasks (hemorrhage_core/tasks): accuracy with intervals, the flip matrix, and the paper's GGUF
ARC / MMLU columns relative to FP16 with our task runs."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import FAMILY_COLORS, MODIFIED, ORIGINAL, _empty, _style, shade


def task_accuracy_chart(summary: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Left: accuracy per task of the original (blue) and each run (red shades), with 95 % Wilson intervals.
    Right: the paired difference (run − original) with Newcombe's 95 % interval, zero dotted. `summary`: the tidy
    frame of tasks/tables.py (label, task, metric, base, base_lo, ... difference_hi)."""
    title = title or "Task accuracy, original vs modified (95 % intervals)"
    if summary.empty:
        return _empty(title, "no task results: evaluate tasks first")
    df = summary.copy()
    df["x"] = df.task + " · " + df.metric
    xs = list(dict.fromkeys(df.x))
    labels = list(dict.fromkeys(df.label))
    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
        subplot_titles=["accuracy", "difference, modified − original"],
    )  # fmt: skip

    def err(frame, col):
        v, lo, hi = frame[col], frame[f"{col}_lo"], frame[f"{col}_hi"]
        return dict(type="data", array=(hi - v).tolist(), arrayminus=(v - lo).tolist(), visible=True)

    base = df.drop_duplicates("x").set_index("x").loc[xs].reset_index()
    fig.add_trace(
        go.Bar(x=base.x, y=base.base, name="original", marker_color=ORIGINAL, error_y=err(base, "base"),
               hovertemplate="%{x}<br>original %{y:.3f}<extra></extra>"),
        row=1, col=1,
    )  # fmt: skip
    for i, lab in enumerate(labels):
        g = df[df.label == lab].set_index("x").reindex(xs).reset_index()
        color = shade(MODIFIED, i, len(labels))
        fig.add_trace(
            go.Bar(x=g.x, y=g.modified, name=lab, marker_color=color, error_y=err(g, "modified"),
                   hovertemplate="%{x}<br>" + lab.replace("%", "%%") + " %{y:.3f}<extra></extra>"),
            row=1, col=1,
        )  # fmt: skip
        fig.add_trace(
            go.Scatter(x=g.x, y=g.difference, mode="markers", name=lab, showlegend=False,
                       marker=dict(color=color, size=9), error_y=err(g, "difference"),
                       hovertemplate="%{x}<br>difference %{y:+.3f}<extra></extra>"),
            row=1, col=2,
        )  # fmt: skip
    fig.add_hline(y=0, line=dict(color=ORIGINAL, dash="dot"), row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_yaxes(tickformat=".0%", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(tickformat="+.0%", row=1, col=2)
    fig.update_xaxes(tickangle=-30, automargin=True)
    return _style(fig, title)


def flip_matrix_chart(a: int, b: int, c: int, d: int, title: str | None = None) -> go.Figure:
    """The paired 2×2 table: rows the original right / wrong, columns the modified model right / wrong; the
    off-diagonal cells are the flips (right→wrong, wrong→right). Counts and shares of the items in each cell."""
    n = a + b + c + d
    title = title or "Flips"
    if n == 0:
        return _empty(title, "no items")
    z = [[a, b], [c, d]]
    names = [["both right", "right→wrong"], ["wrong→right", "both wrong"]]
    text = [[f"{names[i][j]}<br>{z[i][j]} ({z[i][j] / n:.0%})" for j in range(2)] for i in range(2)]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=["modified right", "modified wrong"], y=["original right", "original wrong"], text=text,
            texttemplate="%{text}", colorscale=[[0, "#f4f5f7"], [1, MODIFIED]], showscale=False,
            hovertemplate="%{y}, %{x}: %{z}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return _style(fig, title, legend=False)


def paper_task_chart(paper_rows: pd.DataFrame, ours: pd.DataFrame, title: str | None = None) -> go.Figure:
    """One panel per task (ARC-Challenge, ARC-Easy, MMLU): accuracy over the FP16 (original) accuracy against
    bits, the paper's Qwen2.5 GGUF models as grey lines and our stored quantization runs in the quant colour."""
    title = title or "Task accuracy relative to 16 bits: the paper's GGUF Qwen2.5 and our runs"
    if paper_rows.empty:
        return _empty(title, "no task columns in the paper table")
    tasks = list(dict.fromkeys(paper_rows.task))
    fig = make_subplots(
        rows=1, cols=len(tasks), subplot_titles=tasks, shared_yaxes=True, horizontal_spacing=0.05
    )
    models = list(dict.fromkeys(paper_rows.model))
    for col, task in enumerate(tasks, start=1):
        for i, model in enumerate(models):
            g = paper_rows[(paper_rows.task == task) & (paper_rows.model == model)].sort_values("x")
            fig.add_trace(
                go.Scatter(x=g.x, y=g.ratio, mode="lines+markers", name=f"paper: {model}", legendgroup=model,
                           showlegend=col == 1, line=dict(color=shade(FAMILY_COLORS["paper"], i, len(models)), width=1),
                           marker=dict(size=5), hovertemplate=model + " %{x} bits: %{y:.2f}<extra></extra>"),
                row=1, col=col,
            )  # fmt: skip
        mine = ours[ours.task == task] if not ours.empty else ours
        for j, (series, g) in enumerate(mine.groupby("series", sort=False) if not mine.empty else []):
            fig.add_trace(
                go.Scatter(x=g.x, y=g.ratio, mode="lines+markers", name=series, legendgroup=series,
                           line=dict(color=shade(FAMILY_COLORS["quant"], j, max(1, mine.series.nunique())), width=3),
                           marker=dict(size=9), customdata=g.n_items,
                           hovertemplate=series + " %{x} bits: %{y:.2f} (%{customdata} items)<extra></extra>"),
                row=1, col=col,
            )  # fmt: skip
        fig.add_hline(y=1.0, line=dict(color=ORIGINAL, dash="dot"), row=1, col=col)
        fig.update_xaxes(title_text="bits per weight", autorange="reversed", row=1, col=col)
    fig.update_yaxes(title_text="accuracy / 16-bit accuracy", row=1, col=1)
    return _style(fig, title)
