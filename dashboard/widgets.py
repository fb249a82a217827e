"""Reusable page pieces: guarded runs with progress, ETA and Cancel; charts and tables with their exports;
headline numbers; pickers over stored runs; honest notices for capabilities that have not landed."""

from __future__ import annotations

import io
import logging
import time
import zipfile
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core import runner as runner_mod
from hemorrhage_core.analysis import views
from hemorrhage_core.charts import export_bytes
from hemorrhage_core.errors import Cancelled, HemlabError
from hemorrhage_core.metric_names import METRICS
from hemorrhage_core.runner import RunResult
from hemorrhage_core.specs import RunSpec

from . import runs as runs_mod
from .eta import LiveEta, estimate_seconds, step_priors
from .live import draw_partial, step_reporter
from .state import Selection, app_theme, problem, runner, selection

log = logging.getLogger(__name__)

_CANCELLED = "hemlab.cancelled"  # run key the user cancelled: not restarted until they ask again
_RECENT = "hemlab.recent"  # run keys this session computed or viewed, newest first


# -- guards ------------------------------------------------------------------------------------------------------


def require_selection() -> Selection:
    """The session's selection, or stop the page with a clear message when it cannot be measured."""
    sel = selection()
    issue = problem(sel)
    if issue:
        st.error(issue)
        st.page_link("pages/model.py", label="Choose another model or corpus", icon=":material/tune:")
        st.stop()
    return sel


# -- runs --------------------------------------------------------------------------------------------------------


def remember(run_key: str) -> None:
    recent = [k for k in st.session_state.get(_RECENT, []) if k != run_key]
    st.session_state[_RECENT] = [run_key, *recent][:50]


def recent_keys() -> list[str]:
    return list(st.session_state.get(_RECENT, []))


def _cancel(run_key: str) -> None:
    st.session_state[_CANCELLED] = run_key


def _resume() -> None:
    st.session_state.pop(_CANCELLED, None)


