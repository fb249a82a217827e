"""Hemorrhage Lab: the router and the shared sidebar. No computation here."""

import streamlit as st

from hemorrhage_core.ui.state import sidebar

st.set_page_config(page_title="Hemorrhage Lab", page_icon="🩸", layout="wide")

pages = {
    "Set up": [st.Page("pages/model.py", title="Model", icon="⚙️")],
    "Modify": [
        st.Page("pages/quantize.py", title="Quantize", icon="🧮", default=True),
        st.Page("pages/prune.py", title="Prune", icon="✂️"),
        st.Page("pages/decode.py", title="Decode", icon="🎲"),
        st.Page("pages/depth.py", title="Depth", icon="🧱"),
        st.Page("pages/mitigate.py", title="Mitigate", icon="🩹"),
    ],
    "Analyse": [
        st.Page("pages/layers.py", title="Layers", icon="📉"),
        st.Page("pages/attention.py", title="Attention", icon="👁️"),
        st.Page("pages/divergence.py", title="Divergence", icon="🔀"),
        st.Page("pages/sweeps.py", title="Sweeps & thresholds", icon="📈"),
    ],
    "Results": [
        st.Page("pages/compare.py", title="Compare & history", icon="🗂️"),
        st.Page("pages/paper.py", title="Paper", icon="📄"),
    ],
}
nav = st.navigation(pages)
sidebar()
nav.run()
