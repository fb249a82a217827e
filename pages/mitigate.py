"""Mitigate: placeholder until the mitigation issue lands (its place in the navigation is kept)."""

import streamlit as st

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.fields import family_kinds
from hemorrhage_core.ui.navigation import through_app

through_app()

if family_kinds("mitigation"):
    family_page(
        "mitigation",
        "The paper's three mitigations, each against the un-mitigated modification at the same compression.",
    )
else:
    st.title("Mitigate")
    st.info(
        "Not available yet. The paper's three mitigations (gradient-aware pruning, dynamic quantization scaling, "
        "decoding calibration) arrive with the mitigation issue; this page will list them, like the Quantize and "
        "Prune pages, as soon as their methods are registered. Nothing on this page is simulated."
    )
