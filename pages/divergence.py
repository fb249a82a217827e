"""Divergence: how the modified model's predictions differ: KL distribution, Δp, top-1 agreement, generations."""

import streamlit as st

from dashboard import analyses, render
from dashboard.live import progress_bar
from dashboard.navigation import through_app
from dashboard.state import runner
from dashboard.widgets import chart, headline, pending, run_picker, show_error, stored, table
from hemorrhage_core import charts, corpora
from hemorrhage_core.analysis import views

through_app()


st.title("Divergence: what the model now predicts")
st.caption(
    "Per position of the evaluation windows: KL(original ‖ modified) of the next-token distribution, the change "
    "Δp of the probability given to the true next token, and whether the most likely token is still the same."
)
store = runner().store
keys = run_picker("Runs", "divergence.runs", multi=True)
if not keys:
    st.stop()
result = stored(keys[0])
if result is None:
    st.stop()
headline(result)
left, right = st.columns(2)
with left:
    chart(
        charts.kl_distribution_chart(
            result.kl_hist, result.metrics, title=f"Per-token KL — {result.spec.label()}"
        ),
        "divergence-kl-hist",
    )
with right:
    chart(charts.kl_cdf_chart(views.kl_hist_rows(store, keys)), "divergence-kl-cdf")

compared = views.compared_runs(store, keys)
# Shown: what tells the runs apart (it fits the page; a sampler's reverse KL and mass cut where measured); the
# download has the full quantile set.
SHOWN = ["label", "ppl_ratio", "kl_mean", "kl_p99", "kl_reverse_mean", "mass_cut_mean", "top1_agreement",
         "top5_overlap", "dp_rms"]  # fmt: skip
FULL = ["label", "model", "corpus", "ppl_ratio", "kl_mean", "kl_median", "kl_p90", "kl_p99", "kl_max",
        "kl_reverse_mean", "mass_cut_mean", "top1_agreement", "top5_overlap", "dp_mean", "dp_rms"]  # fmt: skip
cols = [c for c in SHOWN if c in compared.columns and compared[c].notna().any()]
chart(
    charts.metric_bars_chart(compared, ("top1_agreement", "top5_overlap", "dp_rms")), "divergence-agreement"
)
table(compared[cols], "divergence-metrics", export=compared[[c for c in FULL if c in compared.columns]])

st.subheader("Generations, side by side")
st.caption(
    f"The original model (temperature 1, no truncation) and **{result.spec.label()}** continue the same prompt. "
    "Sampled mode draws the same random numbers for both (Gumbel-max coupling), so they differ only where the "
    "modification changes which token wins. Every step is scored teacher-forced along the original's tokens."
)
with st.form("divergence.generate"):
    prompt = st.text_area("Prompt", "The capital of France is", key="divergence.prompt")
    c1, c2, c3 = st.columns(3)
    mode = c1.radio("Decoding", ["greedy", "sampled"], horizontal=True, key="divergence.mode")
    seed = int(c2.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="divergence.seed"))
    n = int(c3.slider("New tokens", 4, 128, 32, 4, key="divergence.tokens"))
    submitted = st.form_submit_button("Generate", type="primary")
request = (result.run_key, prompt, seed, mode, n)
if submitted:
    st.session_state["divergence.request"] = request
if st.session_state.get("divergence.request") != request:
    st.info("Press Generate to compare the two continuations (it rebuilds the modified model).")
else:
    try:
        with progress_bar(f"Building {result.spec.label()} and generating {n} tokens") as report:
            gen = analyses.generations(
                runner(),
                result.spec.to_json(),
                prompt,
                seed=seed,
                sample=mode == "sampled",
                n=n,
                progress=report,
            )
    except Exception as exc:
        show_error(exc, "Generation")
    else:
        st.html(
            render.side_by_side_html(
                prompt,
                gen.side.base_tokens,
                gen.side.mod_tokens,
                gen.side.first_divergence,
                result.spec.label(),
            )
        )
        chart(
            charts.step_kl_chart(gen.steps, title="Per-step KL along the original continuation"),
            "divergence-steps",
        )

st.subheader("Flips on a cloze set")
if pending("hemorrhage_core.analysis.flips", "Cloze flips (analysis.flips)"):
    st.caption(
        "Both models choose the held-out last word of corpus sentences among distractors of similar frequency. "
        "Accuracy can stay flat while answers flip in both directions (Dutta et al., 2024)."
    )
    with st.form("divergence.flips"):
        c1, c2 = st.columns(2)
        n_items = int(c1.slider("Items", 16, 256, 64, 16, key="divergence.flip_items"))
        corpora_ = ["the evaluation corpus", *corpora.CORPORA]
        cloze_corpus = c2.selectbox("Cloze text", corpora_, key="divergence.flip_corpus")
        flips_go = st.form_submit_button("Count the flips")
    flip_request = (result.run_key, n_items, cloze_corpus)
    if flips_go:
        st.session_state["divergence.flip_request"] = flip_request
    if st.session_state.get("divergence.flip_request") == flip_request:
        try:
            with progress_bar(f"Scoring {n_items} cloze items with both models") as on_progress:
                report = analyses.flip_report(
                    runner(),
                    result.spec.to_json(),
                    result.run_key,
                    n_items,
                    None if cloze_corpus == corpora_[0] else cloze_corpus,
                    progress=on_progress,
                )
        except Exception as exc:  # e.g. a text without enough sentences for a cloze set
            show_error(exc, "Building and scoring the cloze set")
            st.stop()
        cols = st.columns(4)
        cols[0].metric("Accuracy, original", f"{report.accuracy_base:.1%}")
        cols[1].metric(
            "Accuracy, modified",
            f"{report.accuracy_modified:.1%}",
            f"{report.accuracy_modified - report.accuracy_base:+.1%}",
            delta_arrow="off",
        )
        cols[2].metric(
            "Flips",
            f"{report.flips}",
            f"{report.flips_right_to_wrong} right→wrong · {report.flips_wrong_to_right} wrong→right",
            delta_color="off",
            delta_arrow="off",
        )
        cols[3].metric("Answers changed", f"{report.changed_choices} of {report.n_items}")
        changed = report.items[report.items.base_choice != report.items.modified_choice]
        table(changed, "divergence-flips", file_name="cloze-flips")
