"""Paired task evaluation: the original and a modified model on the same items, and what changed between them.

The original model's per-item log-likelihoods are computed once per (model identity, device and dtype, task,
item subset, prompt version, item content) and stored (`analysis_results`, under a base key that is no run's
key), so every modified spec of a model costs one pass of the modified model. The modified model's scores are
stored under its run, so they go when the run is deleted, and a stored run with stored scores answers without
loading any model.

Per task and metric (acc, acc_norm): both accuracies with Wilson 95 % intervals, the paired difference with
Newcombe's hybrid score interval, flips right->wrong and wrong->right with McNemar's exact p-value (tasks/stats.py);
for multiple-choice tasks the mean KL(original || modified) and top-1 agreement of the answer distributions
(softmax over the choices' summed log-likelihoods) and the number of changed answers; LAMBADA-style tasks also
report both perplexities of the target words. Grouped tasks (MMLU) report each category (STEM, humanities, social
sciences, other) as well; like lm-eval's group score, an accuracy over several subjects is the mean over their
items (weighted by size).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .. import models
from ..identity import model_identity
from .entry import TaskEntry
from .items import ALL_ITEMS, Item, Subset, TaskSet, task_set
from .scoring import encode_requests, score
from .stats import PairedTable, answer_kl, mcnemar_exact, paired_difference_ci, softmax, wilson

log = logging.getLogger(__name__)

TASK_CODE_VERSION = "1"  # bump when a stored task score would change for the same items
SCORES_PREFIX = "task_scores:"  # analysis name of per-item scores: task_scores:<task set key>
SUMMARY_PREFIX = "task:"  # analysis name of a run's summary of one task: task:<task name>
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class ItemScores:
    loglik: tuple[tuple[float, ...], ...]  # per item, per request (choice)
    greedy: tuple[tuple[bool, ...], ...]


# -- what counts as right: (kind, metric) -> fn(item, loglik, greedy) -> chosen choice (None: no choice) ---------
def _argmax(values) -> int:
    best = 0
    for i, v in enumerate(values):  # first of equal maxima, as numpy's argmax
        if v > values[best]:
            best = i
    return best


def _pick_acc(item: Item, ll, greedy) -> int:
    return _argmax(ll)


def _pick_acc_norm(item: Item, ll, greedy) -> int:
    # lm-eval divides by len(choice): characters of the choice string, without the delimiter.
    return _argmax([x / max(1, len(c)) for x, c in zip(ll, item.choices, strict=True)])


def _pick_greedy(item: Item, ll, greedy) -> int:
    return 0 if greedy[0] else -1  # -1: the greedy continuation is not the target


CHOOSERS: dict[tuple[str, str], Callable] = {
    ("multiple_choice", "acc"): _pick_acc,
    ("multiple_choice", "acc_norm"): _pick_acc_norm,
    ("greedy_continuation", "acc"): _pick_greedy,
}


# -- keys and storage -------------------------------------------------------------------------------------------
def base_key(runner, model: str, ts: TaskSet) -> str:
    """The original model's scores: model identity, device type and dtype (as `load_model` would choose them,
    without loading), the task set and the scoring code."""
    dev, dtype = models.resolve_device(runner.device)
    payload = [model_identity(model), dev.type, str(dtype), ts.key, TASK_CODE_VERSION]
    return "base-" + hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:27]


def _frame(scores: ItemScores, ts: TaskSet) -> pd.DataFrame:
    rows = [
        (str(it.index), f"{name}{j}", float(v))
        for it, lls, gs in zip(ts.items, scores.loglik, scores.greedy, strict=True)
        for j in range(len(lls))
        for name, v in (("ll", lls[j]), ("greedy", gs[j]))
    ]
    return pd.DataFrame(rows, columns=["item", "metric", "value"])


def _from_frame(df: pd.DataFrame, ts: TaskSet) -> ItemScores | None:
    """Scores back from stored rows; None unless every request of every item is there (else recompute)."""
    expected = sum(2 * len(it.requests) for it in ts.items)
    if len(df) != expected:
        return None
    values = {(r.item, r.metric): r.value for r in df.itertuples()}
    try:
        lls = tuple(
            tuple(values[(str(it.index), f"ll{j}")] for j in range(len(it.requests))) for it in ts.items
        )
        gs = tuple(
            tuple(bool(values[(str(it.index), f"greedy{j}")]) for j in range(len(it.requests)))
            for it in ts.items
        )
    except KeyError:
        return None
    return ItemScores(lls, gs)


def score_taskset(
    model,
    tokenizer,
    ts: TaskSet,
    *,
    modified=None,
    max_length: int | None = None,
    reuse_prefix: bool = True,
    progress: Progress | None = None,
    cancelled=None,
) -> tuple[ItemScores, int]:
    """(per-item scores, decoder passes) of `model` on `ts`; `modified` (a ModifiedModel) adds its logit
    transforms (decoding changes)."""
    requests = [r for it in ts.items for r in it.requests]
    try:
        encoded = encode_requests(tokenizer, requests, max_length)
    except ValueError as exc:
        from ..errors import TaskError

        raise TaskError(f"task {ts.entry.name!r}: {exc}") from exc
    transform = modified.transform_logits if modified is not None and modified.logit_transforms else None
    scored = score(
        model,
        encoded,
        transform=transform,
        needs_context=bool(modified is not None and modified.needs_context),
        reuse_prefix=reuse_prefix,
        progress=progress,
        cancelled=cancelled,
    )
    lls, gs, pos = [], [], 0
    for it in ts.items:
        k = len(it.requests)
        lls.append(tuple(scored.loglik[pos : pos + k]))
        gs.append(tuple(scored.greedy[pos : pos + k]))
        pos += k
    return ItemScores(tuple(lls), tuple(gs)), scored.forward_calls


# -- the report ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricStats:
    metric: str
    table: PairedTable
    base_ci: tuple[float, float]
    modified_ci: tuple[float, float]
    difference_ci: tuple[float, float]
    mcnemar_p: float

    @property
    def base(self) -> float:
        return self.table.base_accuracy

    @property
    def modified(self) -> float:
        return self.table.modified_accuracy

    @property
    def difference(self) -> float:
        return self.table.difference

    @property
    def right_to_wrong(self) -> int:
        return self.table.b

    @property
    def wrong_to_right(self) -> int:
        return self.table.c

    @classmethod
    def of(cls, metric: str, base_ok, mod_ok) -> MetricStats:
        t = PairedTable.from_flags(base_ok, mod_ok)
        return cls(
            metric,
            t,
            wilson(t.a + t.b, t.n),
            wilson(t.a + t.c, t.n),
            paired_difference_ci(t),
            mcnemar_exact(t.b, t.c),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": _finite(self.base),
            "base_ci": [_finite(x) for x in self.base_ci],
            "modified": _finite(self.modified),
            "modified_ci": [_finite(x) for x in self.modified_ci],
            "difference": _finite(self.difference),
            "difference_ci": [_finite(x) for x in self.difference_ci],
            "right_to_wrong": self.right_to_wrong,
            "wrong_to_right": self.wrong_to_right,
            "both_right": self.table.a,
            "both_wrong": self.table.d,
            "mcnemar_p": _finite(self.mcnemar_p),
        }


def _finite(x):
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class TaskReport:
    entry: TaskEntry
    subset: Subset
    n_items: int
    total_items: int
    metrics: dict[str, MetricStats]
    answer_kl_mean: float | None  # multiple choice only
    answer_top1_agreement: float | None
    changed_answers: int | None
    ppl_base: float | None  # greedy-continuation tasks: perplexity of the target words
    ppl_modified: float | None
    groups: pd.DataFrame  # category, metric, n, base, modified, difference, right_to_wrong, wrong_to_right
    items: pd.DataFrame  # per item (see `compare`)
    cached: bool = False
    wall_s: float = 0.0
    base_cached: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def primary(self) -> MetricStats:
        return self.metrics[self.entry.metrics[0]]

    def to_json_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "task": e.name,
            "title": e.display_title,
            "n_items": self.n_items,
            "total_items": self.total_items,
            "subset": self.subset.to_dict(),
            "split": e.split,
            "prompt_version": e.prompt_version,
            "licence": e.licence,
            "citation": e.citation,
            "primary_metric": e.metrics[0],
            "metrics": {m: s.to_dict() for m, s in self.metrics.items()},
            "answer_kl_mean": _finite(self.answer_kl_mean),
            "answer_top1_agreement": _finite(self.answer_top1_agreement),
            "changed_answers": self.changed_answers,
            "ppl_base": _finite(self.ppl_base),
            "ppl_modified": _finite(self.ppl_modified),
            "groups": {
                cat: {r.metric: {k: _finite(getattr(r, k)) for k in ("n", "base", "modified", "difference")}
                      | {"right_to_wrong": int(r.right_to_wrong), "wrong_to_right": int(r.wrong_to_right)}
                      for r in rows.itertuples()}
                for cat, rows in self.groups.groupby("category", sort=False)
            } if not self.groups.empty else {},
            "cached": self.cached,
        }  # fmt: skip

    def rows(self) -> list[tuple[str, str, float]]:
        """Summary rows (item, metric, value) stored with the run (analysis `task:<name>`)."""
        out: list[tuple[str, str, float]] = [
            ("all", "n_items", self.n_items),
            ("all", "total_items", self.total_items),
            ("all", "subset_n", self.subset.limit if self.subset.limit is not None else -1),
            ("all", "subset_seed", self.subset.seed if self.subset.seed is not None else -1),
        ]
        for m, s in self.metrics.items():
            d = s.to_dict()
            for k in ("base", "modified", "difference", "mcnemar_p", "right_to_wrong", "wrong_to_right"):
                out.append(("all", f"{m}.{k}", d[k] if d[k] is not None else math.nan))
            for k in ("base_ci", "modified_ci", "difference_ci"):
                lo, hi = d[k]
                out.append(("all", f"{m}.{k}_lo", math.nan if lo is None else lo))
                out.append(("all", f"{m}.{k}_hi", math.nan if hi is None else hi))
        for k in ("answer_kl_mean", "answer_top1_agreement", "changed_answers", "ppl_base", "ppl_modified"):
            v = getattr(self, k)
            if v is not None:
                out.append(("all", k, float(v)))
        for r in self.groups.itertuples():
            for k in ("n", "base", "modified", "difference", "right_to_wrong", "wrong_to_right"):
                out.append((r.category, f"{r.metric}.{k}", float(getattr(r, k))))
        return out

    def flips(self) -> pd.DataFrame:
        """The items whose correctness changed on the primary metric, right->wrong first."""
        df = self.items[self.items.flip != ""]
        return df.sort_values(["flip", "item"], ascending=[False, True], ignore_index=True)

    def flipped(self, direction: str) -> pd.DataFrame:
        """The items of one direction ("right→wrong", "wrong→right"), or with "every changed answer" every item
        whose chosen answer differs between the models (right or wrong), whatever its correctness did."""
        if direction != "every changed answer":
            flips = self.flips()
            return flips[flips.flip == direction]
        a, b = "original_choice", "modified_choice"
        return self.items[self.items[a] != self.items[b]] if a in self.items else self.flips()


def compare(ts: TaskSet, base: ItemScores, mod: ItemScores) -> TaskReport:
    """The paired report of two models' scores on `ts` (pure: no model, no store)."""
    e = ts.entry
    n = len(ts.items)
    picks = {
        m: (
            [
                CHOOSERS[(e.kind, m)](it, ll, g)
                for it, ll, g in zip(ts.items, base.loglik, base.greedy, strict=True)
            ],
            [
                CHOOSERS[(e.kind, m)](it, ll, g)
                for it, ll, g in zip(ts.items, mod.loglik, mod.greedy, strict=True)
            ],
        )
        for m in e.metrics
    }
    gold = [it.answer for it in ts.items]
    ok = {m: ([p == a for p, a in zip(b, gold, strict=True)], [p == a for p, a in zip(q, gold, strict=True)])
          for m, (b, q) in picks.items()}  # fmt: skip
    metrics = {m: MetricStats.of(m, *ok[m]) for m in e.metrics}
    kl = top1 = changed = ppl_b = ppl_m = None
    if e.kind == "multiple_choice":
        kls = [answer_kl(b, q) for b, q in zip(base.loglik, mod.loglik, strict=True)]
        kl = sum(kls) / n
        agree = [_argmax(b) == _argmax(q) for b, q in zip(base.loglik, mod.loglik, strict=True)]
        top1 = sum(agree) / n
        b_pick, m_pick = picks[e.metrics[0]]
        changed = sum(1 for x, y in zip(b_pick, m_pick, strict=True) if x != y)
    else:
        ppl_b = math.exp(-sum(ll[0] for ll in base.loglik) / n)
        ppl_m = math.exp(-sum(ll[0] for ll in mod.loglik) / n)
    # Per category (and the subject under it) of grouped tasks.
    group_rows = []
    cats = [ts.category(it) or it.group for it in ts.items]
    if e.group is not None:
        for cat in dict.fromkeys(sorted(c for c in cats if c is not None)):
            idx = [i for i, c in enumerate(cats) if c == cat]
            for m in e.metrics:
                t = PairedTable.from_flags([ok[m][0][i] for i in idx], [ok[m][1][i] for i in idx])
                group_rows.append(
                    {"category": cat, "metric": m, "n": t.n, "base": t.base_accuracy,
                     "modified": t.modified_accuracy, "difference": t.difference,
                     "right_to_wrong": t.b, "wrong_to_right": t.c}
                )  # fmt: skip
    groups = pd.DataFrame(
        group_rows,
        columns=[
            "category",
            "metric",
            "n",
            "base",
            "modified",
            "difference",
            "right_to_wrong",
            "wrong_to_right",
        ],
    )
    m0 = e.metrics[0]
    b_ok, m_ok = ok[m0]
    b_pick, m_pick = picks[m0]
    records = []
    for i, it in enumerate(ts.items):
        pb, pm = softmax(base.loglik[i]), softmax(mod.loglik[i])
        flip = (
            "right→wrong" if b_ok[i] and not m_ok[i] else ("wrong→right" if m_ok[i] and not b_ok[i] else "")
        )
        if e.kind == "multiple_choice":
            bc, mc = b_pick[i], m_pick[i]
            rec = {
                "gold": it.choices[it.answer],
                "original_choice": it.choices[bc],
                "original_prob": pb[bc],
                "modified_choice": it.choices[mc],
                "modified_prob": pm[mc],
                "gold_prob_original": pb[it.answer],
                "gold_prob_modified": pm[it.answer],
            }
        else:
            rec = {
                "gold": it.requests[0][1],
                "original_greedy": bool(base.greedy[i][0]),
                "modified_greedy": bool(mod.greedy[i][0]),
                "original_loglik": base.loglik[i][0],
                "modified_loglik": mod.loglik[i][0],
            }
        records.append(
            {"item": it.index, "group": it.group, "context": it.context, **rec,
             "original_correct": b_ok[i], "modified_correct": m_ok[i], "flip": flip}
        )  # fmt: skip
    return TaskReport(
        entry=e,
        subset=ts.subset,
        n_items=n,
        total_items=ts.total,
        metrics=metrics,
        answer_kl_mean=kl,
        answer_top1_agreement=top1,
        changed_answers=changed,
        ppl_base=ppl_b,
        ppl_modified=ppl_m,
        groups=groups,
        items=pd.DataFrame(records),
    )


