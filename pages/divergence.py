"""Divergence: how the modified model's predictions differ: KL distribution, Δp, top-1 agreement, generations."""

import streamlit as st

from dashboard import divergence
from dashboard.generate import generation_panel
from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.widgets import headline, run_picker, stored

through_app()

st.title("Divergence: what the model now predicts")
st.caption(
    "Per position of the evaluation windows: KL(original ‖ modified) of the next-token distribution, the change "
    "Δp of the probability given to the true next token, and whether the most likely token is still the same."
)
keys = run_picker("Runs", "divergence.runs", multi=True)
if not keys:
    st.stop()
result = stored(keys[0])
if result is None:
    st.stop()
headline(result)
divergence.distributions(runner().store, result, keys)

st.subheader("Generations, side by side")
generation_panel(result, "divergence")

st.subheader("Flips on a cloze set")
divergence.flips_panel(result)
