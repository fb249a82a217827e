"""Attention: the layer × head disruption heatmap; pick a cell to see the attention maps on a prompt."""

import streamlit as st

from dashboard import analyses
from dashboard.live import progress_bar
from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.widgets import chart, pending, run_picker, show_error, stored, table
from hemorrhage_core import charts
from hemorrhage_core.metric_names import label

through_app()

st.title("Attention disruption")
st.caption(
    "Per layer and head, on the attention probe set (the first 128 tokens of the first 4 evaluation windows, by "
    "default): Jensen–Shannon divergence between the original and modified attention rows, the entropy shift, and "
    "the attention-sink mass. Click a cell (or pick it below) to inspect it."
)
keys = run_picker("Run", "attention.run")
if not keys:
    st.stop()
result = stored(keys[0])
if result is None:
    st.stop()
heads = result.heads
if heads.empty:
    st.info(
        "This run has no per-head rows (its heads no longer correspond to the original's, e.g. after a "
        "structural change that altered the head count)."
    )
    st.stop()
labels = {
    m: label(m) for m in ("attn_js", "attn_entropy_shift", "attn_sink", "attn_sink_base", "attn_topk_overlap")
}
metric = st.radio(
    "Metric",
    [m for m in labels if m in set(heads.metric)],
    format_func=labels.get,
    horizontal=True,
    key="attention.metric",
)
# The heatmap is drawn above the layer / head pickers but after them in the script, so the picked cell can be
# outlined; a click on a cell (the previous interaction's selection) sets the pickers' defaults.
heatmap_slot = st.container()
previous = st.session_state.get("chart-attention-heatmap")
points = list(previous.selection.points) if previous and previous.selection else []
layers = sorted(heads.layer.unique().tolist())
n_heads = sorted(heads["head"].unique().tolist())
if points:
    default_layer, default_head = int(str(points[0]["y"]).lstrip("L")), int(str(points[0]["x"]).lstrip("h"))
else:  # start on the most disrupted cell
    js = heads[heads.metric == "attn_js"]
    top = js.loc[js.value.idxmax()] if not js.empty else None
    default_layer, default_head = (
        (int(top.layer), int(top["head"])) if top is not None else (layers[0], n_heads[0])
    )
c1, c2 = st.columns(2)
# Keyed by the default, so a click (a new default) resets the pickers to the clicked cell.
layer = c1.selectbox(
    "Layer", layers, index=layers.index(default_layer), key=f"attention.layer.{default_layer}"
)
head = c2.selectbox("Head", n_heads, index=n_heads.index(default_head), key=f"attention.head.{default_head}")
with heatmap_slot:
    chart(
        charts.attention_heatmap(
            heads,
            metric,
            title=f"{labels[metric]} per layer and head — {result.spec.label()}",
            clickable=True,
            highlight=(layer, head),
        ),
        "attention-heatmap",
        on_select="rerun",
    )
cell = heads[(heads.layer == layer) & (heads["head"] == head)].set_index("metric").value
st.caption(" · ".join(f"{labels.get(m, m)} {v:.4g}" for m, v in cell.items()))

st.subheader(f"Attention maps — layer {layer}, head {head}")
if pending(
    "hemorrhage_core.analysis.attention", "Attention maps for a prompt (original, modified, difference)"
):
    with st.form("attention.maps"):
        prompt = st.text_area(
            "Prompt", "The capital of France is Paris, and the capital of Italy is", key="attention.prompt"
        )
        max_tokens = st.slider(
            "Tokens shown (the prompt is cut after this many)", 8, 128, 48, 8, key="attention.len"
        )
        submitted = st.form_submit_button("Show the maps", type="primary")
    request = (result.run_key, prompt, max_tokens)
    if submitted:
        st.session_state["attention.request"] = request
    if st.session_state.get("attention.request") != request:
        st.info("Press *Show the maps* to run both models on the prompt (it rebuilds the modified model).")
        st.stop()
    try:
        with progress_bar("Building the modified model and running both on the prompt") as report:
            # One layer's heads at a time: switching heads is then instant, switching layers recomputes.
            view = analyses.attention_view(
                runner(), result.spec.to_json(), prompt, int(layer), None, max_tokens, progress=report
            )
    except Exception as exc:
        show_error(exc, "The attention maps")
        st.stop()
    base = view.base[int(head)]
    modified = view.modified[int(head)] if view.modified is not None else None
    if modified is None or not (modified == modified).any():  # a removed block or head: NaN maps
        st.info(
            f"Layer {layer}, head {head} does not exist in the modified model: only the original map is shown."
        )
        modified = base * float("nan")
    chart(charts.attention_maps_chart(base, modified, view.tokens, layer=layer, head=head), "attention-maps")
    with st.expander("Every head of this layer on the prompt"):
        table(view.heads, "attention-prompt-heads")
