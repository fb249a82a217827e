"""The Mitigate page: a damaged chain, the remedies that apply to it, and the recovery they buy as the headline.

The chain to repair is the one stacked from the other family pages' settings (what the user just looked at) or a
preset, so the page is useful on its own. The unmitigated and the mitigated chain are two ordinary runs on the
same tokens (stored, cached, listed on Compare & history); the page compares them through
`hemorrhage_core.mitigation.Comparison`.
"""

from __future__ import annotations

import math

import streamlit as st

from hemorrhage_core import charts, mitigation
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.mitigation import CalibrationSet, Chain, Comparison
from hemorrhage_core.specs import ActQuant, Prune, PruneChannels, QuantizeRTN, RunSpec
from hemorrhage_core.specs.families import family, stack_order

from . import outliers
from .family import LAST_MODS
from .state import Selection, runner
from .widgets import chart, require_selection, run_with_progress, show_error, table

STACKED = "all pages stacked"  # the option that chains every family page's last setting
# Damaged chains the page offers on its own, one per remedy family (each has at least one applicable remedy).
PRESETS: dict[str, Chain] = {
    "magnitude 50%": (Prune(sparsity=0.5),),
    "MLP channels −25% (magnitude)": (PruneChannels(fraction=0.25),),
    "RTN 3-bit g128": (QuantizeRTN(bits=3, granularity="group", group_size=128),),
    "RTN 4-bit per-channel": (QuantizeRTN(bits=4),),
    "W8A8 static": (ActQuant(a_mode="static"),),
}


def page_chains() -> dict[str, Chain]:
    """The setting last used on each family page (Prune / Quantize / Depth / Decode), by family in stack order.

    Mitigations themselves are left out: the chain is what the remedies repair.
    """
    remembered = st.session_state.get(LAST_MODS, {})
    return {f: (remembered[f],) for f in stack_order() if f in remembered and f != "mitigation"}


def stacked_chain() -> Chain:
    """Every family page's last setting in the families' stack order (weights first, decoding last)."""
    return tuple(m for chain in page_chains().values() for m in chain)


def _chain_text(mods: Chain) -> str:
    return " → ".join(m.label() for m in mods) or "original"


def chain_options() -> dict[str, tuple[str, Chain]]:
    """option -> (what the picker shows, the chain): each family page's own setting, then all of them stacked
    (only as an explicit choice, never by default: stacking silently would repair a chain nobody asked for),
    then the presets."""
    pages = page_chains()
    options = {f"page:{f}": (f"{family(f).title} page: {_chain_text(c)}", c) for f, c in pages.items()}
    if len(pages) > 1:
        options[STACKED] = (f"{STACKED}: {_chain_text(stacked_chain())}", stacked_chain())
    options.update({name: (f"preset: {name}", chain) for name, chain in PRESETS.items()})
    return options


def pick_chain() -> Chain:
    """The chain to repair: one explicit choice, by default the first family page's setting (else a preset)."""
    options = chain_options()
    source = st.selectbox(
        "Modification to repair",
        list(options),
        key="mitigate.source",
        format_func=lambda o: options[o][0],
        help="The setting last used on one of the Prune / Quantize / Depth / Decode pages, all of them stacked "
        "(prune → quantize → depth → decode), or a preset.",
    )
    return options[source][1]


def pick_remedies(chain: Chain) -> list[str]:
    """A multiselect over the remedies that apply to `chain` (the first one chosen by default); each option says
    which method it runs on this chain."""
    remedies = mitigation.applicable(chain)
    if not remedies:
        st.info(f"No remedy applies to **{_chain_text(chain)}**. Pick another modification.")
        st.stop()
    names = [r.name for r in remedies]
    descriptions = {r.name: r.description for r in remedies}
    runs = {n: mitigation.what_runs(n, chain) for n in names}
    chosen = st.multiselect(
        "Remedies",
        names,
        default=names[:1],
        format_func=lambda n: f"{n} — runs {runs[n]}" if runs[n] else n,
        # One widget per set of options: a choice made for another chain must not leak into this one.
        key="mitigate.remedies." + "|".join(names),
        help="Only the remedies that change this chain are offered; they are applied in a fixed order "
        "(pruning scores, smoothing, scaling, distillation, decoding calibration).",
    )
    for name in chosen:
        st.caption(f"**{name}** runs **{runs[name]}**: {descriptions[name]}")
    return chosen


def _number(value: float, pattern: str) -> str:
    return "n/a" if not math.isfinite(value) else pattern.format(value)


