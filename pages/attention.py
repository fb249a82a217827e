"""Attention: the layer × head disruption heatmap; pick a cell to see the attention maps on a prompt."""

import streamlit as st

from dashboard.attention import heatmap_section, maps_section
from dashboard.navigation import through_app
from dashboard.widgets import run_picker, stored

through_app()

st.title("Attention disruption")
st.caption(
    "Per layer and head, on the attention probe set (the first 128 tokens of the first 4 evaluation windows, by "
    "default): Jensen–Shannon divergence between the original and modified attention rows, the entropy shift, and "
    "the attention-sink mass. Click a cell (or pick it below) to inspect it."
)
keys = run_picker("Run", "attention.run")
if not keys:
    st.stop()
result = stored(keys[0])
if result is None:
    st.stop()
if result.heads.empty:
    st.info(
        "This run has no per-head rows (its heads no longer correspond to the original's, e.g. after a "
        "structural change that altered the head count)."
    )
    st.stop()
if not result.spec.touches_weights:
    st.info(
        "This run changes decoding only: the model's attention is the original's, so every cell below is 0 by "
        "construction. Pick a run that changes weights or blocks to see where attention is disrupted."
    )
layer, head = heatmap_section(result)
maps_section(result, layer, head)
