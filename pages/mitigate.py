"""Mitigate: the mitigation methods registered so far, applied on top of the other pages' settings.

The mitigation issue brings the comparison view (each mitigation against the un-mitigated modification at the
same compression, with the recovery as a number); until then this page says so and profiles what exists.
"""

import streamlit as st

from hemorrhage_core.ui.family import family_page
from hemorrhage_core.ui.fields import family_kinds
from hemorrhage_core.ui.navigation import through_app

through_app()

if family_kinds("mitigation"):
    family_page(
        "mitigation",
        "The paper's three mitigations made concrete: gradient-aware pruning, dynamic quantization scaling and "
        "decoding calibration, each meant to repair a compression.",
        auto_default=False,
        stack_default=True,
        notice=(
            "Early access: the mitigation methods registered so far, applied after the settings of the Prune / "
            "Quantize / Depth pages (stacking is on). The side-by-side against the un-mitigated modification, with "
            "the recovery as a number, arrives with the mitigation issue; meanwhile compare both runs on Compare & "
            "history. These methods calibrate or train, so they measure when you press Measure."
        ),
    )
else:
    st.title("Mitigate")
    st.info(
        "Not available yet. The paper's three mitigations (gradient-aware pruning, dynamic quantization scaling, "
        "decoding calibration) arrive with the mitigation issue; this page will list them, like the Quantize and "
        "Prune pages, as soon as their methods are registered. Nothing on this page is simulated."
    )
