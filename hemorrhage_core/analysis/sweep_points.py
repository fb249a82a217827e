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
    cls = MODIFICATIONS.get(mod.get("kind"))
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
    """What analysis.thresholds found for each curve, shaped for the chart and the table."""

    zones: dict[str, tuple[float, float]]  # series -> (mildest setting, last setting inside the robust zone)
    knees: dict[str, float]  # series -> knee setting
    table: pd.DataFrame  # one row per series: 1.1x / 2x / 10x first settings over, crossings, knee, notes


def severity_direction(field: str) -> str:
    """Which way a knob compresses, when its name says so (bits fall, sparsity rises); else let the data tell."""
    if "bits" in field:
        return "descending"
    if field in ("sparsity", "fraction", "n_blocks", "times"):
        return "ascending"
    return "auto"


def series_thresholds(points: pd.DataFrame, direction: str = "auto") -> SeriesThresholds:
    """Thresholds, robust zone and knee of every series with at least two settings (see analysis.thresholds);
    `direction` as severity_direction gives it."""
    from ..analysis import thresholds as th

    zones, knees, rows = {}, {}, []
    for series, d in points.dropna(subset=["ppl_ratio"]).groupby("series", sort=False):
        d = d.drop_duplicates("x")
        if len(d) < 2:
            continue
        t = th.thresholds(d.x.astype(float).tolist(), d.ppl_ratio.tolist(), direction=direction)
        if t.robust_zone:
            zones[series] = (t.values[0], t.robust_zone[-1])
        if t.knee:
            knees[series] = t.knee.value
        rows.append({
            "series": series,
            "compression grows": "as the value falls" if t.direction == "descending" else "as the value rises",
            **{f"first over {k}×": v for k, v in t.first_over.items()},
            **{f"crosses {k}× at": v for k, v in t.crossing.items()},
            "robust zone": f"{t.robust_zone[0]:g} … {t.robust_zone[-1]:g}" if t.robust_zone else "empty",
            "knee": t.knee.value if t.knee else None,
            "notes": "; ".join(t.notes),
        })  # fmt: skip
    return SeriesThresholds(zones, knees, pd.DataFrame(rows))
