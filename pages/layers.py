"""Layers: the information-loss cascade for one run or several overlaid, and the modules that bleed most."""

import streamlit as st

from dashboard import analyses
from dashboard.live import progress_bar
from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.widgets import chart, pending, run_picker, show_error, stored, table
from hemorrhage_core import charts
from hemorrhage_core.analysis import views
from hemorrhage_core.metric_names import METRICS, label

through_app()

st.title("Layers: where the information is lost")
st.caption(
    "Per block, the residual stream of the modified model against the original on the same tokens: relative "
    "error, cosine similarity and SQNR (and logit-lens KL where measured). Error that grows with depth is the "
    "cascade; compare runs to see which settings amplify it."
)
store = runner().store
keys = run_picker("Runs to overlay", "layers.runs", multi=True)
if not keys:
    st.stop()
layers = views.layer_rows(store, keys)
present = [m for m in METRICS if m in set(layers.metric)]
default = [m for m in present if m.startswith("hidden_") or m in ("lens_kl", "logit_lens_kl")]
metrics = st.multiselect(
    "Per-layer metrics", present, default=default, format_func=label, key="layers.metrics"
)
chart(charts.cascade_chart(layers, metrics), "layers-cascade")
with st.expander("Per-layer table"):
    table(views.layer_table(layers), "layers")

st.subheader("Modules that bleed most")
if pending("hemorrhage_core.analysis.modules", "The per-module ranking (‖(W′−W)X‖ on calibration inputs)"):
    result = stored(keys[0])
    if result is None:
        st.stop()
    ranked = analyses.stored_module_ranking(runner(), result.run_key)
    st.caption(
        f"For **{result.spec.label()}**: every modified weight fed the original model's own inputs on calibration "
        "text from the end of the corpus, so each module's own damage is separated from what it inherits."
    )
    if ranked.empty:
        if not st.button(f"Rank the modules of {result.spec.label()}", key="layers.rank"):
            st.info(
                "Not ranked yet: ranking rebuilds the modified model and runs 8 × 256 calibration tokens."
            )
            st.stop()
        try:
            with progress_bar("Ranking modules on calibration text") as report:
                ranked = analyses.compute_module_ranking(runner(), result, progress=report)
        except Exception as exc:
            show_error(exc, "Ranking the modules")
            st.stop()
    comparable = ranked[ranked.comparable]
    chart(
        charts.module_ranking_chart(
            comparable, value="rel_error", units="relative output error ‖f′(X)−f(X)‖/‖f(X)‖", top=20
        ),
        "layers-modules",
    )
    table(ranked, "module-ranking")
