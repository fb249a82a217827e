"""Hemorrhage Lab: the router and the shared sidebar. No computation here."""

import streamlit as st

from hemorrhage_core.ui.state import sidebar

st.set_page_config(page_title="Hemorrhage Lab", page_icon=":material/bloodtype:", layout="wide")

pages = {
    "Set up": [st.Page("pages/model.py", title="Model", icon=":material/tune:")],
    "Modify": [
        st.Page("pages/quantize.py", title="Quantize", icon=":material/grid_on:", default=True),
        st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:"),
        st.Page("pages/decode.py", title="Decode", icon=":material/casino:"),
        st.Page("pages/depth.py", title="Depth", icon=":material/layers:"),
        st.Page("pages/mitigate.py", title="Mitigate", icon=":material/healing:"),
    ],
    "Analyse": [
        st.Page("pages/layers.py", title="Layers", icon=":material/stacked_line_chart:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
        st.Page("pages/divergence.py", title="Divergence", icon=":material/call_split:"),
        st.Page("pages/sweeps.py", title="Sweeps & thresholds", icon=":material/show_chart:"),
    ],
    "Results": [
        st.Page("pages/compare.py", title="Compare & history", icon=":material/history:"),
        st.Page("pages/paper.py", title="Paper", icon=":material/article:"),
    ],
}
nav = st.navigation(pages)
sidebar()
nav.run()
