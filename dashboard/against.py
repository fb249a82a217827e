"""The Model page's "bring your own checkpoint" section: profile an existing copy of the selected model (a community
quantization, a pruned or fine-tuned copy, a GGUF file) against it, with the same headline numbers and charts as
the family pages. The run is an ordinary stored run (kind `checkpoint`), listed on Compare & history.
"""

from __future__ import annotations

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.identity import against_spec
from hemorrhage_core.specs import RunSpec

from .state import Selection, allowed_dirs, model_problem, runner
from .widgets import chart, headline, run_with_progress


def against_section(sel: Selection) -> None:
    """Input, Measure button and the profile of `sel.model` against the checkpoint typed in."""
    st.subheader("Measure an existing checkpoint against this model")
    st.caption(
        "A folder (config.json + safetensors), a .gguf file or a hub id with the same tokenizer: a community "
        "quantization, a pruned or fine-tuned copy. Its next-token distributions, residual stream and attention "
        "are compared with this model's on the selected corpus (llama.cpp's --kl-divergence, for any "
        "checkpoint). A GGUF file is dequantized on every load (seconds)."
    )
    source = st.text_input(
        "Checkpoint folder, .gguf file or hub id",
        key="model.against",
        placeholder="/path/inside/an/allowed/folder/model-Q4_K_M.gguf",
        help="Paths must lie inside: " + ", ".join(map(str, allowed_dirs())),
    ).strip()
    if not source:
        return
    issue = model_problem(source)
    if issue:
        st.error(issue)
        return
    try:
        spec = RunSpec(model=sel.model, mods=(against_spec(source),), probe=sel.probe())
    except HemlabError as exc:
        st.error(str(exc))
        return
    # Loading a second model and profiling it takes a while: measure on request, but show a stored run at once.
    stored = runner().lookup(spec) is not None
    if not stored and not st.button("Measure the checkpoint", type="primary", key="model.against.measure"):
        return
    result = run_with_progress(spec, key="against-run")
    if result is None:
        return
    headline(result)
    if result.metrics.get("layers_compared") == 0:
        st.info(
            "The checkpoint's blocks cannot be paired with this model's (another depth or width): per-layer "
            "residual errors, logit lens and attention are left out."
        )
    left, right = st.columns(2)
    with left:
        chart(charts.layer_loss_chart(result.layers), "against-layer-loss")
    with right:
        chart(charts.attention_heatmap(result.heads), "against-attention")
    left, right = st.columns(2)
    with left:
        chart(charts.kl_distribution_chart(result.kl_hist, result.metrics), "against-kl")
    with right:
        chart(charts.perplexity_chart(result.metrics), "against-perplexity")
