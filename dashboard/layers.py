"""The Layers page's module ranking: stored, or computed on demand; for a depth change the blocks it removed or
added rank with the modules, and a decoding-only run has nothing to rank."""

from __future__ import annotations

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.runner import RunResult

from . import analyses
from .live import progress_bar
from .runs import export_caption
from .state import runner
from .widgets import chart, show_error, table


def module_section(result: RunResult) -> None:
    if not result.spec.touches_weights:
        st.info(
            f"**{result.spec.label()}** changes decoding only: no weight or block of the model changed, so there "
            "is nothing to rank. Pick a run that quantizes, prunes or changes depth."
        )
        return
    ranked = analyses.stored_module_ranking(runner(), result.run_key)
    st.caption(
        f"For **{result.spec.label()}**: every modified weight fed the original model's own inputs on calibration "
        "text from the end of the corpus, so each module's own damage is separated from what it inherits. Blocks "
        "a depth change removed rank by what skipping them costs the stream; added blocks by what they write."
    )
    if ranked.empty:
        if not st.button(f"Rank the modules of {result.spec.label()}", key="layers.rank"):
            st.info(
                "Not ranked yet: ranking rebuilds the modified model and runs 8 × 256 calibration tokens."
            )
            return
        try:
            with progress_bar("Ranking modules on calibration text") as report:
                ranked = analyses.compute_module_ranking(runner(), result, progress=report)
        except Exception as exc:
            show_error(exc, "Ranking the modules")
            return
    if ranked.empty:
        st.info("No module or block changed measurably (every output within float noise of the original's).")
        return
    chart(
        charts.module_ranking_chart(
            ranked[ranked.comparable],
            value="rel_error",
            units="relative output error ‖f′(X)−f(X)‖/‖f(X)‖",
            top=20,
        ),
        "layers-modules",
        caption=export_caption(result.spec, result.settings, result.metrics),
    )
    table(ranked, "module-ranking")
