"""The Attention page's pieces: the layer × head heatmap whose clicked cell the layer / head pickers keep, and the
attention maps of that cell for a prompt (original, modified, difference)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.metric_names import label
from hemorrhage_core.runner import RunResult

from . import analyses
from .live import progress_bar
from .runs import export_caption
from .state import runner
from .widgets import chart, show_error, table

LAYER_KEY, HEAD_KEY = "attention.layer", "attention.head"
HEATMAP = "attention-heatmap"  # the chart's name; widgets.chart keys it "chart-<name>"
METRICS = ("attn_js", "attn_entropy_shift", "attn_sink", "attn_sink_base", "attn_topk_overlap")


def cell_clicked() -> None:
    """on_select of the heatmap: the clicked cell (its customdata) becomes the pickers' value. An empty selection
    (plotly clears it when the figure is redrawn with the new outline) leaves the chosen cell as it is."""
    event = st.session_state.get(f"chart-{HEATMAP}")
    points = list(event.selection.points) if event and event.selection else []
    cell = next((c for p in points if (c := charts.clicked_cell(p)) is not None), None)
    if cell is not None:
        st.session_state[LAYER_KEY], st.session_state[HEAD_KEY] = cell


def keep_cell_in(layers: list[int], heads_: list[int], heads: pd.DataFrame) -> None:
    """Start the pickers on the most disrupted cell (largest JS divergence), and move them there when the chosen
    cell does not exist in this run (another run picked, with fewer layers or heads)."""
    if st.session_state.get(LAYER_KEY) in layers and st.session_state.get(HEAD_KEY) in heads_:
        return
    js = heads[heads.metric == "attn_js"]
    if js.empty or not js.value.notna().any():
        st.session_state[LAYER_KEY], st.session_state[HEAD_KEY] = layers[0], heads_[0]
        return
    top = js.loc[js.value.idxmax()]
    st.session_state[LAYER_KEY], st.session_state[HEAD_KEY] = int(top.layer), int(top["head"])


def heatmap_section(result: RunResult) -> tuple[int, int]:
    """Metric choice, the heatmap with the inspected cell outlined, and the layer / head pickers; returns the cell.

    The heatmap is drawn above the pickers but after them in the script, so the picked cell can be outlined; a
    click sets the pickers (on_select callback, before the script reruns) and they keep it until the next click,
    whatever else reruns the page (Show the maps, another metric).
    """
    heads = result.heads
    labels = {m: label(m) for m in METRICS}
    metric = st.radio(
        "Metric",
        [m for m in labels if m in set(heads.metric)],
        format_func=labels.get,
        horizontal=True,
        key="attention.metric",
    )
    layers = sorted(heads.layer.unique().tolist())
    n_heads = sorted(heads["head"].unique().tolist())
    keep_cell_in(layers, n_heads, heads)
    slot = st.container()
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key=LAYER_KEY)
    head = c2.selectbox("Head", n_heads, key=HEAD_KEY)
    with slot:
        chart(
            charts.attention_heatmap(
                heads,
                metric,
                title=f"{labels[metric]} per layer and head — {result.spec.label()}",
                clickable=True,
                highlight=(layer, head),
            ),
            HEATMAP,
            on_select=cell_clicked,
            caption=export_caption(result.spec, result.settings, result.metrics),
        )
    cell = heads[(heads.layer == layer) & (heads["head"] == head)].set_index("metric").value
    st.caption(" · ".join(f"{labels.get(m, m)} {v:.4g}" for m, v in cell.items()))
    return int(layer), int(head)


def maps_section(result: RunResult, layer: int, head: int) -> None:
    """The original, modified and difference maps of one head for a prompt (on Show the maps)."""
    st.subheader(f"Attention maps — layer {layer}, head {head}")
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
        return
    try:
        with progress_bar("Building the modified model and running both on the prompt") as report:
            # One layer's heads at a time: switching heads is then instant, switching layers recomputes.
            view = analyses.attention_view(
                runner(), result.spec.to_json(), prompt, layer, None, max_tokens, progress=report
            )
    except Exception as exc:
        show_error(exc, "The attention maps")
        return
    base = view.base[head]
    modified = view.modified[head] if view.modified is not None else None
    if modified is None or not (modified == modified).any():  # a removed block or head: NaN maps
        st.info(
            f"Layer {layer}, head {head} does not exist in the modified model: only the original map is shown."
        )
        modified = base * float("nan")
    chart(
        charts.attention_maps_chart(base, modified, view.tokens, layer=layer, head=head),
        "attention-maps",
        caption=export_caption(result.spec, result.settings, result.metrics) + f" · prompt: {prompt[:80]}",
    )
    with st.expander("Every head of this layer on the prompt"):
        table(view.heads, "attention-prompt-heads")
