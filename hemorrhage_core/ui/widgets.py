"""Reusable page pieces: run with progress, show a chart with its export buttons, show errors as messages."""

from __future__ import annotations

import logging

import plotly.graph_objects as go
import streamlit as st

from ..charts import export_bytes
from ..errors import HemlabError
from ..runner import RunResult
from ..spec import RunSpec
from .state import runner

log = logging.getLogger(__name__)

EXPORT_FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf", "html": "text/html"}


def run_with_progress(spec: RunSpec) -> RunResult | None:
    """A stored result appears at once; a new one computes under a progress bar. Errors become messages."""
    r = runner()
    try:
        cached = r.lookup(spec)
        if cached is not None:
            return cached
        bar = st.progress(0.0, text="loading the model and the base reference…")

        def progress(fraction: float, message: str) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=message)

        result = r.run(spec, progress=progress)
        bar.empty()
        return result
    except HemlabError as exc:
        st.error(str(exc))
    except Exception as exc:  # keep the app alive and say what happened
        log.exception("run failed")
        st.error(f"The run failed: {type(exc).__name__}: {exc}")
    return None


def chart(fig: go.Figure, name: str) -> None:
    """Draw a figure and offer it as PNG, SVG, PDF (rendered on click) and standalone HTML."""
    st.plotly_chart(fig, width="stretch", key=f"chart-{name}")
    cols = st.columns(len(EXPORT_FORMATS) + 1)
    for col, (fmt, mime) in zip(cols, EXPORT_FORMATS.items(), strict=False):
        col.download_button(
            fmt.upper(),
            data=lambda fig=fig, fmt=fmt: export_bytes(fig, fmt),
            file_name=f"{name}.{fmt}",
            mime=mime,
            key=f"dl-{name}-{fmt}",
            on_click="ignore",
        )
