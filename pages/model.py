"""Model: choose what every page measures: the model, the corpus (or an uploaded text) and the token budget; and
profile an existing checkpoint of the model (a folder, GGUF file or hub id) against it."""

import streamlit as st

from dashboard import model as model_view
from dashboard.against import against_section
from dashboard.navigation import through_app
from dashboard.state import selection

through_app()

st.title("Model & measurement")
sel = selection()
left, right = st.columns([1, 1], gap="large")
with left:
    model, trust = model_view.model_source(sel)
with right:
    chosen = model_view.measurement(sel)
sel = model_view.apply(model, trust, chosen)

st.divider()
model_view.model_facts(sel)
st.success(
    f"Every page now measures `{sel.model}` on `{sel.corpus}` with {sel.tokens:,} tokens in windows of "
    f"{sel.window}. Pick a family page on the left to modify it."
)

st.divider()
against_section(sel)
