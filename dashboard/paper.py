"""The Paper page's parts: the seed paper's table as printed, then normalised to each row's baseline with our
stored runs of the same family overlaid (exports captioned with the paper's source and our series), and the
GGUF table's task accuracies."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hemorrhage_core import charts, paper
from hemorrhage_core.analysis import views
from hemorrhage_core.specs.families import family
from hemorrhage_core.store import Store
from hemorrhage_core.tasks.tables import sources_text, stored_frame

from .runs import series_caption
from .widgets import chart, table

SOURCE = "Paper: Ma et al., Model Hemorrhage and the Robustness Limits of LLMs, arXiv:2503.23924 (2025)"


def decoding_table() -> None:
    """The decoding table: task scores, with why none of our runs is overlaid."""
    scores = paper.decoding_scores()
    task = st.radio("Task", scores.task.drop_duplicates().tolist(), horizontal=True, key="paper.task")
    chart(charts.decoding_heatmap(scores, task), f"paper-decoding-{task}", caption=SOURCE)
    table(paper.raw("decoding"), "paper-decoding")
    st.info(
        "These are task scores of 7–14B instruct models, not perplexities: our decoding runs (KL and "
        "agreement against the original at T = 1 on a small model) have no common axis with them, so none "
        "are overlaid."
    )


def normalised(store: Store, history: pd.DataFrame, key: str) -> list[str]:
    """The table as printed, then its perplexity ratios with our runs overlaid; returns the methods that
    have no baseline (drawn unnormalised only)."""
    meta = paper.TABLES[key]
    rows, baselines = paper.normalised(key)
    bits = key in ("quant", "gguf")
    chart(
        charts.paper_chart(
            rows,
            x_label=meta.x_label,
            y="ppl",
            y_label="WikiText-2 perplexity",
            title=meta.title,
            reverse_x=bits,
        ),
        f"paper-{key}",
        caption=SOURCE,
    )
    st.subheader("Normalised: perplexity ratio to each baseline, with our runs")
    counts = (
        views.layer_counts(store, history.run_key.tolist())
        if meta.family == "depth" and not history.empty
        else {}
    )
    ours = paper.our_points(history, meta.family, counts)
    unnormalised = baselines[baselines.baseline_ppl.isna()].method.tolist()
    drawn = rows[~rows.method.isin(unnormalised)]
    chart(
        charts.paper_overlay_chart(
            drawn[drawn.pattern == ""],
            ours,
            x_label=meta.x_label,
            title=f"{meta.title}: ratio to baseline, ours overlaid",
            reverse_x=bits,
        ),
        f"paper-{key}-normalised",
        caption=series_caption(
            ours, meta.x_label, source=SOURCE + "; ours (perplexity ratio to our original):"
        ),
    )
    title = family(meta.family).title
    if ours.empty:
        st.caption(f"No stored {title} runs to overlay yet.")
    else:
        st.caption(
            f"Ours: {len(ours)} stored {title} run(s), each against its own original model on its own corpus and "
            "window. Paper: LLaMA2-7b (or Qwen2.5) on WikiText-2. The shapes are comparable; the absolute values "
            "are not."
        )
    return unnormalised


def gguf_tasks(store: Store, history: pd.DataFrame) -> None:
    st.subheader("Task accuracy (ARC, MMLU) relative to 16 bits, with our task runs")
    task_rows = stored_frame(store, {k: k for k in history.run_key}) if not history.empty else pd.DataFrame()
    ours = paper.our_task_points(history, task_rows)
    chart(
        charts.paper_task_chart(paper.task_ratios(), ours),
        "paper-gguf-tasks",
        caption=series_caption(ours, "bits", source=SOURCE + "; ours (accuracy ratio to our original):"),
    )
    st.caption(
        "Each model's accuracy over its own FP16 (paper) or original (ours, on the same items, 0-shot as "
        "lm-evaluation-harness) accuracy. Ours come from runs evaluated with tasks (Tasks page or `hemlab run "
        "--tasks arc_challenge,arc_easy,mmlu`); our baseline is already a 4-bit GGUF dequantized, and our ARC is "
        "its validation split. "
        + ("No stored quantization run has ARC / MMLU results yet. " if ours.empty else "")
        + " ".join(sources_text(["arc_challenge", "mmlu"]))
    )


def appendix(key: str, unnormalised: list[str]) -> None:
    _, baselines = paper.normalised(key)
    with st.expander("Baselines used to normalise each row (and why)"):
        table(baselines, f"paper-{key}-baselines")
        if unnormalised:
            st.caption("Not normalised (no baseline): " + ", ".join(unnormalised))
    with st.expander("The table as transcribed"):
        table(paper.raw(key), f"paper-{key}")
    with st.expander("SOURCES.md (citation and caveats)"):
        st.markdown(paper.sources_markdown())