# -- paired evaluation through the runner and the store ------------------------------------------------------------
def _max_length(runner, model: str) -> int | None:
    return runner.facts(model).positions


def lookup_task(runner, spec, entry: TaskEntry, subset: Subset = ALL_ITEMS) -> TaskReport | None:
    """The report of `spec` on `entry` from stored scores, or None. Loads no model."""
    ts = task_set(entry, subset)
    run_key, _ = runner.cache_key(spec)
    analysis = SCORES_PREFIX + ts.key
    base = _from_frame(runner.store.analysis(base_key(runner, spec.model, ts), analysis), ts)
    mod = _from_frame(runner.store.analysis(run_key, analysis), ts) if base is not None else None
    if base is None or mod is None:
        return None
    report = compare(ts, base, mod)
    report.cached = True
    return report


def evaluate_task(
    runner,
    spec,
    entry: TaskEntry,
    subset: Subset = ALL_ITEMS,
    *,
    progress: Progress | None = None,
    cancelled=None,
) -> TaskReport:
    """`spec`'s modified model against the original on `entry`'s items in `subset` (module docstring)."""
    started = time.perf_counter()
    ts = task_set(entry, subset)
    run_key, _ = runner.cache_key(spec)
    analysis = SCORES_PREFIX + ts.key
    bkey = base_key(runner, spec.model, ts)
    store = runner.store
    base = _from_frame(store.analysis(bkey, analysis), ts)
    mod = _from_frame(store.analysis(run_key, analysis), ts)
    base_cached, cached = base is not None, base is not None and mod is not None
    loaded = None
    if base is None:
        loaded = runner.base(spec.model)
        log.info(
            "%s: scoring %d items with the original model (stored for every later spec)",
            entry.name,
            len(ts.items),
        )
        sub = (lambda f, msg: progress(0.5 * f, f"{entry.name}, original: {msg}")) if progress else None
        base, _ = score_taskset(
            loaded.model, loaded.tokenizer, ts, max_length=_max_length(runner, spec.model), progress=sub,
            cancelled=cancelled,
        )  # fmt: skip
        store.save_analysis_frame(bkey, analysis, _frame(base, ts))
    if mod is None:
        loaded = loaded or runner.base(spec.model)
        modified = runner.modify(spec)
        log.info("%s: scoring %d items with %s", entry.name, len(ts.items), spec.label())
        sub = (lambda f, msg: progress(0.5 + 0.5 * f, f"{entry.name}, modified: {msg}")) if progress else None
        mod, _ = score_taskset(
            modified.model, loaded.tokenizer, ts, modified=modified, max_length=_max_length(runner, spec.model),
            progress=sub, cancelled=cancelled,
        )  # fmt: skip
        store.save_analysis_frame(run_key, analysis, _frame(mod, ts))
    report = compare(ts, base, mod)
    report.cached, report.base_cached = cached, base_cached
    report.wall_s = time.perf_counter() - started
    store.save_analysis(run_key, SUMMARY_PREFIX + entry.name, report.rows())
    return report


