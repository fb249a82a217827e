"""Sweeps & thresholds: run or load a sweep over one knob; the curve with the 1.1× / 2× / 10× thresholds and
the robust zone; several methods or models overlaid; quality against memory."""

import streamlit as st

from dashboard.fields import default_sweep_values, family_kinds, method_title, sweepable
from dashboard.forms import mod_form
from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.sweeps import memory_section, results_section, run_on_cluster
from dashboard.widgets import require_selection, run_with_progress
from hemorrhage_core.analysis import sweep_points as sweeps
from hemorrhage_core.analysis import views
from hemorrhage_core.errors import SpecError
from hemorrhage_core.executors import cluster_address
from hemorrhage_core.specs.families import FAMILIES

through_app()

st.title("Sweeps & thresholds")
st.caption(
    "One knob varied, everything else fixed, on the same tokens. The robust zone is every setting before the "
    "perplexity ratio first exceeds 1.1×; 2× and 10× mark serious damage and collapse."
)
sel = require_selection()

with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    families = [f for f in FAMILIES if family_kinds(f)]
    family = c1.selectbox("Family", families, format_func=lambda f: FAMILIES[f].title, key="sweep.family")
    kinds = family_kinds(family)
    kind = c2.selectbox(
        "Method", list(kinds), key="sweep.kind", format_func=lambda k: method_title(k, kinds[k])
    )
    fields = sweepable(kinds[kind])
    if not fields:
        st.info(f"{kind} has no numeric setting to sweep.")
        st.stop()
    field = c3.selectbox("Knob", fields, format_func=lambda f: f.label, key=f"sweep.{kind}.field")
    raw = st.text_input(
        "Values (comma-separated)",
        ", ".join(map(str, default_sweep_values(field))),
        key=f"sweep.{kind}.{field.name}.values",
    )
    with st.expander("Other settings of the method (held fixed)"):
        try:
            base = mod_form(kinds[kind], key=f"sweep.{kind}.fixed")
            specs = sweeps.sweep_specs(
                sel.model, sel.probe(), base, field.name, sweeps.parse_values(raw, field.py_type)
            )
        except SpecError as exc:
            st.error(f"Impossible sweep: {exc}")
            st.stop()
    go = st.button(
        f"Run the sweep ({len(specs)} points; stored points return at once)", type="primary", key="sweep.go"
    )

r = runner()
if go and (address := cluster_address()):
    run_on_cluster(specs, address)
elif go:
    st.caption("Changing any setting on this page stops the sweep after the point being measured.")
    for i, spec in enumerate(specs):
        st.caption(f"Point {i + 1} of {len(specs)}: {spec.label()}")
        if run_with_progress(spec, key=f"sweep-{i}") is None:
            break

history = views.history(r.store)
points = sweeps.sweep_points(history, kind, field.name, family=family)
if points.empty:
    st.info("No stored runs of this method yet: run the sweep above.")
    st.stop()
own = sweeps.series_for_keys(points, [r.cache_key(s)[0] for s in specs])
results_section(points, own, kind, field)
memory_section(sel)
