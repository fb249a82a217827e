"""Layers: the information-loss cascade for one run or several overlaid, and the modules that bleed most."""

import streamlit as st

from dashboard.layers import module_section
from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.widgets import chart, run_picker, stored, table
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
if (result := stored(keys[0])) is not None:
    module_section(result)
