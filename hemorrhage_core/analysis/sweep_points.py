"""Sweeps over one knob: the specs to run, and the stored runs gathered back into curves. Pure: no Streamlit."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import SpecError
from ..specs import MODIFICATIONS, Modification, ProbeSettings, RunSpec

# Columns of a sweep-points frame, one row per stored run on a curve.
POINT_COLUMNS = [
    "series",
    "x",
    "ppl_ratio",
    "kl_mean",
    "top1_agreement",
    "memory_mb",
    "family",
    "label",
    "model",
    "corpus",
    "token_budget",
    "run_key",
]


def sweep_specs(
    model: str, probe: ProbeSettings, base: Modification, field: str, values: list[Any]
) -> list[RunSpec]:
    """One single-modification spec per value of `field`, every other field as in `base`.

    SpecError names the value the modification refuses.
    """
    if not values:
        raise SpecError("a sweep needs at least one value")
    specs = []
    for v in values:
        try:
            mod = dataclasses.replace(base, **{field: v})
        except SpecError as exc:
            raise SpecError(f"{field}={v}: {exc}") from exc
        specs.append(RunSpec(model=model, mods=(mod,), probe=probe))
    return specs


def changed_fields(mod: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    """'group_size=32, scheme=asym': the fields of a stored modification that differ from its class defaults
    (what names a curve: short, and still unique), leaving out `skip` (the knob a chart puts on its x axis)."""
    kind = mod.get("kind")
    cls = MODIFICATIONS.get(kind) if isinstance(kind, str) else None
    defaults = {f.name: f.default for f in dataclasses.fields(cls)} if cls else {}
    return ", ".join(
        f"{k}={v}" for k, v in mod.items() if k != "kind" and k not in skip and defaults.get(k, v) != v
    )


def short_model(model: str) -> str:
    """A model as charts name it: embedded names and hub ids as they are, folders by their last part."""
    return Path(model).name if Path(model).expanduser().is_absolute() else model


def parse_values(text: str, py_type: type) -> list[Any]:
    """'8, 6,4' -> [8, 6, 4] in the field's type; SpecError on anything unparsable."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            out.append(py_type(float(part)) if py_type is int and float(part).is_integer() else py_type(part))
        except ValueError:
            raise SpecError(f"cannot read {part!r} as {py_type.__name__}") from None
    return out


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def sweep_points(history: pd.DataFrame, kind: str, field: str, *, family: str = "other") -> pd.DataFrame:
    """Every stored single-modification run of `kind` as a point on a curve along `field`.

    A series is one (model, corpus, budget, window, every other field of the modification), so runs that differ
    only in the swept knob form one line. `history` is ui.runs.history(store).
    """
    rows = []
    for rec in history.to_dict("records") if not history.empty else []:
        mods = json.loads(rec["spec_json"]).get("mods", [])
        if len(mods) != 1 or mods[0].get("kind") != kind or field not in mods[0]:
            continue
        others = changed_fields(mods[0], skip=(field,))
        weight_bytes = _num(rec.get("weight_bytes"))
        rows.append(
            {
                "series": f"{short_model(rec['model'])} · {kind}"
                + (f" ({others})" if others else "")
                + f" · {rec['corpus']} {int(rec['token_budget']):,} tok w{int(rec['window_tokens'])}",
                "x": mods[0][field],
                "ppl_ratio": _num(rec.get("ppl_ratio")),
                "kl_mean": _num(rec.get("kl_mean")),
                "top1_agreement": _num(rec.get("top1_agreement")),
                "memory_mb": weight_bytes / 2**20 if weight_bytes else None,
                "family": family,
                "label": rec["label"],
                "model": rec["model"],
                "corpus": rec["corpus"],
                "token_budget": int(rec["token_budget"]),
                "run_key": rec["run_key"],
            }
        )
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def series_for_keys(points: pd.DataFrame, run_keys: list[str]) -> list[str]:
    """The series that contain any of these runs (e.g. the sweep the form describes), in first-seen order."""
    hit = points[points.run_key.isin(run_keys)]
    return hit.series.drop_duplicates().tolist()


