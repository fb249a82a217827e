"""Tasks: benchmark accuracy of a stored run against the original, its intervals, and the answers that flipped."""

import streamlit as st

from dashboard.navigation import through_app
from dashboard.state import compute_lock, runner
from dashboard.widgets import chart, headline, run_picker, show_error, stored, table
from hemorrhage_core import charts
from hemorrhage_core.tasks.evaluate import evaluate_task, lookup_task
from hemorrhage_core.tasks.items import Subset
from hemorrhage_core.tasks.registry import TASKS
from hemorrhage_core.tasks.tables import sources_text, summary_frame

through_app()

st.title("Tasks: accuracy on real benchmarks, and the answers that flipped")
st.caption(
    "Each item is scored by both models the way lm-evaluation-harness scores it (zero-shot, the log-likelihood of "
    "every choice after the prompt; LAMBADA: is the greedy last word right). Accuracy can hold while many answers "
    "flip both ways (Dutta et al., 2024, *Accuracy is Not All You Need*). The original's scores are computed once "
    "per model and task and stored; a modified run costs one pass of its own."
)
keys = run_picker("Run", "tasks.run")
if not keys:
    st.stop()
result = stored(keys[0])
if result is None:
    st.stop()
headline(result)

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
        f"Not evaluated yet for this run and subset: {', '.join(TASKS[n].display_title for n in missing)}. Press "
        "**Evaluate** (the original model's scores are reused when stored)."
    )
if not reports:
    st.stop()
reports.sort(key=lambda rep: names.index(rep.entry.name))

summary = summary_frame(reports, result.spec.label())
chart(charts.task_accuracy_chart(summary), "tasks-accuracy")
shown = summary.drop(columns=["label"]).rename(
    columns={"base": "original", "base_lo": "original lo", "base_hi": "original hi"}
)
table(shown, "tasks-summary", file_name="task-accuracy")
st.caption(
    "Intervals are 95 %: Wilson score intervals for each accuracy; for the difference (modified − original) "
    "Newcombe's hybrid score interval for paired proportions, which uses that both models answered the same items. "
    "McNemar's exact test asks whether the right→wrong and wrong→right flips are balanced. Answer KL and top-1: "
    "the two models' distributions over each item's choices (softmax of the choices' log-likelihoods)."
)

for rep in reports:
    e, s = rep.entry, rep.primary
    with st.expander(
        f"{e.display_title}: {s.base:.1%} → {s.modified:.1%} ({s.difference:+.1%}), "
        f"{s.right_to_wrong} right→wrong, {s.wrong_to_right} wrong→right of {rep.n_items}",
        expanded=len(reports) == 1,
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
            flips = rep.flips()
            direction = st.radio(
                "Flipped items",
                ["right→wrong", "wrong→right", "every changed answer"],
                horizontal=True,
                key=f"tasks.dir.{e.name}",
            )
            if direction == "every changed answer":
                cols = ("original_choice", "modified_choice")
                items = rep.items[rep.items[cols[0]] != rep.items[cols[1]]] if cols[0] in rep.items else flips
            else:
                items = flips[flips.flip == direction]
            view = items.assign(context=items.context.str.slice(-300))
            table(view, f"tasks-items-{e.name}", file_name=f"{e.name}-flips", export=items)
        st.caption(
            " ".join(sources_text([e.name])) + f" Items: {rep.subset.describe()} of {rep.total_items:,}."
        )

st.divider()
st.caption("Data: " + " · ".join(sources_text(rep.entry.name for rep in reports)))
