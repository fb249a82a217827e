"""The Compare & history page's parts: the filters over every stored run, the selectable table, the overlaid
charts (each export captioned with the runs' settings), the report downloads and deletion."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hemorrhage_core import charts, report
from hemorrhage_core.analysis import views
from hemorrhage_core.analysis.sweep_points import short_model
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.store import Store
from hemorrhage_core.tasks.tables import stored_frame

from .runs import runs_caption
from .widgets import chart, number_format, stored, table, zip_bytes

# The table shows what tells runs apart and how they did, in columns that fit a laptop's page (about 960 px
# beside the sidebar): the measurement (corpus, budget, window) is one short text cell, the date drops the year.
# The download has every column, raw.
SHOWN = ["label", "model", "family", "measured_on", "ppl_ratio", "kl_mean", "top1_agreement", "bits_per_weight",
         "achieved_sparsity", "created_at"]  # fmt: skip
COLUMNS = {
    "label": st.column_config.Column("run", width=160),
    "model": st.column_config.Column("model", width=100),
    "family": st.column_config.Column("family", width="small"),
    "measured_on": st.column_config.TextColumn(
        "measured on", width=120, help="corpus · token budget / window (tokens)"
    ),
    "ppl_ratio": st.column_config.NumberColumn("ppl ratio", format="×%.3f", width="small"),
    "top1_agreement": st.column_config.NumberColumn("top-1", format="percent", width="small"),
    "bits_per_weight": st.column_config.NumberColumn("bits/weight", format="%.2f", width="small"),
    "achieved_sparsity": st.column_config.NumberColumn("sparsity", format="percent", width="small"),
    "created_at": st.column_config.DatetimeColumn("stored", format="MMM D HH:mm", width="small"),
}


def display_rows(shown: pd.DataFrame) -> pd.DataFrame:
    """The history rows as the table shows them (SHOWN): folders by their last part (the full path is in the
    filter and the report) and the measurement in one cell, e.g. "wiki · 16,384 / 512"."""
    out = shown.assign(model=shown.model.map(short_model))
    if {"corpus", "token_budget", "window_tokens"} <= set(shown.columns):
        out["measured_on"] = [
            f"{c} · {int(t):,} / {int(w)}"
            for c, t, w in zip(shown.corpus, shown.token_budget, shown.window_tokens, strict=True)
        ]
    return out[[c for c in SHOWN if c in out.columns]]


def notices() -> None:
    """What the last deletion did (it ran in a callback, before this rerun)."""
    if (deleted := st.session_state.pop("compare.deleted", None)) is not None:
        st.success(f"Deleted {deleted} run(s).")
    if (failure := st.session_state.pop("compare.delete_error", None)) is not None:
        st.error(failure)


def filtered(history: pd.DataFrame) -> pd.DataFrame:
    """The filter row (model, family, corpus, label text) and the rows it keeps."""
    with st.container(border=True):
        c1, c2, c3, c4 = st.columns([2, 2, 2, 3])
        return views.filter_history(
            history,
            models=c1.multiselect("Model", sorted(history.model.unique()), key="compare.models"),
            families=c2.multiselect("Family", sorted(history.family.unique()), key="compare.families"),
            corpora=c3.multiselect("Corpus", sorted(history.corpus.unique()), key="compare.corpora"),
            text=c4.text_input("Label contains", key="compare.text", placeholder="e.g. w4, 50%, T="),
        )


def chosen_keys(history: pd.DataFrame, shown: pd.DataFrame) -> list[str]:
    """The runs selected in the table (rows of `shown`) or picked by name, in that order, without repeats."""
    display = display_rows(shown)
    st.caption(f"{len(shown)} of {len(history)} runs")
    # The table's key changes after a deletion so no stale row selection can point at other runs.
    event = table(
        display,
        f"runs-{st.session_state.get('compare.version', 0)}",
        selectable=True,
        file_name="hemlab-runs",
        export=shown,
        column_config={
            **COLUMNS,
            "kl_mean": st.column_config.NumberColumn(
                "KL mean",
                format=number_format(display.get("kl_mean", pd.Series(dtype=float))),
                width="small",
                help="nats",
            ),
        },
    )
    rows = event.selection.rows if event is not None else []
    titles = {r["run_key"]: views.run_title(r) for r in history.to_dict("records")}
    picked = st.multiselect("…or pick runs by name", list(titles), format_func=titles.get, key="compare.pick")
    return list(dict.fromkeys([*shown.loc[rows, "run_key"].tolist(), *picked]))


def overlays(store: Store, keys: list[str]) -> None:
    """The chosen runs overlaid: headline bars, the layer cascade and the KL CDF, each export captioned with
    the runs' settings."""
    compared = views.compared_runs(store, keys)
    caption = runs_caption(compared)
    chart(charts.metric_bars_chart(compared), "compare-metrics", caption=caption)
    # Full width: a legend of several runs beside a half-page plot would squeeze it to a strip.
    chart(charts.layer_loss_chart(views.layer_rows(store, keys)), "compare-layers", caption=caption)
    chart(charts.kl_cdf_chart(views.kl_hist_rows(store, keys)), "compare-kl-cdf", caption=caption)


def report_buttons(store: Store, keys: list[str]) -> None:
    """Report (HTML, PDF) and its charts as 2× PNGs, built on click."""
    results = [r for k in keys if (r := stored(k)) is not None]
    # The runs' stored task results (Tasks page, `hemlab run --tasks`) go into the report with their sources.
    task_results = stored_frame(store, {r.run_key: r.spec.label() for r in results})
    chrome = report.find_chrome()
    c1, c2, c3, _ = st.columns([1, 1, 1, 3])
    c1.download_button(
        "Report (HTML)",
        data=lambda: report.build_html(results, tasks=task_results).encode(),
        file_name="hemlab-report.html",
        mime="text/html",
        key="compare.report-html",
        on_click="ignore",
        type="primary",
    )
    c2.download_button(
        "Report (PDF)",
        data=lambda: report.build_pdf(results, tasks=task_results),
        file_name="hemlab-report.pdf",
        mime="application/pdf",
        key="compare.report-pdf",
        on_click="ignore",
        disabled=chrome is None,
        help=None if chrome else "PDF export needs Debian's chromium on the server.",
    )
    c3.download_button(
        "Charts (PNG 2×)",
        data=lambda: zip_bytes(report.chart_images(results)),
        file_name="hemlab-charts.zip",
        mime="application/zip",
        key="compare.report-png",
        on_click="ignore",
        disabled=chrome is None,
        help="Every chart of the report at print resolution, the settings written under each.",
    )


def _delete(store: Store, run_keys: list[str]) -> None:
    """Runs before the page is redrawn, so the table no longer shows the deleted runs."""
    try:
        st.session_state["compare.deleted"] = store.delete_runs(run_keys)
    except HemlabError as exc:
        st.session_state["compare.delete_error"] = str(exc)
    st.session_state["compare.sure"] = False
    st.session_state["compare.pick"] = []
    st.session_state["compare.version"] = st.session_state.get("compare.version", 0) + 1


def delete_section(store: Store, keys: list[str]) -> None:
    st.subheader("Delete")
    sure = st.checkbox(f"I want to delete these {len(keys)} run(s) from the database", key="compare.sure")
    st.button(
        "Delete selected runs", disabled=not sure, key="compare.delete", on_click=_delete, args=(store, keys)
    )
