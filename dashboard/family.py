"""One page per modification family (Quantize, Prune, Decode, Depth), generic over the spec registry.

Every class registered with `@modification` whose `family` is the page's appears as a method; its form is built
from its fields (fields.py), so a new method shows up without editing any page. The settings of each family
page are remembered, so a page can stack them into one chain (prune → quantize → depth → decode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import streamlit as st

from hemorrhage_core.errors import HemlabError, SpecError
from hemorrhage_core.specs import Calibrated, Modification, RunSpec, options
from hemorrhage_core.specs.families import family as family_info
from hemorrhage_core.specs.families import stack_order

from .eta import estimate_seconds, when
from .fields import describe, family_kinds, method_title
from .forms import mod_form
from .profile_view import draw_profile
from .state import load_base, runner
from .widgets import headline, require_selection, run_with_progress

# Session key: family -> the modification last set on its page (the Mitigate page stacks them).
LAST_MODS = "hemlab.family_mods"


def stacked(family: str, mod: Modification, others: dict[str, Modification]) -> tuple[Modification, ...]:
    """This page's modification with the other pages' ones, in the families' stack order (weights first,
    decoding last: specs/families.py)."""
    chain = {**{f: m for f, m in others.items() if f != family}, family: mod}
    order = {f: i for i, f in enumerate(stack_order())}
    return tuple(chain[f] for f in sorted(chain, key=lambda f: order.get(f, len(order))))


def _num_layers(model: str) -> int | None:
    """The model's block count for layer-index widgets (loads the shared base model once per process)."""
    try:
        with st.spinner(f"Loading {model} (once per process)…"):
            return load_base(model).num_layers
    except HemlabError:
        return None  # the run below reports the loading error on the page


def calibrates(mod: Modification) -> bool:
    """Whether a setting reads calibration text or trains (minutes per setting, not seconds)."""
    return isinstance(mod, Calibrated) or bool(getattr(mod, "calibrated", False))


def reads_text(mod: Modification) -> bool:
    """Whether this setting reads its calibration text: a kind may use it only for some settings (GGUF: with
    an importance matrix), which its calibration field says by `enabled_when`."""
    for opt in options(type(mod)):
        if opt.name == "calib_corpus":
            return opt.enabled_when is None or getattr(mod, opt.enabled_when[0]) == opt.enabled_when[1]
    return False


def why_wait(family: str, spec: RunSpec, mods: tuple[Modification, ...], auto: bool) -> str | None:
    """Why this spec waits for the Measure button (a message), or None when it is stored or may start now.

    The user "asked" once they changed a setting on this page (the chain differs from the one first shown) or
    pressed Measure in this session; until then landing on a page starts nothing.
    """
    landing = st.session_state.setdefault(f"{family}.landing", mods)  # the chain first shown
    if mods != landing:
        st.session_state[f"{family}.asked"] = True
    if runner().lookup(spec) is not None:
        return None
    if any(calibrates(m) for m in spec.mods):
        if any(reads_text(m) for m in spec.mods):
            return "This setting calibrates on text (minutes): press Measure to profile it."
        return "This setting rebuilds the model through another tool or format (minutes): press Measure to profile it."
    if not auto:
        return "Automatic updates are off: press Measure to profile these settings."
    if not st.session_state.get(f"{family}.asked"):
        estimate = estimate_seconds(runner().store.runs(), spec)
        return (
            f"**{spec.label()}** is not measured yet: press Measure to profile it"
            + (f"; estimated {when(estimate.seconds)}, {estimate.basis}" if estimate else "")
            + ". After that, changing a setting measures it at once."
        )
    return None


def family_page(
    family: str,
    notice: Callable[[], None] | None = None,
    starting: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Method picker, generated form, headline numbers and the four profile charts for one family. `starting`
    (kind -> field -> value) is where a method's form starts when the spec's default would show nothing (the
    Decode page: T = 1 is the original model); the specs' defaults, and so every stored key, stay as they are.

    Title and introduction come from the family registry (specs/families.py). Nothing starts unasked: landing
    shows the stored result of the default setting, or a Measure button; once the user has changed a setting (or
    pressed Measure) on the page, instant methods measure at once on every change, and a setting that calibrates
    or trains still waits for Measure unless it is stored, so a dropdown change never starts minutes of work.
    """
    info = family_info(family)
    st.title(info.title)
    st.caption(info.intro)
    if notice is not None:  # what the family needs that may be missing (the GGUF page: the llama.cpp tools)
        notice()
    sel = require_selection()
    kinds = family_kinds(family)
    if not kinds:
        st.info(f"No {family} method is registered in this version yet; the page lists them as they land.")
        st.stop()

    if unknown := set(starting or {}) - set(kinds):
        raise ValueError(f"the {family} page starts kinds it does not have: {sorted(unknown)}")
    remembered: dict[str, Modification] = st.session_state.setdefault(LAST_MODS, {})
    with st.container(border=True):
        top = st.columns([2, 1, 1])
        kind = top[0].selectbox(
            "Method",
            list(kinds),
            key=f"{family}.method",
            format_func=lambda k: method_title(k, kinds[k]),
            help="The name each method's spec gives itself; the caption below says what it does and its CLI name.",
        )
        stack = top[1].toggle(
            "Stack with other pages",
            value=False,
            key=f"{family}.stack",
            help="Apply the settings last used on the other family pages too, in the order "
            "prune → quantize → depth → decode.",
        )
        auto = top[2].toggle(
            "Update on change",
            value=True,
            key=f"{family}.auto",
            help="Measure as soon as a setting changes (stored results appear at once). Settings that calibrate "
            "or train always wait for Measure.",
        )
        st.caption(f"{describe(kinds[kind])} CLI: `--mod {kind}`.")
        context = {"num_layers": n} if (n := _num_layers(sel.model)) else {}
        try:
            mod = mod_form(
                kinds[kind], key=f"{family}.{kind}", context=context, starting=(starting or {}).get(kind)
            )
            remembered[family] = mod
            mods = stacked(family, mod, remembered) if stack else (mod,)
            spec = RunSpec(model=sel.model, mods=mods, probe=sel.probe())
        except SpecError as exc:
            st.error(f"Impossible setting: {exc}")
            st.stop()
        if stack and len(mods) > 1:
            st.caption("Chain: " + " → ".join(m.label() for m in mods))

    reason = why_wait(family, spec, mods, auto)
    if reason:
        if not st.button("Measure", type="primary", key=f"{family}.measure"):
            st.info(reason)
            st.stop()
        st.session_state[f"{family}.asked"] = True  # from now on instant settings update on change
    result = run_with_progress(spec, key=f"{family}-run")
    if result is None:
        st.stop()

    headline(result)
    draw_profile(result, family)  # the charts that mean something for this kind of change (profile_view.py)
