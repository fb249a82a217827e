"""Profile: move the sliders, see where and how much the model bleeds against the original."""

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.spec import ProbeSettings, Prune, QuantizeRTN, RunSpec, Temperature
from hemorrhage_core.ui.widgets import chart, run_with_progress

sel = st.session_state["selection"]
st.title("Hemorrhage profile")

q, p, d = st.columns(3)
with q:
    st.subheader("Quantize (RTN)")
    bits = st.select_slider("Weight bits", ["off", 8, 6, 5, 4, 3, 2], value=4, key="quant_bits")
    granularity = st.radio("Scales", ["channel", "group", "tensor"], horizontal=True, key="quant_granularity")
    group_size = st.select_slider("Group size", [32, 64, 128, 256], value=128, key="group_size",
                                  disabled=granularity != "group")  # fmt: skip
    scheme = st.radio("Grid", ["sym", "asym"], horizontal=True, key="quant_scheme")
with p:
    st.subheader("Prune (magnitude)")
    sparsity = st.slider("Sparsity", 0.0, 0.9, 0.0, 0.05, key="prune_sparsity", help="0 = no pruning")
    scope = st.radio("Per", ["row", "tensor"], horizontal=True, key="prune_scope")
with d:
    st.subheader("Decode")
    temperature = st.slider("Temperature", 0.1, 3.0, 1.0, 0.05, key="temperature", help="1 = reference setting")

if not sel.model or not sel.corpus:
    st.info("Choose a model and a corpus in the sidebar.")
    st.stop()

try:
    mods = []
    if sparsity > 0:
        mods.append(Prune(sparsity=sparsity, scope=scope))
    if bits != "off":
        mods.append(QuantizeRTN(bits=int(bits), scheme=scheme, granularity=granularity, group_size=int(group_size)))
    if temperature != 1.0:
        mods.append(Temperature(value=temperature))
    spec = RunSpec(model=sel.model, mods=tuple(mods), probe=ProbeSettings(corpus=sel.corpus, tokens=sel.tokens))
except HemlabError as exc:
    st.error(str(exc))
    st.stop()

result = run_with_progress(spec)
if result is None:
    st.stop()

m = result.metrics
st.caption(
    f"**{spec.label()}** on `{result.settings['corpus']}` (sha256 {result.settings['corpus_sha256'][:12]}…), "
    f"window {result.settings['window']}, stride {result.settings['stride']}, "
    f"{int(m['evaluated_tokens'])} predicted tokens{' · from the store' if result.cached else ''}"
)
cols = st.columns(5)
cols[0].metric("Perplexity", f"{m['ppl']:.2f}", f"{m['ppl'] - m['ppl_base']:+.2f} vs {m['ppl_base']:.2f}", delta_color="inverse")
cols[1].metric("Perplexity ratio", f"×{m['ppl_ratio']:.3f}")
cols[2].metric("KL mean / p99 (nats)", f"{m['kl_mean']:.4f}", f"p99 {m['kl_p99']:.4f}", delta_color="off")
cols[3].metric("Top-1 agreement", f"{m['top1_agreement']:.1%}")
if "bits_per_weight" in m:
    cols[4].metric("Bits per weight", f"{m['bits_per_weight']:.2f}")
elif "achieved_sparsity" in m:
    cols[4].metric("Achieved sparsity", f"{m['achieved_sparsity']:.1%}")

left, right = st.columns(2)
with left:
    chart(charts.layer_loss_chart(result.layers), "layer_loss")
with right:
    chart(charts.attention_heatmap(result.heads), "attention_disruption")
left, right = st.columns(2)
with left:
    chart(charts.kl_distribution_chart(result.kl_hist, m), "kl_distribution")
with right:
    chart(charts.perplexity_chart(m), "perplexity")
