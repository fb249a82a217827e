"""Robustness thresholds of a one-knob sweep (docs/metrics.md §4). Pure functions, no torch.

A sweep gives one perplexity ratio r_i = ppl_i / ppl_base per setting v_i of a knob (bits, sparsity, temperature,
blocks removed, ...). Everything here works in *severity order*: the order in which the knob hurts more.

Definitions (each one is what the tests check on analytic curves):

- **Severity order.** Settings sorted by value, ascending or descending. `direction="auto"` takes the direction
  in which the ratio grows between the two ends of the sweep (bits: descending; sparsity: ascending); a tie
  keeps ascending. The oriented coordinate is x = v (ascending) or x = -v (descending), so x grows with severity.
- **Threshold at level L** (1.1×, 2×, 10×): the first setting, in severity order, whose ratio exceeds L (strictly).
  None when no setting of the sweep reaches it. `crossing` additionally interpolates where the curve crosses L,
  linearly in (x, ln r) between that setting and the one before it; None when the very first setting is already
  over L (nothing to interpolate from).
- **Robust operation zone**: every setting before the 1.1× threshold (all of them when it is never reached; none
  when the mildest setting already exceeds it).
- **Knee**: where log-perplexity stops growing linearly. With y_i = ln r_i, for every interior setting k we fit by
  least squares the continuous two-segment ("hinge") model y = a + b·(x − x_k) + c·max(0, x − x_k); k* is the
  best fit (smallest residual sum of squares; the earliest on ties). The knee is v_{k*} when
  (1) there are at least 3 settings, (2) the slope after the knee, b + c, is positive and at least
  `min_slope_ratio` (2) times the slope before it, max(b, 0), and (3) the hinge removes at least `min_gain`
  (half) of the residual sum of squares of a single straight line — a straight line (any slope) has no knee.
  The knee is the last setting still on the initial linear trend: beyond it, damage accelerates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

LEVELS: tuple[float, ...] = (1.1, 2.0, 10.0)
DIRECTIONS = ("auto", "ascending", "descending")


@dataclass(frozen=True)
class Knee:
    """The hinge fit behind a knee: slopes of ln(ppl ratio) per unit of oriented knob before and after it."""

    value: float
    slope_before: float
    slope_after: float
    sse_hinge: float
    sse_line: float


@dataclass(frozen=True)
class Thresholds:
    """The thresholds of one sweep. `values` and `ppl_ratios` are in severity order."""

    direction: str  # "ascending" or "descending": the direction of the knob in which damage grows
    values: tuple[float, ...]
    ppl_ratios: tuple[float, ...]
    first_over: dict[str, float | None]  # "1.1" -> first setting whose ratio exceeds 1.1 (None: never)
    crossing: dict[str, float | None]  # "1.1" -> interpolated knob value where the ratio crosses 1.1
    robust_zone: tuple[float, ...]  # the settings before the 1.1x threshold
    knee: Knee | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["knee"] = self.knee.value if self.knee else None
        d["knee_fit"] = asdict(self.knee) if self.knee else None
        return d

    def describe(self) -> str:
        """One human line per finding, for the CLI."""

        def fmt(v):
            return "not reached" if v is None else f"{v:g}"

        over = ", ".join(f">{level}x at {fmt(self.first_over[level])}" for level in self.first_over)
        zone = (
            f"{self.robust_zone[0]:g} .. {self.robust_zone[-1]:g} ({len(self.robust_zone)} settings)"
            if self.robust_zone
            else "empty (the mildest setting already exceeds 1.1x)"
        )
        knee = (
            f"{self.knee.value:g} (ln-ppl slope {self.knee.slope_before:.3g} -> {self.knee.slope_after:.3g} per unit)"
            if self.knee
            else "none (log-perplexity grows linearly, or too few settings)"
        )
        return f"thresholds: {over}\nrobust zone: {zone}\nknee: {knee}"


def _key(level: float) -> str:
    return f"{level:g}"


def severity_direction(values: Sequence[float], ratios: Sequence[float]) -> str:
    """'ascending' when the ratio at the largest value is >= the ratio at the smallest, else 'descending'."""
    order = np.argsort(np.asarray(values, dtype=float), kind="stable")
    return "ascending" if ratios[order[-1]] >= ratios[order[0]] else "descending"


def _lstsq_sse(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    return coef, float(resid @ resid)


def find_knee(
    x: Sequence[float], y: Sequence[float], *, min_slope_ratio: float = 2.0, min_gain: float = 0.5
) -> tuple[int, Knee] | None:
    """Index and fit of the knee of y(x) (x strictly increasing), by the hinge rule in the module docstring.

    Returns (k, Knee) with Knee.value = x[k] in the *oriented* coordinate, or None when there is no knee.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xs)
    if n < 3:
        return None
    _, sse_line = _lstsq_sse(np.stack([np.ones(n), xs], axis=1), ys)
    best: tuple[int, np.ndarray, float] | None = None
    for k in range(1, n - 1):
        dx = xs - xs[k]
        design = np.stack([np.ones(n), dx, np.maximum(dx, 0.0)], axis=1)
        coef, sse = _lstsq_sse(design, ys)
        if best is None or sse < best[2] - 1e-12 * max(1.0, sse_line):
            best = (k, coef, sse)
    assert best is not None  # n >= 3: the loop ran at least once
    k, (_, b, c), sse = best
    after = b + c
    # Floating-point noise on an exact line leaves sse_line ~1e-30: treat "no residual to remove" as no knee.
    scale = max(1.0, float(np.abs(ys).max()))
    if sse_line <= 1e-18 * scale**2 * n:
        return None
    if not (after > 0 and after >= min_slope_ratio * max(b, 0.0)):
        return None
    if sse > (1.0 - min_gain) * sse_line:
        return None
    return k, Knee(
        value=float(xs[k]), slope_before=float(b), slope_after=float(after), sse_hinge=sse, sse_line=sse_line
    )


