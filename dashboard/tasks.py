"""The Tasks page's parts: the task form, the reports (stored ones at once, missing ones scored on Evaluate
under a progress bar), the accuracy summary and each task's flips."""

from __future__ import annotations

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.runner import RunResult
from hemorrhage_core.tasks.evaluate import TaskReport, evaluate_task, lookup_task
from hemorrhage_core.tasks.items import Subset
from hemorrhage_core.tasks.registry import TASKS
from hemorrhage_core.tasks.tables import sources_text, summary_frame

from .state import compute_lock, runner
from .widgets import chart, show_error, table

DIRECTIONS = ["right→wrong", "wrong→right", "every changed answer"]
INTERVALS = (
    "Intervals are 95 %: Wilson score intervals for each accuracy; for the difference (modified − original) "
    "Newcombe's hybrid score interval for paired proportions, which uses that both models answered the same items. "
    "McNemar's exact test asks whether the right→wrong and wrong→right flips are balanced. Answer KL and top-1: "
    "the two models' distributions over each item's choices (softmax of the choices' log-likelihoods)."
)


def task_form() -> tuple[list[str], Subset, bool]:
    """(task names, item subset, Evaluate pressed); stops the page with a message on a bad seed or no task."""
    with st.form("tasks.form"):
        c1, c2, c3 = st.columns([3, 1, 1])
        names = c1.multiselect(
            "Tasks",
            list(TASKS),
            default=["arc_easy", "hellaswag", "piqa"],
            format_func=lambda n: TASKS[n].display_title,
            key="tasks.names",
        )
        limit = int(
            c2.number_input(
                "Items per task",
                min_value=1,
                max_value=20000,
                value=50,
                help="the first N items (MMLU: of each of its 57 subjects, as lm-eval's --limit)",
                key="tasks.limit",
            )
        )
        seed_text = c3.text_input(
            "Sample seed",
            "",
            help="empty: the first N items; a number: a seeded stratified sample of N",
            key="tasks.seed",
        )
        go = st.form_submit_button("Evaluate", type="primary")
    try:
        subset = Subset(limit, int(seed_text) if seed_text.strip() else None)
    except ValueError:
        st.error(f"The sample seed must be a whole number, got {seed_text!r}.")
        st.stop()
    except Exception as exc:  # a TaskError from the subset's own checks
        show_error(exc, "The item subset")
        st.stop()
    if not names:
        st.info("Choose at least one task.")
        st.stop()
    return names, subset, go


def task_reports(result: RunResult, names: list[str], subset: Subset, go: bool) -> list[TaskReport]:
    """The stored reports of `names`; with `go`, the missing ones scored (the original's scores reused when
    stored). Says which are still missing; stops the page on an error."""
    r = runner()
    reports, missing = [], []
    for name in names:
        try:
            found = lookup_task(r, result.spec, TASKS[name], subset)
        except Exception as exc:
            show_error(exc, f"Reading {name}")
            st.stop()
        (reports if found is not None else missing).append(found or name)
    if missing and go:
        bar = st.progress(0.0, text="in the queue behind other computations of this app…")
        try:
            with compute_lock():
                for i, name in enumerate(missing):

                    def progress(f, msg, i=i):
                        bar.progress(min(1.0, (i + f) / len(missing)), text=msg)

                    reports.append(evaluate_task(r, result.spec, TASKS[name], subset, progress=progress))
        except Exception as exc:
            show_error(exc, "Scoring the tasks")
            st.stop()
        bar.empty()
        missing = []
    if missing:
        st.info(
            f"Not evaluated yet for this run and subset: {', '.join(TASKS[n].display_title for n in missing)}. "
            "Press **Evaluate** (the original model's scores are reused when stored)."
        )
    return sorted(reports, key=lambda rep: names.index(rep.entry.name))


def summary(reports: list[TaskReport], result: RunResult) -> None:
    frame = summary_frame(reports, result.spec.label())
    chart(charts.task_accuracy_chart(frame), "tasks-accuracy")
    shown = frame.drop(columns=["label"]).rename(
        columns={"base": "original", "base_lo": "original lo", "base_hi": "original hi"}
    )
    table(shown, "tasks-summary", file_name="task-accuracy")
    st.caption(INTERVALS)


def task_details(rep: TaskReport, expanded: bool) -> None:
    """One task's flip matrix, categories and flipped items, in an expander titled with its headline."""
    e, s = rep.entry, rep.primary
    with st.expander(
        f"{e.display_title}: {s.base:.1%} → {s.modified:.1%} ({s.difference:+.1%}), "
        f"{s.right_to_wrong} right→wrong, {s.wrong_to_right} wrong→right of {rep.n_items}",
        expanded=expanded,
    ):
        left, right = st.columns([1, 2])
        with left:
            t = s.table
            chart(
                charts.flip_matrix_chart(
                    t.a, t.b, t.c, t.d, title=f"Flips on {e.display_title} ({e.metrics[0]})"
                ),
                f"tasks-flips-{e.name}",
            )
            st.caption(f"McNemar exact p = {s.mcnemar_p:.3g}")
        with right:
            if not rep.groups.empty:
                st.markdown("**By category**")
                table(rep.groups, f"tasks-groups-{e.name}")
            direction = st.radio("Flipped items", DIRECTIONS, horizontal=True, key=f"tasks.dir.{e.name}")
            items = rep.flipped(direction)
            view = items.assign(context=items.context.str.slice(-300))
            table(view, f"tasks-items-{e.name}", file_name=f"{e.name}-flips", export=items)
        st.caption(
            " ".join(sources_text([e.name])) + f" Items: {rep.subset.describe()} of {rep.total_items:,}."
        )
