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


CAPTION_PX = 22  # room under the plot per caption line, in layout pixels


def captioned(fig: go.Figure, caption: str | None) -> go.Figure:
    """A copy of `fig` with `caption` (the settings behind the numbers) written under the plot, in the figure
    itself, so an image pasted into a slide or a paper still says what was measured. Lines split on "\n"."""
    out = go.Figure(fig)
    if not caption:
        return out
    lines = caption.split("\n")
    margin = out.layout.margin
    bottom = (margin.b if margin and margin.b is not None else 50) + CAPTION_PX * len(lines) + 30
    out.update_layout(margin=dict(b=bottom))
    out.add_annotation(
        text="<br>".join(lines),
        xref="paper",
        yref="paper",
        x=0,
        y=0,
        yshift=-(bottom - 8),  # from the foot of the plot area down to the foot of the figure
        xanchor="left",
        yanchor="bottom",
        align="left",
        showarrow=False,
        font=dict(size=11, color="#5f6b7a"),
    )
    return out


def export_bytes(
    fig: go.Figure,
    fmt: str,
    *,
    width: int = 1000,
    height: int | None = None,
    scale: float = 1,
    caption: str | None = None,
) -> bytes:
    """PNG/SVG/PDF through kaleido (needs Chrome: Debian's chromium), or standalone HTML (plotly.js inlined).

    Static exports are drawn on white with dark text whatever the app theme. Height defaults to the figure's
    own (tall small-multiples keep their proportions), else 560 px; `scale` multiplies the pixels of a PNG (2:
    print resolution, the layout unchanged). `caption` (the settings) is written under the plot.
    """
    fig = captioned(fig, caption)
    if fmt == "html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"unknown export format {fmt!r}; use png, svg, pdf or html")
    # Whatever template the app's theme chose, print is dark text on white.
    printable = fig.update_layout(template="plotly_white", paper_bgcolor="white", plot_bgcolor="white")
    height = height or fig.layout.height or 560
    with _EXPORT_LOCK, warnings.catch_warnings():
        # plotly passes browser options the shared server already has; its warning about ignoring them is noise.
        warnings.filterwarnings("ignore", message="The kopts argument is ignored")
        _kaleido_server()
        return printable.to_image(format=fmt, width=width, height=height, scale=scale)
