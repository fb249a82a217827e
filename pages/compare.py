"""Compare & history: every stored run, filterable; pick any to overlay, export a report, or delete."""

import streamlit as st

from dashboard import compare
from dashboard.navigation import through_app
from dashboard.state import runner
from hemorrhage_core.analysis import views

through_app()

st.title("Compare & history")
st.caption(
    "Every run stored in the results database, newest first. Select rows to overlay them, build a report "
    "or delete them. The command line writes to the same database."
)
store = runner().store
compare.notices()
history = views.history(store)
if history.empty:
    st.info("The results database is empty: measure something on a family page first.")
    st.stop()

shown = compare.filtered(history)
keys = compare.chosen_keys(history, shown)
if not keys:
    st.info(
        "Select one or more rows (left edge of the table) or pick runs by name to overlay, report or delete them."
    )
    st.stop()

compare.overlays(store, keys)
st.subheader("Report")
st.caption(
    "A standalone file for people who read only the first page: a summary (what was changed, the damage, what a "
    "remedy recovered, thresholds, a verdict), the charts with their settings, and an appendix of settings, "
    "specs and versions."
)
compare.report_buttons(store, keys)
compare.delete_section(store, keys)
