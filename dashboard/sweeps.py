"""The Sweeps page below its form: the curves chosen, each curve's finding as a headline sentence, the chart with
the shaded robust zone, the thresholds and points as tables that fit the page, and quality against memory."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.analysis import memory, views
from hemorrhage_core.analysis import sweep_points as sweeps
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.executors import make_executor
from hemorrhage_core.metric_names import label

from .fields import FieldSpec
from .runs import series_caption
from .state import Selection, runner
from .widgets import chart, table

MEASURES = ["ppl_ratio", "kl_mean", "top1_agreement"]
MIN_SWEEP = 3  # settings a curve needs before its thresholds are more than two stored runs joined by a line


def run_on_cluster(specs: list, address: str) -> None:
    """The sweep's points on the Ray cluster an operator configured (HEMLAB_RAY_ADDRESS): stored points return
    at once, the others are measured by the cluster's workers and stored by this process as each arrives, under
    a bar with one line per point. The app stays in the cluster (its sessions share the connection). Errors
    become a message."""
    bar = st.progress(0.0, text=f"Sending {len(specs)} points to the Ray cluster at {address}…")
    lines = st.empty()
    seen: list[str] = []

    def on_point(event) -> None:
        seen.append(event.describe())
        lines.caption("  \n".join(seen[-12:]))

    try:
        make_executor("ray", address=address, stay_connected=True).run(
            runner(), specs, progress=lambda f, msg: bar.progress(f, text=msg), on_point=on_point
        )
    except HemlabError as exc:
        st.error(f"The sweep on the cluster stopped: {exc}")


def results_section(points: pd.DataFrame, own: list[str], kind: str, field: FieldSpec) -> None:
    all_series = points.series.drop_duplicates().tolist()
    chosen = st.multiselect(
        "Curves (other models, methods' settings, budgets)",
        all_series,
        default=own or all_series[:1],
        key=f"sweep.{kind}.{field.name}.series",
    )
    shown = points[points.series.isin(chosen)]
    metric = st.radio("Quality measure", MEASURES, horizontal=True, format_func=label, key="sweep.metric")
    found = sweeps.series_thresholds(shown, sweeps.severity_direction(field.name), knob=field.label)
    for series, sentence in found.headlines.items():
        n = int(shown[shown.series == series].x.nunique())
        st.markdown(f"{sentence}  \n<small>{series} · {n} measured settings</small>", unsafe_allow_html=True)
        if n < MIN_SWEEP:
            st.caption(
                f"Only {n} settings of this curve are stored (not a sweep yet): run the sweep above before "
                "reading a threshold into it."
            )
    chart(
        charts.sweep_chart(shown, "x", y=metric, x_label=field.label, zones=found.zones, knees=found.knees),
        "sweep-curve",
        caption=series_caption(
            shown, field.label, source=f"Sweep of {kind} over {field.label} · Hemorrhage Lab"
        ),
    )
    if not found.table.empty:
        st.caption(
            "Per curve: the robust zone (every setting before the ratio first exceeds 1.1×), the first measured "
            "setting over 1.1× / 2× / 10×, and the knee where log-perplexity stops growing linearly. Crossings "
            "are stated between the two adjacent measured settings that bracket them, never extrapolated."
        )
        table(
            found.table, "sweep-thresholds", column_config={"curve": st.column_config.Column(width="large")}
        )
    shown_points = shown[["series", "x", *MEASURES, "memory_mb"]].rename(columns={"x": field.label})
    table(
        shown_points,
        "sweep-points",
        export=shown.drop(columns=["run_key"]),
        column_config={"memory_mb": st.column_config.NumberColumn("weight memory (MB)", format="%.1f")},
    )


def memory_section(sel: Selection) -> None:
    st.subheader("Quality against memory")
    st.caption(
        f"Every stored run of `{sel.model}` measured like this one (same corpus, window and budget): weight memory "
        "as stored on disk (quantized formats with their scales; pruned models dense at 16 bits), the original "
        "at 16 bits, and the Pareto front."
    )
    mem = views.memory_points(memory, runner(), sel)
    if mem.empty:
        st.info("No stored run of this model with these measurement settings yet.")
        return
    front = memory.pareto_front(mem, x="memory_mb", y="ppl_ratio")
    chart(
        charts.quality_memory_chart(mem, joined=False, front=front),
        "sweep-memory",
        caption=f"{len(mem)} run(s) of {sel.model} · corpus {sel.corpus} · window {sel.window} · "
        f"{sel.tokens:,} tokens · weight memory as stored on disk · Hemorrhage Lab",
    )
