"""Paper: the seed paper's tables drawn as charts, cited, with our own runs of the same family overlaid on a
normalised axis (perplexity ratio to each model's own baseline)."""

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
with st.expander("Baselines used to normalise each row (and why)"):
    table(baselines, f"paper-{key}-baselines")
    if unnormalised:
        st.caption("Not normalised (no baseline): " + ", ".join(unnormalised))
with st.expander("The table as transcribed"):
    table(paper.raw(key), f"paper-{key}")
with st.expander("SOURCES.md (citation and caveats)"):
    st.markdown(paper.sources_markdown())
