"""Tasks: benchmark accuracy of a stored run against the original, its intervals, and the answers that flipped."""

import streamlit as st

from dashboard import tasks
from dashboard.navigation import through_app
from dashboard.widgets import headline, run_picker, stored
from hemorrhage_core.tasks.tables import sources_text

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

names, subset, go = tasks.task_form()
reports = tasks.task_reports(result, names, subset, go)
if not reports:
    st.stop()
tasks.summary(reports, result)
for rep in reports:
    tasks.task_details(rep, expanded=len(reports) == 1)

st.divider()
st.caption("Data: " + " · ".join(sources_text(rep.entry.name for rep in reports)))
