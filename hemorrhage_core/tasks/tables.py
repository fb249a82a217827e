"""Task results as one tidy summary frame, from fresh reports or from the rows stored with runs; what the
charts, the Tasks page and the report draw. One row per (run label, task, metric)."""

from __future__ import annotations

import math

import pandas as pd

from .evaluate import TaskReport, stored_summaries
from .registry import TASKS

COLUMNS = [
    "label", "task", "metric", "n_items", "base", "base_lo", "base_hi", "modified", "modified_lo", "modified_hi",
    "difference", "difference_lo", "difference_hi", "right_to_wrong", "wrong_to_right", "mcnemar_p",
    "answer_kl_mean", "answer_top1_agreement",
]  # fmt: skip


def summary_frame(reports: list[TaskReport], label: str) -> pd.DataFrame:
    rows = []
    for r in reports:
        for m, s in r.metrics.items():
            rows.append(
                {"label": label, "task": r.entry.name, "metric": m, "n_items": r.n_items,
                 "base": s.base, "base_lo": s.base_ci[0], "base_hi": s.base_ci[1],
                 "modified": s.modified, "modified_lo": s.modified_ci[0], "modified_hi": s.modified_ci[1],
                 "difference": s.difference, "difference_lo": s.difference_ci[0], "difference_hi": s.difference_ci[1],
                 "right_to_wrong": s.right_to_wrong, "wrong_to_right": s.wrong_to_right, "mcnemar_p": s.mcnemar_p,
                 "answer_kl_mean": r.answer_kl_mean, "answer_top1_agreement": r.answer_top1_agreement}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def stored_frame(store, labels: dict[str, str]) -> pd.DataFrame:
    """The summary frame of the task results stored with runs (`labels`: run key -> display label)."""
    df = stored_summaries(store, list(labels))
    df = df[df["item"] == "all"]
    rows = []
    for (run_key, task), g in df.groupby(["run_key", "task"], sort=False):
        v = dict(zip(g.metric, g.value, strict=True))
        entry = TASKS.get(task)
        metrics = entry.metrics if entry else sorted({k.split(".")[0] for k in v if "." in k})
        for m in metrics:
            if f"{m}.base" not in v:
                continue

            def get(key, m=m, v=v):
                x = v.get(f"{m}.{key}")
                return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

            rows.append(
                {"label": labels[run_key], "task": task, "metric": m, "n_items": int(v["n_items"]),
                 "base": get("base"), "base_lo": get("base_ci_lo"), "base_hi": get("base_ci_hi"),
                 "modified": get("modified"), "modified_lo": get("modified_ci_lo"),
                 "modified_hi": get("modified_ci_hi"), "difference": get("difference"),
                 "difference_lo": get("difference_ci_lo"), "difference_hi": get("difference_ci_hi"),
                 "right_to_wrong": int(get("right_to_wrong") or 0), "wrong_to_right": int(get("wrong_to_right") or 0),
                 "mcnemar_p": get("mcnemar_p"), "answer_kl_mean": v.get("answer_kl_mean"),
                 "answer_top1_agreement": v.get("answer_top1_agreement")}
            )  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def sources_text(task_names) -> list[str]:
    """One line per task: its data set, split, prompt, licence and citation (shown wherever its numbers are)."""
    out = []
    for name in dict.fromkeys(task_names):
        e = TASKS.get(name)
        if e is None:
            out.append(f"{name}: a user task (its entry file names its licence)")
        else:
            out.append(
                f"{e.display_title} ({e.split} split; {e.prompt_version}): licence {e.licence}. {e.citation}"
            )
    return out
