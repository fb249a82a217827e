"""Activation outliers: why static activation scales fail, and what SmoothQuant smoothing does about it.

The statistics come from `modify.scaling.activation_outlier_stats` (one tidy row per layer input channel: layer,
module, channel, max_abs_before, max_abs_after). This module summarises them per (layer, module) and names the
worst channels; both summaries are pure pandas. A static per-tensor activation scale is set by the largest
channel, so the max/median ratio of a layer input is the number of quantization levels the typical channel
loses: a ratio of 1000 leaves an int8 grid ~0 levels for a median channel.

`measure_outliers` is the one function that runs the model (imported lazily: no torch at import time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

STATS_COLUMNS = ["layer", "module", "channel", "max_abs_before", "max_abs_after"]
SUMMARY_COLUMNS = [
    "layer",
    "module",
    "channels",
    "max_before",
    "median_before",
    "ratio_before",
    "max_after",
    "median_after",
    "ratio_after",
    "worst_channel",
]


def _ratio(top: pd.Series, median: pd.Series) -> pd.Series:
    """max / median; NaN where the median is 0 (more than half the channels never fire: no typical scale)."""
    return (top / median.where(median > 0)).astype(float)


def outlier_summary(stats: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, module): the max and median over input channels of max |x| before and after smoothing, their
    ratio (max / median: how far the worst channel stands out), the channel count and the worst channel.

    `stats`: tidy rows as `activation_outlier_stats` returns them. Sorted by layer, then module.
    """
    if stats.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    groups = stats.groupby(["layer", "module"], sort=True)
    out = groups.agg(
        channels=("channel", "size"),
        max_before=("max_abs_before", "max"),
        median_before=("max_abs_before", "median"),
        max_after=("max_abs_after", "max"),
        median_after=("max_abs_after", "median"),
    )
    out["ratio_before"] = _ratio(out.max_before, out.median_before)
    out["ratio_after"] = _ratio(out.max_after, out.median_after)
    out["worst_channel"] = stats.loc[groups["max_abs_before"].idxmax(), "channel"].to_numpy()
    return out.reset_index()[SUMMARY_COLUMNS]


def worst_channels(stats: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The `top` channels with the largest max |x| before smoothing, over every layer input: their values before
    and after, and how many times their own input's median channel they are (before / after)."""
    if stats.empty:
        return pd.DataFrame(columns=[*STATS_COLUMNS, "x_median_before", "x_median_after"])
    medians = stats.groupby(["layer", "module"])[["max_abs_before", "max_abs_after"]].transform("median")
    out = stats.assign(
        x_median_before=_ratio(stats.max_abs_before, medians.max_abs_before),
        x_median_after=_ratio(stats.max_abs_after, medians.max_abs_after),
    )
    return out.nlargest(top, "max_abs_before").reset_index(drop=True)


@dataclass(frozen=True)
class Worst:
    """The single largest input channel: where it is and its max |x| before / after smoothing."""

    layer: int
    module: str
    channel: int
    before: float
    after: float

    def text(self) -> str:
        return (
            f"layer {self.layer} {self.module} channel {self.channel}: {self.before:.4g} → {self.after:.4g}"
        )


def worst(stats: pd.DataFrame) -> Worst | None:
    """The channel with the largest max |x| before smoothing (None for empty stats)."""
    if stats.empty:
        return None
    row = stats.loc[stats.max_abs_before.idxmax()]
    return Worst(
        int(row.layer), str(row.module), int(row.channel), float(row.max_abs_before), float(row.max_abs_after)
    )


def records(df: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: numpy scalars as Python numbers, NaN and infinities as None (JSON has neither)."""
    clean = df.astype(object).where(df.notna(), None)
    rows = clean.to_dict("records")
    for row in rows:
        for k, v in row.items():
            if isinstance(v, np.generic):
                v = v.item()
            row[k] = None if isinstance(v, float) and not np.isfinite(v) else v
    return rows


def measure_outliers(
    runner, model: str, probe, *, corpus: str, n: int, length: int, alpha: float, progress=None
) -> pd.DataFrame:
    """`activation_outlier_stats` of the base model `model` on `n` calibration sequences of `length` tokens from
    the end of `corpus` (the same windows a SmoothQuant run with these calib_* fields and this `probe` calibrates
    on: when `corpus` is the evaluation corpus, its evaluation tokens are left out). The base is only read."""
    from ..modify.scaling import activation_outlier_stats
    from ..specs import RunSpec, SmoothQuant

    # Validates alpha and the calibration size with SmoothQuant's own messages (SpecError).
    SmoothQuant(alpha=alpha, calib_corpus=corpus, calib_samples=n, calib_len=length)
    windows = runner.calibration_windows(RunSpec(model, (), probe), corpus, n, length)
    return activation_outlier_stats(runner.base(model).model, windows, alpha=alpha, progress=progress)
