"""What a family page draws under its headline numbers: the charts that mean something for the change measured.

A change of the model (weights, blocks) gets the per-layer cascade, the attention heatmap, the KL histogram and
the perplexity bars. A change of decoding only leaves every hidden state and attention map as they were (zero by
construction, so those charts would fill half the page with nothing): it gets what a sampler changes instead
(entropy, calibration, support, reverse KL, the probability mass cut) and, where the forward KL and the
perplexity are infinite by definition, a sentence that says why. `VIEWS` maps the kind of change to its drawing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.metric_names import header_with_unit, label, unit
from hemorrhage_core.runner import RunResult
from hemorrhage_core.specs import RunSpec

from .generate import generation_panel
from .runs import export_caption
from .widgets import chart, table


def change_kind(spec: RunSpec) -> str:
    """ "decoding" when no modification of the chain touches the model (only the logits a user samples from),
    else "model"."""
    return "decoding" if spec.mods and not spec.touches_weights else "model"


def infinity_note(metrics: dict[str, float]) -> str | None:
    """Why perplexity and KL(original ‖ modified) read ∞ (a truncating sampler), or None when they are finite."""
    share, cut = metrics.get("kl_forward_infinite_share") or 0.0, metrics.get("target_cut_share") or 0.0
    if not share:
        return None
    return (
        f"**Why ∞.** The sampler gives probability 0 to tokens the original can emit at {share:.0%} of positions, "
        f"so KL(original ‖ modified) is infinite there by definition; at {cut:.1%} of positions it is the actual "
        "next token that gets 0, so perplexity is infinite too. Both are true and say only that the sampler cuts. "
        "What it cuts and how much it changes the distribution is measured below."
    )


def _model_view(result: RunResult, name: str) -> None:
    caption = export_caption(result.spec, result.settings, result.metrics)
    left, right = st.columns(2)
    with left:
        chart(charts.layer_loss_chart(result.layers), f"{name}-layer-loss", caption=caption)
    with right:
        chart(charts.attention_heatmap(result.heads), f"{name}-attention", caption=caption)
    left, right = st.columns(2)
    with left:
        chart(charts.kl_distribution_chart(result.kl_hist, result.metrics), f"{name}-kl", caption=caption)
    with right:
        chart(
            charts.perplexity_chart(result.metrics, modified_label=result.spec.label()),
            f"{name}-perplexity",
            caption=caption,
        )


def _decoding_view(result: RunResult, name: str) -> None:
    m, caption = result.metrics, export_caption(result.spec, result.settings, result.metrics)
    if note := infinity_note(m):
        st.info(note, icon=":material/all_inclusive:")
    chart(
        charts.decoding_chart(m, top_k=result.spec.probe.top_k, modified_label=result.spec.label()),
        f"{name}-decoding",
        caption=caption,
    )
    left, right = st.columns(2)
    with left:
        if math.isfinite(m.get("kl_mean", math.nan)):
            chart(charts.kl_distribution_chart(result.kl_hist, m), f"{name}-kl", caption=caption)
        else:  # no histogram of an infinite KL: the decoding measures as numbers instead
            numbers = decoding_table(m, result.spec.probe.top_k)
            table(readable(numbers), f"{name}-decoding", export=numbers)
    with right:
        chart(
            charts.perplexity_chart(m, modified_label=result.spec.label()),
            f"{name}-perplexity",
            caption=caption,
        )
    st.caption(
        "Per-layer and attention charts are left out: decoding changes only the next-token distribution, so every "
        "hidden state and attention map is the original's."
    )
    st.subheader("Generation divergence")
    # Sampled by default: a temperature or truncation change keeps the argmax, so greedy continuations match.
    generation_panel(result, f"{name}-generation", mode="sampled")


# (measure, the original's value: a metric, a number or "top_k"), the chart's panels first, then quantiles.
TABLE_ROWS: tuple[tuple[str, str | float], ...] = (
    *charts.DECODING_PANELS,
    ("kl_reverse_p99", 0.0),
    ("mass_cut_p90", 0.0),
    ("mass_cut_max", 0.0),
    ("kl_forward_infinite_share", 0.0),
    ("support_tail_share", 1.0),
)


def decoding_table(metrics: dict[str, float], top_k: int) -> pd.DataFrame:
    """measure | original | modified for the decoding measures the run has (labels from the metric registry)."""
    rows = []
    for name, reference in TABLE_ROWS:
        if metrics.get(name) is None:
            continue
        base = (
            float(top_k)
            if reference == "top_k"
            else metrics.get(reference)
            if isinstance(reference, str)
            else reference
        )
        rows.append({"name": name, "measure": label(name), "original": base, "modified": metrics[name]})
    return pd.DataFrame(rows, columns=["name", "measure", "original", "modified"])


def readable(numbers: pd.DataFrame) -> pd.DataFrame:
    """The decoding table as shown in half a page: short headers, shares as percentages, 3 significant digits."""

    def fmt(name: str, v: float | None) -> str:
        if v is None or v != v:
            return "—"
        return f"{v:.1%}" if unit(name) == "share" else f"{v:.3g}"

    return pd.DataFrame(
        {
            "measure": [header_with_unit(n) for n in numbers.name],
            "original": [fmt(n, v) for n, v in zip(numbers.name, numbers.original, strict=True)],
            "modified": [fmt(n, v) for n, v in zip(numbers.name, numbers.modified, strict=True)],
        }
    )


VIEWS: dict[str, Callable[[RunResult, str], None]] = {"model": _model_view, "decoding": _decoding_view}


def draw_profile(result: RunResult, name: str) -> None:
    """The charts of one measured run under `name`-prefixed keys, chosen by what its chain changes."""
    VIEWS[change_kind(result.spec)](result, name)
