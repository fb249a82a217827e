"""Paper: the seed paper's tables drawn as charts, cited, with our own runs of the same family overlaid on a
normalised axis (perplexity ratio to each model's own baseline)."""

import pandas as pd
import streamlit as st

from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.widgets import chart, table
from hemorrhage_core import charts, paper
from hemorrhage_core.analysis import views
from hemorrhage_core.specs.families import family

through_app()

st.title("The paper's results, beside ours")
st.info("**Source.** " + paper.CITATION)

key = st.radio("Table", list(paper.TABLES), format_func=lambda k: paper.TABLES[k].title, key="paper.table")
meta = paper.TABLES[key]
st.caption(meta.note)

if key == "decoding":
    scores = paper.decoding_scores()
    task = st.radio("Task", scores.task.drop_duplicates().tolist(), horizontal=True, key="paper.task")
    chart(charts.decoding_heatmap(scores, task), f"paper-decoding-{task}")
    table(paper.raw(key), "paper-decoding")
    st.info(
        "These are task scores of 7–14B instruct models, not perplexities: our decoding runs (KL and "
        "agreement against the original at T = 1 on a small model) have no common axis with them, so none "
        "are overlaid."
    )
    st.stop()

rows, baselines = paper.normalised(key)
bits = key in ("quant", "gguf")
chart(
    charts.paper_chart(
        rows, x_label=meta.x_label, y="ppl", y_label="WikiText-2 perplexity", title=meta.title, reverse_x=bits
    ),
    f"paper-{key}",
)

st.subheader("Normalised: perplexity ratio to each baseline, with our runs")
store = runner().store
history = views.history(store)
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
)
if ours.empty:
    st.caption(f"No stored {family(meta.family).title} runs to overlay yet.")
else:
    st.caption(
        f"Ours: {len(ours)} stored {family(meta.family).title} run(s), each against its own original "
        "model on its own corpus and window. Paper: LLaMA2-7b (or Qwen2.5) on WikiText-2. The shapes are "
        "comparable; the absolute values are not."
    )
if key == "gguf":
    st.subheader("Task accuracy (ARC, MMLU) relative to 16 bits, with our task runs")
    from hemorrhage_core.tasks.tables import sources_text, stored_frame

    task_rows = stored_frame(store, {k: k for k in history.run_key}) if not history.empty else pd.DataFrame()
    ours_tasks = paper.our_task_points(history, task_rows)
    chart(charts.paper_task_chart(paper.task_ratios(), ours_tasks), "paper-gguf-tasks")
    st.caption(
        "Each model's accuracy over its own FP16 (paper) or original (ours, on the same items, 0-shot as "
        "lm-evaluation-harness) accuracy. Ours come from runs evaluated with tasks (Tasks page or `hemlab run "
        "--tasks arc_challenge,arc_easy,mmlu`); our baseline is already a 4-bit GGUF dequantized, and our ARC is "
        "its validation split. "
        + ("No stored quantization run has ARC / MMLU results yet. " if ours_tasks.empty else "")
        + " ".join(sources_text(["arc_challenge", "mmlu"]))
    )
with st.expander("Baselines used to normalise each row (and why)"):
    table(baselines, f"paper-{key}-baselines")
    if unnormalised:
        st.caption("Not normalised (no baseline): " + ", ".join(unnormalised))
with st.expander("The table as transcribed"):
    table(paper.raw(key), f"paper-{key}")
with st.expander("SOURCES.md (citation and caveats)"):
    st.markdown(paper.sources_markdown())
