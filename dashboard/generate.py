"""Generation divergence on a page: the original and the modified model continue one prompt side by side, with
the first divergent token marked, how long they stay identical and the per-step divergence along the original's
continuation (hemorrhage_core/generation.py). Computed on click, under a progress bar; kept per request (memo.py).
Used by the Divergence page and, for decoding changes, by the Decode page.
"""

from __future__ import annotations

import math

import streamlit as st

from hemorrhage_core import charts
from hemorrhage_core.runner import RunResult

from . import analyses, render
from .live import progress_bar
from .state import runner
from .widgets import chart, show_error

MODES = ("greedy", "sampled")


def generation_summary(summary: dict[str, float], n: int) -> list[tuple[str, str, str]]:
    """(label, value, note) of the numbers under the two continuations: how long they stay identical and how far
    the modified distribution is from the original's along the original's tokens (∞ stated, not drawn)."""
    prefix = summary.get("gen_matching_prefix_mean", math.nan)
    kl, reverse = summary.get("gen_traj_kl_mean", math.nan), summary.get("gen_traj_kl_reverse_mean", math.nan)
    cut = summary.get("gen_traj_mass_cut_mean", math.nan)
    same = "identical throughout" if prefix >= n else f"first divergence at token {int(prefix) + 1}"
    return [
        ("Identical tokens", f"{int(prefix)} of {n}", same),
        (
            "KL per step (nats)",
            "∞" if math.isinf(kl) else f"{kl:.4f}",
            "the sampler gives 0 to tokens the original can emit"
            if math.isinf(kl)
            else "KL(original ‖ modified)",
        ),
        ("Reverse KL per step (nats)", f"{reverse:.4f}", "KL(modified ‖ original)"),
        ("Probability mass cut", f"{cut:.1%}", "the original's mass on tokens the sampler drops"),
    ]


def generation_panel(result: RunResult, key: str, *, mode: str = "greedy") -> None:
    """The form (prompt, greedy or sampled, seed, length), and on Generate the two continuations of `result`'s
    spec against the original with their divergence. `mode`: the default decoding (a temperature or truncation
    change leaves greedy decoding as it was, so the Decode page samples by default)."""
    label = result.spec.label()
    st.caption(
        f"The original model (temperature 1, no truncation) and **{label}** continue the same prompt. Sampled mode "
        "draws the same random numbers for both (Gumbel-max coupling), so they differ only where the "
        "modification changes which token wins. Every step is scored teacher-forced along the original's tokens."
    )
    with st.form(f"{key}.generate"):
        prompt = st.text_area("Prompt", "The capital of France is", key=f"{key}.prompt")
        c1, c2, c3 = st.columns(3)
        chosen = c1.radio("Decoding", MODES, index=MODES.index(mode), horizontal=True, key=f"{key}.mode")
        seed = int(c2.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key=f"{key}.seed"))
        n = int(c3.slider("New tokens", 4, 128, 32, 4, key=f"{key}.tokens"))
        submitted = st.form_submit_button("Generate", type="primary")
    request = (result.run_key, prompt, seed, chosen, n)
    if submitted:
        st.session_state[f"{key}.request"] = request
    if st.session_state.get(f"{key}.request") != request:
        st.info(
            "Press Generate to compare the two continuations"
            + (" (it rebuilds the modified model)." if result.spec.touches_weights else ".")
        )
        return
    try:
        with progress_bar(f"Building {label} and generating {n} tokens") as report:
            gen = analyses.generations(
                runner(),
                result.spec.to_json(),
                prompt,
                seed=seed,
                sample=chosen == "sampled",
                n=n,
                progress=report,
            )
    except Exception as exc:
        show_error(exc, "Generation")
        return
    side = gen.side
    st.html(render.side_by_side_html(prompt, side.base_tokens, side.mod_tokens, side.first_divergence, label))
    for col, (name, value, note) in zip(st.columns(4), generation_summary(gen.summary, n), strict=True):
        col.metric(name, value, note, delta_color="off", delta_arrow="off")
    infinite = not gen.steps.empty and not gen.steps.kl.map(math.isfinite).all()
    chart(
        charts.step_kl_chart(gen.steps, reverse=infinite),
        f"{key}-steps",
        caption=f"{label} on {result.spec.model} · prompt {prompt!r} · {chosen}, seed {seed}, {n} tokens",
    )
