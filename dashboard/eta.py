"""How long a new run will take: before it starts, from the wall time of similar stored runs; while it runs, from
the measured throughput of its current step on this machine (`LiveEta`). Pure: no Streamlit."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from hemorrhage_core.progress import StepUpdate
from hemorrhage_core.specs import RunSpec


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # what the estimate rests on, shown next to it ("median of 3 runs of quant_rtn on this model")

    def text(self) -> str:
        return f"{when(self.seconds)} ({self.basis})"


def when(seconds: float) -> str:
    """A duration estimate as a person says it: "under a second", whole seconds rounded up (never "about 0 s"),
    minutes from 90 s on."""
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {math.ceil(seconds)} s"
    return f"about {seconds / 60:.1f} min"


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


# -- the live estimate while a run computes -------------------------------------------------------------------

# Below this share of a step, its own throughput is too young to extrapolate (the first block or batch also
# warms caches); the prior for the step is used instead.
MIN_MEASURED = 0.04
# A profile batch does more than the preview's pass over the same windows (residual streams, logit lens,
# attention maps); measured on SmolLM2-135M at the default budget (bench/dashboard_loop.py).
PROFILE_PER_PREVIEW_WINDOW = 1.25


def _median(values: pd.Series) -> float | None:
    values = values.dropna()
    values = values[values > 0]
    return float(values.median()) if not values.empty else None


def step_priors(history: pd.DataFrame, spec: RunSpec) -> dict[str, float]:
    """Seconds each step of a new run of `spec` should take, from the stored runs' own step times
    (`modify_s`, `profile_s`) on this model; a step without a basis is absent (the ETA then waits for the step's
    measured throughput). Pure."""
    if history is None or history.empty or "model" not in history.columns:
        return {}
    runs = history[history.model == spec.model]
    priors: dict[str, float] = {}
    if "profile_s" in runs.columns and "token_budget" in runs.columns:
        per_token = _median(runs.profile_s / runs.token_budget)
        if per_token is not None:
            priors["profile"] = per_token * spec.probe.tokens
            priors["reference"] = priors["profile"]  # the same pass over the same windows
            windows = max(spec.probe.tokens // spec.probe.window, 1)
            priors["preview"] = priors["profile"] / windows / PROFILE_PER_PREVIEW_WINDOW
    if "modify_s" in runs.columns and "spec_json" in runs.columns:
        kinds = tuple(m.kind for m in spec.mods)
        same = runs[runs.spec_json.map(_kinds) == kinds]
        modify = _median(same.modify_s) if not same.empty else None
        if modify is not None:
            priors["modify"] = modify
    priors["queue"] = 0.0  # unknowable: whoever is ahead decides
    return priors


@dataclass
class LiveEta:
    """Seconds left for a run from its StepUpdates: the current step by its own measured throughput (time per
    block or batch so far, extrapolated), the steps after it by what this run already measured (the preview
    times the windows) or else by the priors. Pure: the caller passes the clock.

    `fraction` of the bar is time-based (elapsed / (elapsed + left)) and never goes back.
    """

    priors: dict[str, float]
    windows: int  # evaluation windows of the run (the preview measures one)
    started: float  # the caller's clock when the run was asked for
    _best: float = 0.0
    _measured: dict[str, float] = field(default_factory=dict)  # step -> seconds it took
    _current: str | None = None
    _elapsed: float = 0.0

    def expected(self, step: str) -> float | None:
        """Seconds `step` takes: measured in this run, or derived from a step of this run that makes the same
        passes (the preview is one window of the profile; the reference build is the profile's pass), or the
        prior."""
        m = self._measured
        if step in m:
            return m[step]
        if step == "profile" and "preview" in m:
            return m["preview"] * self.windows * PROFILE_PER_PREVIEW_WINDOW
        if step == "profile" and "reference" in m:
            return m["reference"]
        if step == "preview" and "reference" in m:
            return m["reference"] / self.windows / PROFILE_PER_PREVIEW_WINDOW
        return self.priors.get(step)

    def update(self, u: StepUpdate, now: float) -> tuple[float, float | None]:
        """(bar fraction, seconds left or None while unknown) after update `u` at time `now`."""
        if self._current is not None and u.step != self._current:
            self._measured[self._current] = self._elapsed  # the previous step is over: its true duration
        self._current, self._elapsed = u.step, u.elapsed_s
        if u.fraction >= MIN_MEASURED and u.elapsed_s > 0:
            left = u.elapsed_s * (1 - u.fraction) / u.fraction
        elif (prior := self.expected(u.step)) is not None:
            left = max(prior - u.elapsed_s, 0.0)
        else:
            left = None
        later = [self.expected(s) for s in u.later]
        if left is not None and all(x is not None for x in later):
            left += sum(later)
            elapsed = now - self.started
            self._best = max(self._best, elapsed / max(elapsed + left, 1e-9))
        else:
            left = None
            steps = [s for s in u.steps if s != "queue"] or [u.step]
            i = steps.index(u.step) if u.step in steps else 0
            self._best = max(self._best, (i + u.fraction) / len(steps))
        return min(self._best, 1.0), left
