"""Attention: the layer × head disruption heatmap; pick a cell to see the attention maps on a prompt."""

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.ui.navigation import through_app
from hemorrhage_core.ui.widgets import chart, pending, run_picker, stored

through_app()

st.title("Attention disruption")
st.caption(
    "Per layer and head, on the attention probe set: Jensen–Shannon divergence between the original and modified "
    "attention rows, the entropy shift, and the attention-sink mass. Click a cell (or pick it below) to inspect it."
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
    "attn_js": "JS divergence",
    "attn_entropy_shift": "entropy shift",
    "attn_sink": "sink mass (modified)",
    "attn_sink_base": "sink mass (original)",
    "attn_topk_overlap": "top-k attended overlap",
}
metric = st.radio(
    "Metric",
    [m for m in labels if m in set(heads.metric)],
    format_func=labels.get,
    horizontal=True,
    key="attention.metric",
)
event = chart(
    charts.attention_heatmap(
        heads, metric, title=f"{labels[metric]} per layer and head — {result.spec.label()}"
    ),
    "attention-heatmap",
    on_select="rerun",
)

layers = sorted(heads.layer.unique().tolist())
n_heads = sorted(heads["head"].unique().tolist())
picked = (event.selection.points if event and event.selection else []) or []
default_layer, default_head = layers[0], n_heads[0]
if picked:
    default_layer = int(str(picked[0]["y"]).lstrip("L"))
    default_head = int(str(picked[0]["x"]).lstrip("h"))
else:  # start on the most disrupted cell
    js = heads[heads.metric == "attn_js"]
    if not js.empty:
        top = js.loc[js.value.idxmax()]
        default_layer, default_head = int(top.layer), int(top["head"])
c1, c2 = st.columns(2)
layer = c1.selectbox(
    "Layer", layers, index=layers.index(default_layer), key=f"attention.layer.{default_layer}"
)
head = c2.selectbox("Head", n_heads, index=n_heads.index(default_head), key=f"attention.head.{default_head}")
cell = heads[(heads.layer == layer) & (heads["head"] == head)].set_index("metric").value
st.caption(" · ".join(f"{labels.get(m, m)} {v:.4g}" for m, v in cell.items()))

st.subheader(f"Attention maps — layer {layer}, head {head}")
prompt = st.text_area(
    "Prompt", "The capital of France is Paris, and the capital of Italy is", key="attention.prompt"
)
pending("hemorrhage_core.analysis.attention", "Attention maps for a prompt (original, modified, difference)")