def evaluate_tasks(
    runner, spec, entries, subset: Subset = ALL_ITEMS, *, progress: Progress | None = None, cancelled=None
) -> list[TaskReport]:
    reports = []
    for i, entry in enumerate(entries):
        sub = (
            (lambda f, msg, i=i: progress((i + f) / len(entries), msg)) if progress else None
        )  # fmt: skip
        reports.append(evaluate_task(runner, spec, entry, subset, progress=sub, cancelled=cancelled))
    return reports


def stored_summaries(store, run_keys) -> pd.DataFrame:
    """Stored task summaries of runs: run_key, task, item (all / category), metric, value."""
    df = store.analysis_rows(run_keys, SUMMARY_PREFIX)
    if df.empty:
        return pd.DataFrame(columns=["run_key", "task", "item", "metric", "value"])
    df = df.assign(task=df.analysis.str.slice(len(SUMMARY_PREFIX)))
    return df[["run_key", "task", "item", "metric", "value"]]


def recovered_accuracy(before: list[TaskReport] | None, after: list[TaskReport]) -> dict[str, dict[str, Any]]:
    """Per task, on its primary metric: the accuracy drop (original - model) before and after a remedy, the
    recovered share (drop_before - drop_after) / drop_before (None when nothing was lost), and both flip counts."""
    by_name = {r.entry.name: r for r in before or []}
    out = {}
    for a in after:
        b = by_name.get(a.entry.name)
        if b is None:
            continue
        drop_b, drop_a = -b.primary.difference, -a.primary.difference
        out[a.entry.name] = {
            "metric": a.entry.metrics[0],
            "drop_before": drop_b,
            "drop_after": drop_a,
            "recovered": (drop_b - drop_a) / drop_b if drop_b > 0 else None,
            "flips_before": b.primary.right_to_wrong + b.primary.wrong_to_right,
            "flips_after": a.primary.right_to_wrong + a.primary.wrong_to_right,
        }
    return out


def task_thresholds(values, reports_per_point, direction: str) -> dict[str, dict[str, Any]]:
    """Accuracy-drop thresholds of a sweep, per task on its primary metric, in order of growing damage: the first
    setting whose paired difference interval lies wholly below 0 (a drop the items show at 95 %), and the first
    whose accuracy fell by more than 5 points. `reports_per_point`: each point's reports (aligned with values)."""
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=direction == "descending")
    names = dict.fromkeys(r.entry.name for reps in reports_per_point if reps for r in reps)
    out = {}
    for name in names:
        points = []
        for i in order:
            rep = next((r for r in reports_per_point[i] or [] if r.entry.name == name), None)
            if rep is not None:
                s = rep.primary
                points.append({"value": values[i], "base": s.base, "modified": s.modified, "difference": s.difference,
                               "difference_hi": s.difference_ci[1], "flips": s.right_to_wrong + s.wrong_to_right})  # fmt: skip
        significant = next((p["value"] for p in points if p["difference_hi"] < 0), None)
        five = next((p["value"] for p in points if p["difference"] < -0.05), None)
        out[name] = {"points": points, "first_significant_drop": significant, "first_drop_over_5pt": five}
    return out