def thresholds(
    values: Sequence[float],
    ppl_ratios: Sequence[float],
    *,
    direction: str = "auto",
    levels: Sequence[float] = LEVELS,
) -> Thresholds:
    """Thresholds, robust zone and knee of a sweep: `values[i]` is a knob setting, `ppl_ratios[i]` its ppl ratio.

    Settings may come in any order; duplicated values are refused (a sweep point is measured once). Non-finite
    ratios (a model that produced NaN) count as over every level; they are excluded from the knee fit.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if len(values) != len(ppl_ratios):
        raise ValueError(f"{len(values)} values but {len(ppl_ratios)} ratios")
    if not values:
        raise ValueError("a sweep needs at least one setting")
    v = [float(a) for a in values]
    if len(set(v)) != len(v):
        raise ValueError(f"duplicated sweep values: {sorted(v)}")
    r = [float(a) if a is not None else math.nan for a in ppl_ratios]
    finite_r = [a if math.isfinite(a) else math.inf for a in r]
    if direction == "auto":
        direction = severity_direction(v, finite_r)
    order = sorted(range(len(v)), key=lambda i: v[i], reverse=direction == "descending")
    vs, rs = [v[i] for i in order], [finite_r[i] for i in order]
    sign = 1.0 if direction == "ascending" else -1.0
    xs = [sign * a for a in vs]

    first_over: dict[str, float | None] = {}
    crossing: dict[str, float | None] = {}
    for level in levels:
        idx = next((i for i, a in enumerate(rs) if a > level), None)
        first_over[_key(level)] = None if idx is None else vs[idx]
        crossing[_key(level)] = None if not idx else _interpolate(xs, rs, idx, level, sign)
    cut = next((i for i, a in enumerate(rs) if a > levels[0]), len(rs))
    notes = []
    finite = [i for i, a in enumerate(rs) if math.isfinite(a) and a > 0]
    if len(finite) < len(rs):
        notes.append(
            f"{len(rs) - len(finite)} setting(s) with non-finite perplexity left out of the knee fit"
        )
    found = find_knee([xs[i] for i in finite], [math.log(rs[i]) for i in finite])
    knee = None
    if found is not None:
        k, fit = found
        knee = Knee(
            value=vs[finite[k]],
            slope_before=fit.slope_before,
            slope_after=fit.slope_after,
            sse_hinge=fit.sse_hinge,
            sse_line=fit.sse_line,
        )
    return Thresholds(
        direction=direction,
        values=tuple(vs),
        ppl_ratios=tuple(rs),
        first_over=first_over,
        crossing=crossing,
        robust_zone=tuple(vs[:cut]),
        knee=knee,
        notes=tuple(notes),
    )


def _interpolate(xs: list[float], rs: list[float], idx: int, level: float, sign: float) -> float | None:
    """Knob value where ln r crosses ln `level` between settings idx-1 (<= level) and idx (> level)."""
    x0, x1, r0, r1 = xs[idx - 1], xs[idx], rs[idx - 1], rs[idx]
    if not (math.isfinite(r1) and r0 > 0):
        return sign * x1
    y0, y1, yl = math.log(r0), math.log(r1), math.log(level)
    if y1 == y0:
        return sign * x1
    t = (yl - y0) / (y1 - y0)
    return sign * (x0 + min(max(t, 0.0), 1.0) * (x1 - x0))
