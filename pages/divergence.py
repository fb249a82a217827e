"""Divergence: how the modified model's predictions differ: KL distribution, Δp, top-1 agreement, generations."""

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.ui import views
from hemorrhage_core.ui.navigation import through_app
from hemorrhage_core.ui.state import runner
from hemorrhage_core.ui.widgets import chart, headline, pending, run_picker, stored, table

through_app()

st.title("Divergence: what the model now predicts")
st.caption(
    "Per position of the evaluation windows: KL(original ‖ modified) of the next-token distribution, the change "
    "Δp of the probability given to the true next token, and whether the most likely token is still the same."
)
store = runner().store
keys = run_picker("Runs", "divergence.runs", multi=True)
if not keys:
    st.stop()
result = stored(keys[0])
if result is None:
    st.stop()
headline(result)
left, right = st.columns(2)
with left:
    chart(
        charts.kl_distribution_chart(
            result.kl_hist, result.metrics, title=f"Per-token KL — {result.spec.label()}"
        ),
        "divergence-kl-hist",
    )
with right:
    chart(charts.kl_cdf_chart(views.kl_hist_rows(store, keys)), "divergence-kl-cdf")

compared = views.compared_runs(store, keys)
cols = [
    c
    for c in [
        "label",
        "model",
        "corpus",
        "ppl_ratio",
        "kl_mean",
        "kl_median",
        "kl_p90",
        "kl_p99",
        "kl_max",
        "top1_agreement",
        "top5_overlap",
        "dp_mean",
        "dp_rms",
    ]
    if c in compared.columns
]
chart(
    charts.metric_bars_chart(compared, ("top1_agreement", "top5_overlap", "dp_rms")), "divergence-agreement"
)
table(compared[cols], "divergence-metrics")

st.subheader("Generations, side by side")
pending("hemorrhage_core.generation", "Side-by-side generation of the original and modified model")
