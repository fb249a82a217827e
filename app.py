"""Hemorrhage Lab: the router and the shared sidebar. No computation here."""

import streamlit as st

from hemorrhage_core.ui.state import sidebar

st.set_page_config(page_title="Hemorrhage Lab", page_icon="🩸", layout="wide")

pages = [
    st.Page("pages/profile.py", title="Profile", icon="🩸", default=True),
]
nav = st.navigation(pages)
st.session_state["selection"] = sidebar()
nav.run()
