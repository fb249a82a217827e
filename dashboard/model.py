"""The Model page's parts: the model picker (embedded, a folder inside an allowed folder, or a hub id), the
measurement settings (corpus or upload, budget, window, attention probes), the checks before they become the
session's selection, and the facts of the loaded model."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from hemorrhage_core import corpora, models
from hemorrhage_core.errors import HemlabError

from .runs import self_check_caption
from .state import (
    ATTN_LENGTHS,
    TOKEN_BUDGETS,
    WINDOWS,
    Selection,
    allowed_dirs,
    load_base,
    model_problem,
    problem,
    remote_code_checkbox,
    save_upload,
    set_selection,
)

CUSTOM = "local folder or hub id…"
UPLOAD = "upload a text file…"


def model_source(sel: Selection) -> tuple[str, bool]:
    """(model name or path, trust_remote_code) as chosen on the page."""
    st.subheader("Model")
    embedded = list(models.EMBEDDED)
    options = [*embedded, CUSTOM]
    choice = st.radio(
        "Source",
        options,
        index=options.index(sel.model) if sel.model in embedded else len(embedded),
        key="model.source",
        format_func=lambda o: f"{o} (embedded)" if o in embedded else o,
    )
    model = choice
    if choice == CUSTOM:
        model = st.text_input(
            "Model folder or hub id",
            value="" if sel.model in embedded else sel.model,
            placeholder="/path/inside/an/allowed/folder  or  HuggingFaceTB/SmolLM2-135M",
            key="model.custom",
            help="Folders must lie inside: " + ", ".join(map(str, allowed_dirs())),
        ).strip()
    return model, remote_code_checkbox(sel)


@dataclass(frozen=True)
class Measurement:
    corpus: str  # "" when an upload is expected but none is there yet
    tokens: int
    window: int
    attn_probes: int
    attn_len: int


def _corpus(sel: Selection) -> str:
    names = list(corpora.CORPORA)
    current = sel.corpus if sel.corpus in names else UPLOAD
    choice = st.radio(
        "Corpus",
        [*names, UPLOAD],
        index=[*names, UPLOAD].index(current),
        key="model.corpus",
        format_func=lambda c: f"{c}: {corpora.CORPORA[c].description}" if c in corpora.CORPORA else c,
    )
    if choice != UPLOAD:
        return choice
    upload = st.file_uploader("UTF-8 text file", type=["txt", "md", "text"], key="model.upload")
    corpus = sel.corpus if sel.corpus not in names else ""
    if upload is not None:
        try:
            corpus = save_upload(upload.name, upload.getvalue())
        except HemlabError as exc:
            st.error(f"Cannot use this upload: {exc}")
            corpus = ""
    if corpus:
        st.caption(f"Using `{corpus}`")
    return corpus


def measurement(sel: Selection) -> Measurement:
    """The measurement settings as chosen on the page."""
    st.subheader("Measurement")
    corpus = _corpus(sel)
    c1, c2 = st.columns(2)
    tokens = c1.select_slider(
        "Token budget",
        TOKEN_BUDGETS,
        value=sel.tokens if sel.tokens in TOKEN_BUDGETS else 4096,
        key="model.tokens",
        help="Non-overlapping windows over the start of the corpus.",
    )
    window = c2.select_slider(
        "Window (tokens)",
        WINDOWS,
        value=sel.window if sel.window in WINDOWS else 512,
        key="model.window",
        help="Perplexity depends on the window: it is recorded with every number.",
    )
    c3, c4 = st.columns(2)
    attn_probes = c3.number_input(
        "Attention probes (windows)",
        min_value=1,
        max_value=16,
        value=sel.attn_probes,
        key="model.attn_probes",
        help="Attention maps, JS divergence, entropy and sink mass per head are read on the first tokens of this "
        "many evaluation windows.",
    )
    attn_len = c4.select_slider(
        "Attention probe length (tokens)",
        ATTN_LENGTHS,
        value=sel.attn_len if sel.attn_len in ATTN_LENGTHS else 128,
        key="model.attn_len",
        help="Maps are tokens × tokens per layer and head: longer probes cost memory quadratically.",
    )
    return Measurement(corpus, int(tokens), int(window), int(attn_probes), int(attn_len))


def apply(model: str, trust: bool, m: Measurement) -> Selection:
    """The choices as the session's selection, after the checks (each failure a message that stops the page)."""
    if issue := model_problem(model):
        st.error(issue)
        st.stop()
    if not m.corpus:
        st.info("Upload a text file (UTF-8) or choose a built-in corpus.")
        st.stop()
    if m.tokens < m.window:
        st.error(f"The token budget ({m.tokens}) must hold at least one window ({m.window}).")
        st.stop()
    sel = set_selection(
        model=model,
        corpus=m.corpus,
        tokens=m.tokens,
        window=m.window,
        trust_remote_code=trust,
        attn_probes=m.attn_probes,
        attn_len=m.attn_len,
    )
    if issue := problem(sel):
        st.error(issue)
        st.stop()
    return sel


def _mb(mb: float) -> str:
    return f"{mb:,.1f} MB" if mb < 10 else f"{mb:,.0f} MB"


def model_facts(sel: Selection) -> None:
    """The loaded model: its description and baseline caveat, size, shape, memory and self-check."""
    st.subheader(f"`{sel.model}`")
    if sel.model in models.EMBEDDED:
        spec = models.EMBEDDED[sel.model]
        st.caption(f"{spec.description} Licence: {spec.licence}.")
        st.warning("Baseline caveat: " + spec.baseline_note)
    try:
        with st.spinner("Loading the model (once per process)…"):
            loaded = load_base(sel.model)
        info = models.model_info(loaded)
    except HemlabError as exc:
        st.error(str(exc))
        st.stop()
    except Exception as exc:  # a library error on an unusual folder: say it, keep the app alive
        st.error(f"Could not load {sel.model!r}: {type(exc).__name__}: {exc}")
        st.stop()
    off = dict(delta_color="off", delta_arrow="off")
    n = info["n_params"]
    cols = st.columns(5)
    cols[0].metric("Parameters", f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n:,}")
    cols[1].metric(
        "Blocks × heads", f"{info['layers']} × {info['heads']}", f"{info['kv_heads']} KV heads", **off
    )
    cols[2].metric("Hidden size", f"{info['hidden_size']:,}", f"vocab {info['vocab_size']:,}", **off)
    cols[3].metric("Memory", _mb(info["memory_mb"]), f"{info['dtype']} on {info['device']}", **off)
    cols[4].metric("Tied embeddings", "yes" if info["tied_embeddings"] else "no")
    st.caption(
        f"Architecture `{info['architecture']}` · blocks `{info['blocks']}` · source `{info['source']}` · "
        f"fingerprint {info['fingerprint'][:12]}"
    )
    st.caption(self_check_caption(info))
