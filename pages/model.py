"""Model: choose what every page measures: the model, the corpus (or an uploaded text) and the token budget; and
profile an existing checkpoint of the model (a folder, GGUF file or hub id) against it."""

import streamlit as st

from dashboard.against import against_section
from dashboard.navigation import through_app
from dashboard.runs import self_check_caption
from dashboard.state import (
    ATTN_LENGTHS,
    TOKEN_BUDGETS,
    WINDOWS,
    allowed_dirs,
    load_base,
    model_problem,
    remote_code_checkbox,
    save_upload,
    selection,
    set_selection,
)
from dashboard.state import (
    problem as selection_problem,  # `problem` below is the model's
)
from hemorrhage_core import corpora, models
from hemorrhage_core.errors import HemlabError

through_app()

st.title("Model & measurement")
sel = selection()

left, right = st.columns([1, 1], gap="large")
with left:
    st.subheader("Model")
    embedded = list(models.EMBEDDED)
    custom = "local folder or hub id…"
    options = [*embedded, custom]
    choice = st.radio(
        "Source",
        options,
        index=options.index(sel.model) if sel.model in embedded else len(embedded),
        key="model.source",
        format_func=lambda o: f"{o} (embedded)" if o in embedded else o,
    )
    model = choice
    if choice == custom:
        model = st.text_input(
            "Model folder or hub id",
            value="" if sel.model in embedded else sel.model,
            placeholder="/path/inside/an/allowed/folder  or  HuggingFaceTB/SmolLM2-135M",
            key="model.custom",
            help="Folders must lie inside: " + ", ".join(map(str, allowed_dirs())),
        ).strip()
    trust = remote_code_checkbox(sel)

with right:
    st.subheader("Measurement")
    corpus_names = list(corpora.CORPORA)
    upload_label = "upload a text file…"
    current = sel.corpus if sel.corpus in corpus_names else upload_label
    corpus_choice = st.radio(
        "Corpus",
        [*corpus_names, upload_label],
        index=[*corpus_names, upload_label].index(current),
        key="model.corpus",
        format_func=lambda c: f"{c}: {corpora.CORPORA[c].description}" if c in corpora.CORPORA else c,
    )
    corpus = corpus_choice
    if corpus_choice == upload_label:
        upload = st.file_uploader("UTF-8 text file", type=["txt", "md", "text"], key="model.upload")
        corpus = sel.corpus if sel.corpus not in corpus_names else ""
        if upload is not None:
            try:
                corpus = save_upload(upload.name, upload.getvalue())
            except HemlabError as exc:
                st.error(f"Cannot use this upload: {exc}")
                corpus = ""
        if corpus:
            st.caption(f"Using `{corpus}`")
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

problem = model_problem(model)
if problem:
    st.error(problem)
    st.stop()
if not corpus:
    st.info("Upload a text file (UTF-8) or choose a built-in corpus.")
    st.stop()
if tokens < window:
    st.error(f"The token budget ({tokens}) must hold at least one window ({window}).")
    st.stop()
sel = set_selection(
    model=model,
    corpus=corpus,
    tokens=int(tokens),
    window=int(window),
    trust_remote_code=trust,
    attn_probes=int(attn_probes),
    attn_len=int(attn_len),
)
issue = selection_problem(sel)
if issue:
    st.error(issue)
    st.stop()

st.divider()
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

cols = st.columns(5)
cols[0].metric(
    "Parameters", f"{info['n_params'] / 1e6:,.1f} M" if info["n_params"] >= 1e5 else f"{info['n_params']:,}"
)
cols[1].metric(
    "Blocks × heads",
    f"{info['layers']} × {info['heads']}",
    f"{info['kv_heads']} KV heads",
    delta_color="off",
    delta_arrow="off",
)
cols[2].metric(
    "Hidden size",
    f"{info['hidden_size']:,}",
    f"vocab {info['vocab_size']:,}",
    delta_color="off",
    delta_arrow="off",
)
cols[3].metric(
    "Memory",
    f"{info['memory_mb']:,.1f} MB" if info["memory_mb"] < 10 else f"{info['memory_mb']:,.0f} MB",
    f"{info['dtype']} on {info['device']}",
    delta_color="off",
    delta_arrow="off",
)
cols[4].metric("Tied embeddings", "yes" if info["tied_embeddings"] else "no")
st.caption(
    f"Architecture `{info['architecture']}` · blocks `{info['blocks']}` · source `{info['source']}` · "
    f"fingerprint {info['fingerprint'][:12]}"
)
st.caption(self_check_caption(info))
st.success(
    f"Every page now measures `{sel.model}` on `{sel.corpus}` with {sel.tokens:,} tokens in windows of "
    f"{sel.window}. Pick a family page on the left to modify it."
)

st.divider()
against_section(sel)
