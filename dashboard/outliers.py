"""The Mitigate page's "Activation outliers" section: max |activation| per input channel of the base model before
and after SmoothQuant smoothing, the statistics that explain why static per-tensor activation scales fail.

Measuring runs forward passes of the base model (seconds to a minute): only on the button, under the process's
compute lock, and cached per process per (model, corpus, budget, size, α); a session that measured a setting
sees it again on every rerun without pressing the button.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.analysis import outliers
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.mitigation import Chain
from hemorrhage_core.specs import ActQuant, ProbeSettings, QuantizeRTN

from .live import progress_bar
from .memo import memo
from .state import Selection, compute_lock, runner
from .widgets import chart, show_error, table

TITLE = "Activation outliers (why static activation scales fail)"
_MEASURED = "outliers.measured"  # settings this session measured: shown again without the button
# Chains whose damage activation outliers explain: the section opens by itself for them.
EXPLAINS = (ActQuant, QuantizeRTN)


def _stats(
    runner, model: str, probe_json: str, corpus: str, n: int, length: int, alpha: float, progress=None
) -> pd.DataFrame:
    """analysis.outliers.measure_outliers, kept per process per setting (memo.py)."""
    probe = ProbeSettings(**json.loads(probe_json))

    def compute():
        with compute_lock():
            return outliers.measure_outliers(
                runner, model, probe, corpus=corpus, n=n, length=length, alpha=alpha, progress=progress
            )

    return memo("outliers", (model, probe_json, corpus, n, length, alpha), compute)


def section(sel: Selection, chain: Chain) -> None:
    """The expander: inputs, the Measure outliers button, then the chart and the summary tables with exports."""
    opened = any(isinstance(m, EXPLAINS) for m in chain)
    with st.expander(TITLE, expanded=opened, icon=":material/bar_chart:"):
        st.caption(
            "Max |x| per input channel of every linear layer's input of the original model, on calibration text "
            "of the selected corpus, before and after SmoothQuant scale migration s_j = max|X_j|^α / "
            "max|W_j|^(1−α). A static per-tensor activation scale is set by the largest channel, so a "
            "max / median ratio of 1000 leaves the median channel almost no int8 levels; smoothing moves that "
            "range into the weights."
        )
        cols = st.columns(3)
        n = cols[0].number_input("Calibration sequences", 1, 64, 8, key="outliers.samples")
        length = cols[1].number_input("Tokens per sequence", 8, 2048, 256, step=32, key="outliers.len")
        alpha = cols[2].slider("SmoothQuant α", 0.0, 1.0, 0.5, 0.05, key="outliers.alpha")
        try:
            probe_json = json.dumps(dataclasses.asdict(sel.probe()))
        except HemlabError as exc:
            st.error(str(exc))
            return
        setting = (sel.model, probe_json, sel.corpus, int(n), int(length), float(alpha))
        measured = st.session_state.setdefault(_MEASURED, [])
        pressed = st.button("Measure outliers", key="outliers.measure", type="primary")
        if not pressed and setting not in measured:
            st.info(
                "Press Measure outliers to run the original model over the calibration text (seconds to a "
                "minute on a real model). Nothing is stored; results are kept while the app runs."
            )
            return
        try:
            with progress_bar("Measuring activations") as report:
                stats = _stats(runner(), *setting, progress=report)
        except Exception as exc:  # a bug or a library error: a message on the page, never a traceback
            show_error(exc, "Measuring the activation outliers")
            return
        if setting not in measured:
            measured.append(setting)
        draw(stats, float(alpha))


def draw(stats: pd.DataFrame, alpha: float, top: int = 10) -> None:
    """The chart, the per-layer summary (CSV / Parquet) and the largest channels (export: every channel)."""
    worst = outliers.worst(stats)
    if worst is None:
        st.warning("No linear layer inputs were found in this model's blocks.")
        return
    st.markdown(f"Largest channel: **{worst.text()}**")
    chart(charts.activation_outliers_chart(stats, alpha=alpha, top_channels=top), "activation-outliers")
    st.markdown("**Per layer input**: max and median over channels, and their ratio, before and after")
    table(outliers.outlier_summary(stats), "activation-outliers-summary")
    st.markdown(f"**The {top} largest channels** (the export holds every channel)")
    table(
        outliers.worst_channels(stats, top),
        "activation-outlier-channels",
        export=stats,
        file_name="activation-outliers-per-channel",
    )
