"""Sweep summaries: the thresholds of each model's points of a one-knob sweep, ready to print and to store.

A sweep over `--model a,b` is one summary per model. A summary is identified by a hash of its model, knob and
run keys, so re-running the same sweep (all points cached) finds the same summary instead of adding a copy.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .thresholds import Thresholds, thresholds


@dataclass(frozen=True)
class SweepSummary:
    """One model's points of a sweep over `param`, in the order given, and their thresholds."""

    model: str
    param: str
    values: tuple[Any, ...]
    run_keys: tuple[str, ...]
    ppl_ratios: tuple[float, ...]
    labels: tuple[str, ...] = ()
    thresholds: Thresholds | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sweep_id(self) -> str:
        payload = json.dumps([self.model, self.param, list(self.run_keys)])
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "model": self.model,
            "param": self.param,
            "points": [
                {"value": v, "run_key": k, "label": lab, "ppl_ratio": _finite(r)}
                for v, k, lab, r in zip(
                    self.values,
                    self.run_keys,
                    self.labels or [""] * len(self.values),
                    self.ppl_ratios,
                    strict=True,
                )
            ],
            "thresholds": self.thresholds.to_dict() if self.thresholds else None,
            "note": self.note,
            # accuracy-drop thresholds per task, only for sweeps run with --tasks (tasks/evaluate.task_thresholds)
            **({"tasks": self.extra["tasks"]} if self.extra.get("tasks") else {}),
        }

    def describe(self) -> str:
        head = f"sweep {self.param} on {self.model} ({len(self.values)} settings, id {self.sweep_id})"
        if self.thresholds is None:
            return f"{head}\n{self.note}"
        lines = [head, self.thresholds.describe(), *([self.note] if self.note else [])]
        for task, t in self.extra.get("tasks", {}).items():

            def fmt(v):
                return "not reached" if v is None else f"{v:g}"

            lines.append(
                f"{task}: accuracy drop significant (95 %) first at {fmt(t['first_significant_drop'])}, "
                f"over 5 points first at {fmt(t['first_drop_over_5pt'])}"
            )
        return "\n".join(lines)


def _finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _numeric(values: Sequence[Any]) -> list[float] | None:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return out if all(math.isfinite(v) for v in out) else None


def summarize(
    param: str,
    model: str,
    values: Sequence[Any],
    results: Sequence[Any],
    *,
    direction: str = "auto",
) -> SweepSummary:
    """The summary of one model's sweep points. `results` are RunResults (or anything with run_key, metrics and
    spec) aligned with `values`. Non-numeric knobs (tuples of layer indices, strings) are stored without
    thresholds, with a note saying why."""
    if len(values) != len(results):
        raise ValueError(f"{len(values)} values but {len(results)} results")
    ratios = tuple(float(r.metrics.get("ppl_ratio", math.nan)) for r in results)
    summary = functools.partial(
        SweepSummary,
        model=model,
        param=param,
        values=tuple(values),
        run_keys=tuple(r.run_key for r in results),
        ppl_ratios=ratios,
        labels=tuple(r.spec.label() for r in results),
    )
    numeric = _numeric(values)
    note = ""
    if numeric is None:
        # A knob of named formats (GGUF types: Q2_K, Q4_K_M, ...) is ordered by what each setting stores: the
        # bits per weight its run measured, when every run reports one.
        numeric = _numeric([r.metrics.get("bits_per_weight", math.nan) for r in results])
        if numeric is None:
            return summary(note="thresholds need a numeric knob; this one is not")
        note = "thresholds over each setting's measured bits per weight (the knob names formats, not numbers)"
    if len(set(numeric)) != len(numeric):
        return summary(note="thresholds need distinct settings; some values repeat")
    return summary(note=note, thresholds=thresholds(numeric, ratios, direction=direction))


def summarize_sweep(
    param: str, points: Sequence[tuple[str, Any, Any]], *, direction: str = "auto"
) -> list[SweepSummary]:
    """One summary per model from (model, value, result) triples, models in order of first appearance."""
    by_model: dict[str, list[tuple[Any, Any]]] = {}
    for model, value, result in points:
        by_model.setdefault(model, []).append((value, result))
    return [
        summarize(param, model, [v for v, _ in pts], [r for _, r in pts], direction=direction)
        for model, pts in by_model.items()
    ]


def _value(raw: str):
    """A --values item as the number it names when it is one (thresholds need numbers), else the raw text."""
    try:
        return float(raw)
    except ValueError:
        return raw


def record_sweep(param: str, direction: str, store, points, results, task_reports=None) -> list[SweepSummary]:
    """Summaries of a finished `hemlab sweep` (one per model), stored in the `sweeps` table.

    `points`: the planned points (`cli.SweepPoint`: model, raw value, spec), `results` their runs in that order,
    `task_reports` their task reports (or None): a numeric sweep then also stores accuracy-drop thresholds.
    """
    rows = [(p.model, _value(p.raw), result) for p, result in zip(points, results, strict=True)]
    summaries = summarize_sweep(param, rows, direction=direction)
    if task_reports and any(task_reports):
        from ..tasks.evaluate import task_thresholds

        for s in summaries:
            if s.thresholds is None or _numeric(s.values) is None:  # task thresholds need numeric settings
                continue
            mine = [t for p, t in zip(points, task_reports, strict=True) if p.model == s.model]
            s.extra["tasks"] = task_thresholds(list(s.values), mine, s.thresholds.direction)
    now = datetime.now(UTC).replace(tzinfo=None)
    for s in summaries:
        store.save_sweep(s.to_dict(), now)
    return summaries