def run_with_progress(spec: RunSpec, *, key: str = "run") -> RunResult | None:
    """A stored result appears at once; a new one computes under a progress bar that names the step and its
    block or batch, with the time left from this step's measured throughput (or the queue position), the first
    headline numbers with 95 % intervals as they arrive, and a Cancel button that works between any two blocks
    or batches. Errors become messages on the page; None when there is no result to draw."""
    r = runner()
    try:
        cached = r.lookup(spec)
        if cached is not None:
            remember(cached.run_key)
            return cached
        run_key, _ = r.cache_key(spec)
        if st.session_state.get(_CANCELLED) == run_key:
            st.warning(f"Cancelled **{spec.label()}**: nothing was stored.")
            st.button("Compute it after all", key=f"{key}-resume", on_click=_resume)
            return None
        history = r.store.runs()
        estimate = estimate_seconds(history, spec)
        box = st.empty()
        with box.container(border=True):
            st.markdown(f"Computing **{spec.label()}** on `{spec.model}`")
            st.caption(
                "Estimated before it started: "
                + (estimate.text() if estimate else "unknown (no stored run to compare with)")
                + ". The bar's time left comes from this step's measured speed."
            )
            bar = st.progress(0.0, text="starting…")
            first = st.empty()  # the running headline numbers (live.draw_partial)
            st.button("Cancel", key=f"{key}-cancel", on_click=_cancel, args=(run_key,), type="secondary")
        eta = LiveEta(
            step_priors(history, spec),
            windows=max(spec.probe.tokens // spec.probe.window, 1),
            started=time.monotonic(),
        )
        result = r.run(
            spec,
            steps=step_reporter(bar, eta),
            partial=lambda p: draw_partial(first, p),
            cancelled=lambda: st.session_state.get(_CANCELLED) == run_key,
        )
        box.empty()
        remember(result.run_key)
        return result
    except Cancelled:
        st.warning(f"Cancelled **{spec.label()}**: nothing was stored.")
    except HemlabError as exc:
        st.error(str(exc))
    except Exception as exc:  # a bug or an unexpected library error: keep the app alive and say what happened
        log.exception("run failed: %s", spec.label())
        st.error(f"The run failed: {type(exc).__name__}: {exc}")
    return None


def show_error(exc: Exception, what: str) -> None:
    """An error as a message on the page: the user's own (HemlabError) as it is, anything else named and logged
    with its traceback, so a failing analysis never takes the page down."""
    if isinstance(exc, HemlabError):
        st.error(str(exc))
    else:
        log.error("%s failed", what, exc_info=exc)
        st.error(f"{what} failed: {type(exc).__name__}: {exc}")


def stored(run_key: str) -> RunResult | None:
    """A stored run, with read errors shown on the page."""
    try:
        return runner_mod.stored_result(runner().store, run_key)
    except HemlabError as exc:
        st.error(str(exc))
        return None


def headline(result: RunResult) -> None:
    """The settings line and the headline numbers at the top of a result."""
    st.caption(runs_mod.settings_caption(result.spec, result.settings, result.metrics, result.cached))
    items = runs_mod.headlines(result.metrics)
    for col, h in zip(st.columns(len(items)), items, strict=True):
        col.metric(h.label, h.value, h.delta, delta_color="off", delta_arrow="off", help=h.help)
    for note in result.notes:
        st.caption(note)


def run_picker(label: str, key: str, *, multi: bool = False, model: str | None = None) -> list[str]:
    """Pick stored runs (default: the ones this session measured last). Returns run keys."""
    table = views.history(runner().store, model)
    if table.empty:
        st.info(
            "No stored runs yet"
            + (f" for `{model}`" if model else "")
            + ": measure one on a family page first."
        )
        return []
    titles = {row["run_key"]: views.run_title(row) for row in table.to_dict("records")}
    recent = [k for k in recent_keys() if k in titles]
    keys = list(dict.fromkeys([*recent, *titles]))
    if multi:
        default = recent[:3] or keys[:1]
        return st.multiselect(label, keys, default=default, format_func=titles.get, key=key)
    choice = st.selectbox(label, keys, index=0, format_func=titles.get, key=key)
    return [choice] if choice else []


# -- charts and tables with exports ----------------------------------------------------------------------------


# label -> (format, scale, MIME): the figure's own size for the screen and slides, and twice its pixels for print.
EXPORTS = {
    "PNG": ("png", 1, "image/png"),
    "PNG 2×": ("png", 2, "image/png"),
    "SVG": ("svg", 1, "image/svg+xml"),
    "PDF": ("pdf", 1, "application/pdf"),
    "HTML": ("html", 1, "text/html"),
}


def chart(
    fig: go.Figure,
    name: str,
    *,
    on_select: Any = "ignore",
    selection_mode: str = "points",
    caption: str | None = None,
) -> Any:
    """Draw a figure in the app theme's template and offer it as PNG (screen size, or 2× for print), SVG, PDF
    (rendered by kaleido on click) and standalone HTML. `caption` (the run's settings: runs.export_caption) is
    written under the plot of every export, so an image pasted elsewhere still says what was measured.

    Returns the chart's selection state when `on_select` is "rerun" or a callback.
    """
    event = st.plotly_chart(
        charts.themed(fig, app_theme()),
        width="stretch",
        key=f"chart-{name}",
        on_select=on_select,
        selection_mode=selection_mode,
        # plotly's own camera button: twice the on-screen pixels, named like our exports.
        config={
            "toImageButtonOptions": {"format": "png", "scale": 2, "filename": name},
            "displaylogo": False,
        },
    )
    with st.container(horizontal=True, gap="small"):
        st.caption("Export")
        for text, (fmt, scale, mime) in EXPORTS.items():
            suffix = "" if scale == 1 else f"@{scale}x"
            st.download_button(
                text,
                data=lambda fmt=fmt, scale=scale: export_bytes(fig, fmt, scale=scale, caption=caption),
                file_name=f"{name}{suffix}.{fmt}",
                mime=mime,
                key=f"dl-{name}-{fmt}{suffix}",
                on_click="ignore",
                type="tertiary",
                help=f"Download this chart as {text}"
                + (" (print resolution)" if scale > 1 else "")
                + (", with the settings written under it" if caption else ""),
            )
    return event


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A zip archive of named files (the report's chart images)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buf.getvalue()


def parquet_bytes(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    # Object columns that mix types (e.g. None and text) are written as strings so pyarrow accepts them.
    clean = df.copy()
    for c in clean.columns:
        if clean[c].dtype == object:
            clean[c] = clean[c].map(lambda v: v if v is None or isinstance(v, str) else str(v))
    clean.to_parquet(buf, index=False)
    return buf.getvalue()


def with_dashes(df: pd.DataFrame) -> pd.DataFrame:
    """Missing values of text columns as "—" (Streamlit would print the word None, which reads as a value);
    number columns keep their gaps, which Streamlit greys out."""
    text = [
        c
        for c in df.columns
        if (df[c].dtype == object or pd.api.types.is_string_dtype(df[c])) and df[c].isna().any()
    ]
    return df.assign(**{str(c): df[c].where(df[c].notna(), "—") for c in text}) if text else df


def with_infinity(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Numeric columns holding ∞ (a sampler that cuts the next token) as text, "∞" and the numbers in 4
    significant digits: a table would print "Infinity". Returns the frame and those columns."""
    columns = [
        c
        for c in df.columns
        if pd.api.types.is_float_dtype(df[c]) and bool(df[c].map(lambda v: v == float("inf")).any())
    ]
    if not columns:
        return df, []
    out = df.copy()
    for c in columns:
        out[c] = out[c].map(lambda v: "∞" if v == float("inf") else ("" if v != v else f"{v:.4g}"))
    return out, columns


def number_format(values: pd.Series) -> str:
    """One format for a whole column: 4 significant digits, or, when some value is under 0.001 (a KL of an
    8-bit run, 4e-7), the exponent form for every row, since "%g" prints 7.2e-6 as 0.0000072 but 4.2e-7 as
    4.2e-7 and a column of mixed spellings cannot be scanned by eye."""
    numbers = pd.to_numeric(values, errors="coerce").abs()
    small = numbers[(numbers > 0) & (numbers < 1e-3)]
    return "%.3e" if len(small) else "%.4g"


def column_labels(df: pd.DataFrame) -> dict[str, Any]:
    """A column_config per column: metrics by their registry header and unit (shares as percentages), other
    columns with their snake_case spelled out ("token_budget" -> "token budget")."""
    out: dict[str, Any] = {}
    for column in df.columns:
        name = str(column)
        if name in METRICS:
            m = METRICS[name]
            fmt = "percent" if m.unit == "share" else number_format(df[column])
            out[name] = st.column_config.NumberColumn(m.header, format=fmt, help=m.label)
        elif "_" in name:
            out[name] = st.column_config.Column(name.replace("_", " "))
    return out


def table(
    df: pd.DataFrame,
    name: str,
    *,
    selectable: bool = False,
    file_name: str | None = None,
    export: pd.DataFrame | None = None,
    **kwargs,
) -> Any:
    """Show a table with CSV and Parquet downloads (named `file_name`, default `name`; of `export` when the
    shown table is abbreviated). With `selectable`, rows can be picked (multi-row); the selection event is
    returned."""
    data = df if export is None else export
    extra = {"on_select": "rerun", "selection_mode": "multi-row"} if selectable else {}
    # Readable headers and number formats from the metric registry; the caller's own column_config wins. The
    # downloads keep the raw column names (what scripts read).
    df, infinite = with_infinity(df)
    df = with_dashes(df)
    labels = column_labels(df)
    for column in infinite:  # now text: a number format would not apply
        labels[column] = st.column_config.TextColumn(labels[column]["label"] if column in labels else column)
    caller = {k: v for k, v in kwargs.get("column_config", {}).items() if k not in infinite}
    kwargs["column_config"] = {**labels, **caller}
    event = st.dataframe(df, width="stretch", hide_index=True, key=f"table-{name}", **extra, **kwargs)
    with st.container(horizontal=True, gap="small"):
        st.caption("Export")
        st.download_button(
            "CSV",
            data=lambda: data.to_csv(index=False).encode(),
            file_name=f"{file_name or name}.csv",
            mime="text/csv",
            key=f"dl-{name}-csv",
            on_click="ignore",
            type="tertiary",
        )
        st.download_button(
            "Parquet",
            data=lambda: parquet_bytes(data),
            file_name=f"{file_name or name}.parquet",
            mime="application/vnd.apache.parquet",
            key=f"dl-{name}-parquet",
            on_click="ignore",
            type="tertiary",
        )
    return event
