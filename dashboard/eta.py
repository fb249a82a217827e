"""How long a new run will take, estimated from the wall time of similar stored runs. Pure: no Streamlit."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from hemorrhage_core.specs import RunSpec


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # what the estimate rests on, shown next to it ("median of 3 runs of quant_rtn on this model")

    def text(self) -> str:
        s = self.seconds
        when = f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"
        return f"about {when} ({self.basis})"


def _kinds(spec_json: str) -> tuple[str, ...]:
    try:
        return tuple(m["kind"] for m in json.loads(spec_json).get("mods", []))
    except (ValueError, TypeError, KeyError):
        return ()


def estimate_seconds(history: pd.DataFrame, spec: RunSpec) -> Estimate | None:
    """Median seconds per budgeted token of the most similar stored runs, times this spec's budget.

    Similar means, in order of preference: same model and same chain of modification kinds; same model;
    any model. `history` is `Store.runs()` (columns model, spec_json, token_budget, wall_s). The first run of a
    model also loads it and builds the base reference, so the median (not the mean) is taken. None when no
    stored run has a wall time.
    """
    needed = {"model", "spec_json", "token_budget", "wall_s"}
    if history is None or history.empty or not needed <= set(history.columns):
        return None
    runs = history.dropna(subset=["wall_s", "token_budget"])
    runs = runs[(runs.wall_s > 0) & (runs.token_budget > 0)]
    if runs.empty:
        return None
    kinds = tuple(m.kind for m in spec.mods)
    same_model = runs[runs.model == spec.model]
    same_chain = same_model[same_model.spec_json.map(_kinds) == kinds]
    for subset, basis in (
        (same_chain, f"{' → '.join(kinds) or 'original'} on this model"),
        (same_model, "other methods on this model"),
        (runs, "runs of other models"),
    ):
        if not subset.empty:
            per_token = float((subset.wall_s / subset.token_budget).median())
            n = len(subset)
            return Estimate(
                per_token * spec.probe.tokens, f"median of {n} stored run{'s' * (n != 1)}: {basis}"
            )
    return None
