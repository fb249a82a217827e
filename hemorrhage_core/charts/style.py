"""The one visual language of every chart: colours per family and side, template, fonts, log axes, styling."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from ..specs.families import FAMILIES

ORIGINAL = "#4C78A8"
MODIFIED = "#E45756"
# The sides of a comparison, beside the families' colours.
SIDE_COLORS = {
    "original": ORIGINAL,
    "paper": "#8C8C8C",
    "other": "#7F7F7F",
    "modified": MODIFIED,  # the unmitigated side of a before / after comparison (Mitigate page)
}


class _FamilyColors(Mapping[str, str]):
    """Each family's colour, read from its registry entry when asked (so a family registered after this module
    was imported has its colour too), then the sides of a comparison."""

    def __getitem__(self, name: str) -> str:
        entry = FAMILIES.get(name)
        return entry.colour if entry is not None else SIDE_COLORS[name]

    def __iter__(self) -> Iterator[str]:
        yield from FAMILIES
        yield from (name for name in SIDE_COLORS if name not in FAMILIES)

    def __len__(self) -> int:
        return sum(1 for _ in self)


FAMILY_COLORS: Mapping[str, str] = _FamilyColors()
MITIGATED = FAMILY_COLORS["mitigation"]
TEMPLATE = "plotly_white"
# The template per app theme (Streamlit reports "light" or "dark"); backgrounds stay transparent in both.
TEMPLATES = {"light": "plotly_white", "dark": "plotly_dark"}
# Reference lines, thresholds and outlines: a mid grey reads on white and on Streamlit's dark background alike.
NEUTRAL = "#8C8C8C"
FONT = dict(family="Inter, Helvetica, Arial, sans-serif", size=13)
# The paper's methods when our runs are drawn beside them: told apart from each other by colour (seven greys were
# not), and from ours by thin dashed lines and small circles (ours: bold, diamonds, the family colour). Dark2
# without its orange, which reads as the quant family's.
PAPER_PALETTE = (
    "#1b9e77",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
    "#17becf",
    "#bcbd22",
)
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
THRESHOLDS = (1.1, 2.0, 10.0)  # perplexity ratios of the robustness thresholds (docs/metrics.md §4)


def _right_axis(fig: go.Figure) -> bool:
    return any(getattr(fig.layout[a], "side", None) == "right" for a in fig.layout if a.startswith("yaxis"))


def _style(fig: go.Figure, title: str, *, legend: bool = True) -> go.Figure:
    # A long legend (many runs or methods) goes to the right, where it can grow; a short one sits on top.
    names = [t.name for t in fig.data if t.name and t.showlegend is not False]
    long_legend = legend and (len(names) > 5 or sum(len(n) for n in names) > 90)
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left"),
        template=TEMPLATE,
        font=FONT,
        margin=dict(l=60, r=20, t=80 if legend and not long_legend else 60, b=50),
        # Beside a right-hand axis (a secondary y), past its ticks and title.
        legend=dict(
            orientation="v",
            yanchor="top",
            y=1,
            xanchor="left",
            x=1.14 if _right_axis(fig) else 1.02,
            font=dict(size=11),
        )
        if long_legend
        else dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        showlegend=legend,
        # Transparent backgrounds keep the chart readable in Streamlit's light and dark themes; exports set white.
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def wrap(text: str, width: int = 22) -> str:
    """A long category label (a chain of modifications) broken into lines for plotly (<br>), at spaces."""
    lines, line = [], ""
    for word in str(text).split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def themed(fig: go.Figure, theme: str | None) -> go.Figure:
    """A copy of `fig` in the template of the app's theme ("light" / "dark"; unknown: light), backgrounds kept
    transparent so the page's own background shows through. Exports take the figure as drawn for print."""
    out = go.Figure(fig)
    out.update_layout(
        template=TEMPLATES.get(theme or "light", TEMPLATE),
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return out


def _empty(title: str, message: str) -> go.Figure:
    """A figure that says why there is nothing to draw (instead of an empty grid)."""
    fig = go.Figure()
    fig.add_annotation(
        text=message, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14)
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _style(fig, title, legend=False)


def _reference_line(
    fig: go.Figure, y: float, text: str, *, log: bool, original: bool = False, below: bool = False
):
    """A labelled horizontal reference (the original's 1×, a threshold). Drawn as a shape plus an annotation
    placed by hand: plotly places an hline's own label at 10**y on a log axis (annotations use log units there),
    which sends a 10× label to 10^10 and stretches the axis."""
    line = dict(color=ORIGINAL, width=1.5) if original else dict(color=NEUTRAL, width=1, dash="dash")
    fig.add_hline(y=y, line=line)
    fig.add_annotation(
        x=1,
        xref="paper",
        y=math.log10(y) if log else y,
        yref="y",
        text=text,
        showarrow=False,
        xanchor="right",
        yanchor="top" if below else "bottom",
        font=dict(size=11, color=ORIGINAL if original else NEUTRAL),
    )


def tick_label(value: float) -> str:
    """A tick in 4 significant digits, the exponent without padding: 4e-7, not Python's 4e-07."""
    text = f"{value:.4g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa}e{int(exponent)}"


def power_label(value: float) -> str:
    """A power of ten as a tick: 0.001 … 1000 in full, beyond that 1e-6 / 1e6."""
    k = round(math.log10(value))
    return f"{value:g}" if -3 <= k <= 3 else f"1e{k}"


def _log_axis(values, *, include: Sequence[float] = ()) -> dict:
    """Log-axis settings: a fixed range (see _log_range) and readable ticks: powers of ten over a wide range,
    1-2-5 (then 1-2-3-5, then every digit) over a narrow one, always written out in full (plotly's own minor labels on a short
    log range are bare digits such as "2" and "5", which read as noise)."""
    lo, hi = _log_range(values, include=include)
    if hi - lo > 3:
        # Written out, as the tables write them: plotly's own labels mix SI and decimals ("100μ", "0.001").
        powers = [10.0**k for k in range(math.ceil(lo), math.floor(hi) + 1)]
        return dict(type="log", range=[lo, hi], tickvals=powers, ticktext=[power_label(t) for t in powers])
    ticks = []
    # At most ~5 labels on a short panel: every digit over half a decade piles "0.0008, 0.0009, 0.001" up.
    for mantissas in ((1, 2, 5), (1, 2, 3, 5), range(1, 10)):
        ticks = [m * 10.0**k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas]
        ticks = [t for t in ticks if lo <= math.log10(t) <= hi]
        if len(ticks) >= 3:
            break
    if (
        len(ticks) < 2
    ):  # under a factor of ~2: plotly's own decimal labels (1.05, 1.1, ...) are the clear ones
        return dict(type="log", range=[lo, hi])
    return dict(type="log", range=[lo, hi], tickvals=ticks, ticktext=[tick_label(t) for t in ticks])


def _log_range(values, *, include: Sequence[float] = ()) -> list[float]:
    """A log10 axis range covering the finite positive `values` and the reference lines in `include` (e.g. the
    1.1× / 2× / 10× thresholds), with a little room: shapes and annotations then never stretch the axis."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v) and v > 0] + [
        float(v) for v in include
    ]
    if not finite:
        return [-1.0, 1.0]
    lo, hi = math.log10(min(finite)), math.log10(max(finite))
    pad = max((hi - lo) * 0.08, 0.04)
    return [lo - pad, hi + pad]


def shade(color: str, i: int, n: int) -> str:
    """The i-th of n shades of a hex colour (lighter to darker around the base), so runs of one family differ."""
    if n <= 1:
        return color
    r, g, b = (int(color[k : k + 2], 16) / 255 for k in (1, 3, 5))
    h, light, s = colorsys.rgb_to_hls(r, g, b)
    light = min(max(light + (0.22 * (i / (n - 1)) - 0.11) * 2, 0.15), 0.8)
    r, g, b = colorsys.hls_to_rgb(h, light, s)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def run_styles(runs: Sequence[str], families: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
    """(colour, dash) per run: the family colour, shaded and dashed when a family has several runs.

    A single run with no family is drawn in MODIFIED red (it is "the modified model").
    """
    named: list[str | None] = list(families) if families is not None else [None] * len(runs)
    if len(runs) == 1 and named[0] is None:
        return {runs[0]: (MODIFIED, "solid")}
    by_family: dict[str, list[str]] = {}
    for run, fam in zip(runs, named, strict=True):
        by_family.setdefault(fam or "other", []).append(run)
    out = {}
    palette = list(FAMILY_COLORS.values())
    for f_index, (fam, members) in enumerate(by_family.items()):
        base = FAMILY_COLORS.get(fam.split("+")[0], palette[f_index % len(palette)])
        if fam == "other" and named[0] is None:
            base = MODIFIED
        for i, run in enumerate(members):
            out[run] = (shade(base, i, len(members)), DASHES[i % len(DASHES)])
    return out


def _layer_ticks(layers: pd.DataFrame) -> dict:
    """Whole-number layer ticks (a layer 0.5 does not exist), about a dozen of them at most."""
    n = int(layers["layer"].max()) + 1 if not layers.empty else 1
    return dict(tick0=0, dtick=max(1, math.ceil(n / 12)))


def _runs_of(df: pd.DataFrame) -> tuple[list, dict[str, tuple[str, str]]]:
    runs = df["run"].drop_duplicates().tolist() if "run" in df.columns else [None]
    fams = None
    if "family" in df.columns and "run" in df.columns:
        fams = df.drop_duplicates("run").set_index("run").loc[runs, "family"].tolist()
    styles = run_styles([str(r) for r in runs], fams)
    return runs, styles