def headline(comparison: Comparison) -> None:
    """The recovered fractions, big, with the before → after values; a warning when beyond repair."""
    b, a = comparison.before.metrics, comparison.after.metrics
    cols = st.columns(3)
    cols[0].metric(
        "Perplexity damage recovered",
        _number(comparison.recovered("ppl_ratio"), "{:.0%}"),
        f"×{b['ppl_ratio']:.3f} → ×{a['ppl_ratio']:.3f}",
        delta_color="off",
        delta_arrow="off",
        help="(damage before − damage after) / damage before, damage = perplexity ratio − 1 (the original: 0). "
        "n/a when the modification did not raise perplexity.",
    )
    cols[1].metric(
        "KL damage recovered",
        _number(comparison.recovered("kl_mean"), "{:.0%}"),
        f"{b['kl_mean']:.4f} → {a['kl_mean']:.4f} nats",
        delta_color="off",
        delta_arrow="off",
        help="The same share for the mean KL(original ‖ model) (the original: 0).",
    )
    cols[2].metric(
        "Top-1 agreement",
        _number(a.get("top1_agreement", math.nan), "{:.1%}"),
        f"{_number(b.get('top1_agreement', math.nan), '{:.1%}')} before",
        delta_color="off",
        delta_arrow="off",
        help="Share of positions where the mitigated model's most likely token is the original's.",
    )
    if comparison.beyond_repair:
        st.error(
            f"Beyond repair: the remedies recovered {_number(comparison.recovered('kl_mean'), '{:.0%}')} of the KL "
            f"damage and perplexity is still ×{a['ppl_ratio']:.1f} the original's. A collapsed model cannot be "
            "calibrated or distilled back; reduce the compression instead.",
            icon=":material/heart_broken:",
        )


def measure(sel: Selection, before: RunSpec, after: RunSpec) -> Comparison | None:
    """Both runs (stored ones at once; new ones after the Measure button, with progress) and their comparison."""
    r = runner()
    try:
        stored = r.lookup(before) is not None and r.lookup(after) is not None
    except HemlabError as exc:
        st.error(str(exc))
        return None
    if not stored and not st.button("Measure", type="primary", key="mitigate.measure"):
        st.info(
            "Press Measure to profile the unmitigated and the mitigated chain on the same tokens. Remedies "
            "calibrate or train: expect minutes on a real model. Both runs are stored."
        )
        return None
    runs = [
        run_with_progress(spec, key=f"mitigate-{side}")
        for side, spec in (("before", before), ("after", after))
    ]
    if any(result is None for result in runs):
        return None
    try:
        return Comparison(*runs)
    except HemlabError as exc:
        st.error(str(exc))
        return None


def draw(comparison: Comparison) -> None:
    """Every chart of the comparison (each exportable) and the table with its CSV / Parquet export."""
    chart(charts.recovery_bars(comparison), "mitigate-recovery")
    left, right = st.columns(2)
    with left:
        chart(
            charts.cascade_chart(
                comparison.layers(),
                ["hidden_rel_error", "hidden_cosine"],
                title="Information-loss cascade, before and after",
            ),
            "mitigate-cascade",
        )
    with right:
        chart(charts.kl_overlay_chart(comparison.kl_hist()), "mitigate-kl")
    chart(charts.attention_pair_heatmap(comparison.heads()), "mitigate-attention")
    st.subheader("Original, before and after")
    table(comparison.table(), "mitigation")


def page() -> None:
    st.title("Mitigate")
    st.caption(
        "The paper's three remedies made concrete (gradient-aware pruning, dynamic quantization scaling, decoding "
        "calibration), each measured against the unmitigated modification at the same compression on the same "
        "tokens. The headline is the share of the damage recovered."
    )
    top = st.container()  # the recovery headline goes first, once there is one
    sel = require_selection()
    with st.container(border=True):
        chain = pick_chain()
        names = pick_remedies(chain)
        try:
            mitigated = mitigation.mitigate(chain, names, CalibrationSet(corpus=sel.corpus))
            before = RunSpec(model=sel.model, mods=chain, probe=sel.probe())
            after = RunSpec(model=sel.model, mods=mitigated, probe=sel.probe())
        except HemlabError as exc:
            st.error(f"Impossible setting: {exc}")
            st.stop()
        st.caption(f"Before: {_chain_text(chain)}  \nAfter: {_chain_text(mitigated)}")
    try:
        comparison = measure(sel, before, after)
    except Exception as exc:  # a bug or a library error: a message on the page, never a traceback
        show_error(exc, "Measuring the remedies")
        return
    if comparison is not None:
        with top:
            headline(comparison)
        draw(comparison)
    outliers.section(sel, chain)  # the activation statistics behind quantization damage
