"""The Divergence page's parts: the per-token KL of the chosen runs, their agreement measures, and the flips
on a cloze set (computed on click with progress, stored under the run). Generations: generate.py."""

from __future__ import annotations

import streamlit as st

from hemorrhage_core import charts, corpora
from hemorrhage_core.analysis import views
from hemorrhage_core.runner import RunResult
from hemorrhage_core.store import Store

from . import analyses
from .live import progress_bar
from .runs import export_caption, runs_caption
from .state import runner
from .widgets import chart, show_error, table

# Shown: what tells the runs apart (it fits the page; a sampler's reverse KL and mass cut where measured); the
# download has the full quantile set.
SHOWN = ["label", "ppl_ratio", "kl_mean", "kl_p99", "kl_reverse_mean", "mass_cut_mean", "top1_agreement",
         "top5_overlap", "dp_rms"]  # fmt: skip
FULL = ["label", "model", "corpus", "ppl_ratio", "kl_mean", "kl_median", "kl_p90", "kl_p99", "kl_max",
        "kl_reverse_mean", "mass_cut_mean", "top1_agreement", "top5_overlap", "dp_mean", "dp_rms"]  # fmt: skip


def distributions(store: Store, result: RunResult, keys: list[str]) -> None:
    """The first run's KL histogram beside the CDF of every chosen run, their agreement bars and the table."""
    compared = views.compared_runs(store, keys)
    several = runs_caption(compared)
    left, right = st.columns(2)
    with left:
        chart(
            charts.kl_distribution_chart(
                result.kl_hist, result.metrics, title=f"Per-token KL — {result.spec.label()}"
            ),
            "divergence-kl-hist",
            caption=export_caption(result.spec, result.settings, result.metrics),
        )
    with right:
        chart(charts.kl_cdf_chart(views.kl_hist_rows(store, keys)), "divergence-kl-cdf", caption=several)
    cols = [c for c in SHOWN if c in compared.columns and compared[c].notna().any()]
    chart(
        charts.metric_bars_chart(compared, ("top1_agreement", "top5_overlap", "dp_rms")),
        "divergence-agreement",
        caption=several,
    )
    table(compared[cols], "divergence-metrics", export=compared[[c for c in FULL if c in compared.columns]])


def flips_panel(result: RunResult) -> None:
    """The cloze-set form, and on click both models' accuracy, the flips both ways and the changed answers."""
    st.caption(
        "Both models choose the held-out last word of corpus sentences among distractors of similar frequency. "
        "Accuracy can stay flat while answers flip in both directions (Dutta et al., 2024)."
    )
    with st.form("divergence.flips"):
        c1, c2 = st.columns(2)
        n_items = int(c1.slider("Items", 16, 256, 64, 16, key="divergence.flip_items"))
        choices = ["the evaluation corpus", *corpora.CORPORA]
        cloze_corpus = c2.selectbox("Cloze text", choices, key="divergence.flip_corpus")
        go = st.form_submit_button("Count the flips")
    request = (result.run_key, n_items, cloze_corpus)
    if go:
        st.session_state["divergence.flip_request"] = request
    if st.session_state.get("divergence.flip_request") != request:
        return
    try:
        with progress_bar(f"Scoring {n_items} cloze items with both models") as on_progress:
            report = analyses.flip_report(
                runner(),
                result.spec.to_json(),
                result.run_key,
                n_items,
                None if cloze_corpus == choices[0] else cloze_corpus,
                progress=on_progress,
            )
    except Exception as exc:  # e.g. a text without enough sentences for a cloze set
        show_error(exc, "Building and scoring the cloze set")
        return
    cols = st.columns(4)
    cols[0].metric("Accuracy, original", f"{report.accuracy_base:.1%}")
    cols[1].metric(
        "Accuracy, modified",
        f"{report.accuracy_modified:.1%}",
        f"{report.accuracy_modified - report.accuracy_base:+.1%}",
        delta_arrow="off",
    )
    cols[2].metric(
        "Flips",
        f"{report.flips}",
        f"{report.flips_right_to_wrong} right→wrong · {report.flips_wrong_to_right} wrong→right",
        delta_color="off",
        delta_arrow="off",
    )
    cols[3].metric("Answers changed", f"{report.changed_choices} of {report.n_items}")
    changed = report.items[report.items.base_choice != report.items.modified_choice]
    table(changed, "divergence-flips", file_name="cloze-flips")
