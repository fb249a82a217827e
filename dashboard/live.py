"""What a page shows while something computes: a progress bar that names the step and the block or batch, with
the time left from this step's measured throughput, the queue position, and the first headline numbers with
their confidence intervals as they arrive. Streamlit glue over the library's callbacks (progress.py, partial.py)
and the pure ETA (eta.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from hemorrhage_core.probes.partial import Interval, PartialMetrics
from hemorrhage_core.progress import StepUpdate

from .eta import MIN_MEASURED, LiveEta

STEP_TITLES = {
    "queue": "In the queue",
    "reference": "Base reference (once per model and budget)",
    "modify": "Modifying the model",
    "preview": "First estimate",
    "profile": "Profiling",
}
# Headline name -> (label, format): the labels of runs.headlines, so the numbers keep their place when final.
PARTIAL_LABELS = {
    "ppl_ratio": ("Perplexity ratio", "{:.4f}"),
    "kl_mean": ("KL mean (nats)", "{:.4f}"),
    "top1_agreement": ("Top-1 agreement", "{:.1%}"),
}


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def step_text(u: StepUpdate, elapsed: float, left: float | None) -> str:
    """The bar's line: step, what it is doing, time so far and left."""
    title = STEP_TITLES.get(u.step, u.step)
    when = f"{_seconds(elapsed)} elapsed" + (
        f", ~{_seconds(left)} left" if left is not None else ", estimating the time left…"
    )
    if u.step == "queue":
        return f"{u.message} · {when}"
    return f"{title}: {u.message} · {when}"


def interval_text(name: str, i: Interval) -> str:
    fmt = PARTIAL_LABELS[name][1]
    if not i.known:
        return "interval: more data needed"
    return f"95 % CI {fmt.format(i.lo)} – {fmt.format(i.hi)}"


def partial_caption(p: PartialMetrics) -> str:
    if p.final:
        return f"Final: all {p.total_windows} windows ({p.positions:,} positions). {p.method}."
    where = (
        f"first estimate from the first {p.positions:,} positions of window 1 of {p.total_windows}, before the "
        "profile (its interval reflects the variation inside those positions only)"
        if p.source == "preview"
        else f"{p.windows} of {p.total_windows} windows measured"
    )
    return f"Running estimate: {where}; refined as batches complete. {p.method}."


def draw_partial(slot: Any, p: PartialMetrics) -> None:
    """The running headline numbers in `slot` (an st.empty), replacing what it held."""
    with slot.container():
        cols = st.columns(len(PARTIAL_LABELS))
        for col, (name, (label, fmt)) in zip(cols, PARTIAL_LABELS.items(), strict=True):
            i: Interval = getattr(p, name)
            col.metric(
                label, fmt.format(i.value), interval_text(name, i), delta_color="off", delta_arrow="off"
            )
        st.caption(partial_caption(p))


def step_reporter(bar: Any, eta: LiveEta) -> Callable[[StepUpdate], None]:
    """A StepUpdate listener that moves `bar` (an st.progress) with the live ETA."""

    def report(u: StepUpdate) -> None:
        now = time.monotonic()
        fraction, left = eta.update(u, now)
        bar.progress(fraction, text=step_text(u, now - eta.started, left))

    return report


@contextmanager
def progress_bar(what: str) -> Iterator[Callable[[float, str], None]]:
    """A progress bar for one analysis (generation, module ranking, attention maps, outliers): yields a
    `(fraction, message)` callback; the time left is extrapolated from the throughput so far. The bar is
    removed when the body ends."""
    slot = st.empty()
    bar = slot.progress(0.0, text=f"{what}…")
    started = time.monotonic()
    best = [0.0]

    def report(fraction: float, message: str) -> None:
        best[0] = max(best[0], min(max(fraction, 0.0), 1.0))
        elapsed = time.monotonic() - started
        f = best[0]
        left = f", ~{_seconds(elapsed * (1 - f) / f)} left" if f >= MIN_MEASURED else ""
        bar.progress(f, text=f"{what}: {message} · {_seconds(elapsed)} elapsed{left}")

    try:
        yield report
    finally:
        slot.empty()