@dataclass(frozen=True)
class SeriesThresholds:
    """What analysis.thresholds found for each curve, shaped for the chart, the headlines and the table."""

    zones: dict[str, tuple[float, float]]  # series -> (mildest setting, last setting inside the robust zone)
    knees: dict[str, float]  # series -> knee setting
    table: pd.DataFrame  # one row per series: robust zone, first settings over 1.1x / 2x / 10x, knee, notes
    headlines: dict[str, str] = dataclasses.field(default_factory=dict)  # series -> one sentence (markdown)


def severity_direction(field: str) -> str:
    """Which way a knob compresses, when its name says so (bits fall, sparsity rises); else let the data tell."""
    if "bits" in field:
        return "descending"
    if field in ("sparsity", "fraction", "n_blocks", "times"):
        return "ascending"
    return "auto"


def crossing_text(t, level: str, integer: bool) -> str | None:
    """Where the curve crosses `level`, said only from measured settings: "between 5 and 4", the two adjacent
    settings of the sweep that bracket it, with the interpolated value for a continuous knob ("≈ 0.34"); None
    when it is never crossed, or already at the mildest setting. An integer knob (bits, blocks) has no setting
    between two integers, so no interpolated one is made up."""
    over = t.first_over.get(level)
    if over is None or over == t.values[0]:
        return None
    before = t.values[t.values.index(over) - 1]
    text = f"between {before:g} and {over:g}"
    crossing = t.crossing.get(level)
    if not integer and crossing is not None:
        text += f" (≈ {crossing:.3g})"
    return text


def headline(t, knob: str, *, integer: bool) -> str:
    """The curve's finding as a sentence: "**robust down to 5 bits** (×1.06); over 1.1× between 5 and 4; serious
    damage (2×) between 4 and 3". Descending knobs (bits) are robust *down to* a setting, ascending ones *up to*."""
    way = "down to" if t.direction == "descending" else "up to"
    ratio = dict(zip(t.values, t.ppl_ratios, strict=True))

    def at(v: float) -> str:  # "5 bits", "sparsity 0.4"
        return f"{v:g} {knob}" if knob.endswith("bits") else f"{knob} {v:g}"

    if not t.robust_zone:
        first = t.values[0]
        return f"**not robust at any measured setting**: already ×{ratio[first]:.3g} at {at(first)}"
    last = t.robust_zone[-1]
    if len(t.robust_zone) == len(t.values):
        return (
            f"**robust across every measured setting**, {way} {at(last)} (×{ratio[last]:.3g}); "
            "measure harsher settings to find the threshold"
        )
    parts = [f"**robust {way} {at(last)}** (×{ratio[last]:.3g})"]
    for level, name in (("1.1", "over 1.1×"), ("2", "serious damage (2×)"), ("10", "collapse (10×)")):
        if (cross := crossing_text(t, level, integer)) is not None:
            parts.append(f"{name} {cross}")
    return "; ".join(parts)


def series_thresholds(points: pd.DataFrame, direction: str = "auto", *, knob: str = "x") -> SeriesThresholds:
    """Thresholds, robust zone, knee and a headline of every series with at least two settings (see
    analysis.thresholds); `direction` as severity_direction gives it, `knob` names the setting in headlines."""
    from ..analysis import thresholds as th

    zones, knees, rows, heads = {}, {}, [], {}
    for series, d in points.dropna(subset=["ppl_ratio"]).groupby("series", sort=False):
        d = d.drop_duplicates("x")
        if len(d) < 2:
            continue
        values = d.x.astype(float).tolist()
        integer = all(float(v).is_integer() for v in values)
        t = th.thresholds(values, d.ppl_ratio.tolist(), direction=direction)
        if t.robust_zone:
            zones[series] = (t.values[0], t.robust_zone[-1])
        if t.knee:
            knees[series] = t.knee.value
        heads[series] = headline(t, knob, integer=integer)
        rows.append({
            "curve": series,
            "robust zone": f"{t.robust_zone[0]:g} … {t.robust_zone[-1]:g}" if t.robust_zone else "empty",
            **{f"first over {k}×": v for k, v in t.first_over.items()},
            "knee": t.knee.value if t.knee else None,
            "settings": len(values),
            "notes": "; ".join(t.notes),
        })  # fmt: skip
    return SeriesThresholds(zones, knees, pd.DataFrame(rows), heads)
