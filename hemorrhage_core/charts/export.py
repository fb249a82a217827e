"""Static export of figures (PNG, SVG, PDF) through kaleido, one export at a time."""

from __future__ import annotations

import threading
import warnings

import plotly.graph_objects as go

_EXPORT_LOCK = threading.Lock()


def _kaleido_server() -> None:
    """Keep one headless Chrome for every static export of the process (starting one per image costs seconds).

    kaleido's shared server answers calls in order through one queue, so callers take _EXPORT_LOCK around a call:
    two sessions exporting at once would otherwise each be able to receive the other's image.
    """
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)


def export_bytes(fig: go.Figure, fmt: str, *, width: int = 1000, height: int | None = None) -> bytes:
    """PNG/SVG/PDF through kaleido (needs Chrome: Debian's chromium), or standalone HTML (plotly.js inlined).

    Static exports are drawn on white with dark text whatever the app theme. Height defaults to the figure's
    own (tall small-multiples keep their proportions), else 560 px.
    """
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"unknown export format {fmt!r}; use png, svg, pdf or html")
    printable = go.Figure(fig).update_layout(paper_bgcolor="white", plot_bgcolor="white")
    height = height or fig.layout.height or 560
    with _EXPORT_LOCK, warnings.catch_warnings():
        # plotly passes browser options the shared server already has; its warning about ignoring them is noise.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        _kaleido_server()
        return printable.to_image(format=fmt, width=width, height=height, scale=1)
