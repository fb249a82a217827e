"""Process-wide resources (runners, locks) and the per-session selection of model and measurement settings.

One `Runner` per process and database (st.cache_resource): base models are loaded once and shared read-only
by every browser session, and all computations queue on one process-wide lock so two sessions never hold two
modified copies of a model at once. The DuckDB store handles several processes (the app and a CLI sweep).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from hemorrhage_core import corpora, models
from hemorrhage_core.compute_queue import ComputeQueue
from hemorrhage_core.errors import HemlabError
from hemorrhage_core.paths import data_dir, default_db_path
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import ProbeSettings
from hemorrhage_core.store import Store

TOKEN_BUDGETS = [256, 512, 1024, 2048, 4096, 8192, 16384]
WINDOWS = [64, 128, 256, 512, 1024, 2048]
ATTN_LENGTHS = [32, 64, 128, 256]  # attention probe lengths offered (maps grow with the square)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SELECTION = "hemlab.selection"
_SIDEBAR_SLOT = "hemlab.sidebar_slot"  # this run's placeholder of the sidebar summary


def allowed_dirs() -> list[Path]:
    """Folders the web UI may read models and text files from (HEMLAB_ALLOWED_DIRS, os.pathsep-separated).

    The first one receives uploads. Default: data/uploads and data/models.
    """
    env = os.environ.get("HEMLAB_ALLOWED_DIRS")
    dirs = (
        [Path(p) for p in env.split(os.pathsep) if p]
        if env
        else [data_dir() / "uploads", data_dir() / "models"]
    )
    return [d.expanduser().resolve() for d in dirs]


def uploads_dir() -> Path:
    return allowed_dirs()[0]


@st.cache_resource(show_spinner=False)
def _process_locks() -> dict[str, ComputeQueue | threading.Lock]:
    """Shared by every session of this process: the queue of computations (it tells a waiting session how many
    are ahead) and a lock for loading base models."""
    return {"compute": ComputeQueue(), "load": threading.Lock()}


@st.cache_resource(show_spinner=False)
def get_runner(db_path: str, trust_remote_code: bool = False) -> Runner:
    """The process's runner for one database. A second one exists only if someone allows remote code; it
    shares the compute lock so the queue stays one queue."""
    return Runner(
        Store(db_path),
        allowed_dirs=allowed_dirs(),
        trust_remote_code=trust_remote_code,
        compute_lock=_process_locks()["compute"],
    )


def db_path() -> str:
    return str(os.environ.get("HEMLAB_DB", default_db_path()))


def runner(trust_remote_code: bool | None = None) -> Runner:
    """The shared runner for this session's database and its trust_remote_code choice."""
    trust = selection().trust_remote_code if trust_remote_code is None else trust_remote_code
    return get_runner(db_path(), bool(trust) and remote_code_allowed())


def compute_lock() -> ComputeQueue:
    """The process-wide computation queue (the runners' queue): hold it (`with compute_lock():`) for work
    outside Runner.run that builds a modified model, such as generations, so sessions never hold two modified
    copies at once."""
    return _process_locks()["compute"]


def load_base(name: str) -> models.LoadedModel:
    """The shared base model; loads are serialised so two sessions never load the same model twice."""
    r = runner()
    with _process_locks()["load"]:
        return r.base(name)


# -- the selection shared by every page of a session ------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What every page measures on: the model, the corpus, and the measurement budget."""

    model: str
    corpus: str
    tokens: int
    window: int = 512
    trust_remote_code: bool = False
    # The attention probe set: the first attn_len tokens of the first attn_probes evaluation windows.
    attn_probes: int = 4
    attn_len: int = 128

    def probe(self) -> ProbeSettings:
        """ProbeSettings for this selection (SpecError if the budget is smaller than one window, or the probe set
        too large)."""
        return ProbeSettings(
            corpus=self.corpus,
            tokens=self.tokens,
            window=self.window,
            attn_probes=self.attn_probes,
            attn_len=self.attn_len,
        )


def default_selection() -> Selection:
    """From HEMLAB_DEFAULT_MODEL / _CORPUS / _TOKENS / _WINDOW, else smollm2-135m on news, 4,096 tokens."""
    env = os.environ
    return Selection(
        model=env.get("HEMLAB_DEFAULT_MODEL", models.DEFAULT_MODEL),
        corpus=env.get("HEMLAB_DEFAULT_CORPUS", corpora.DEFAULT_CORPUS),
        tokens=int(env.get("HEMLAB_DEFAULT_TOKENS", 4096)),
        window=int(env.get("HEMLAB_DEFAULT_WINDOW", 512)),
    )


def selection() -> Selection:
    if _SELECTION not in st.session_state:
        st.session_state[_SELECTION] = default_selection()
    sel = st.session_state[_SELECTION]
    if sel.trust_remote_code and not remote_code_allowed():  # the operator turned it off since
        sel = st.session_state[_SELECTION] = dataclasses.replace(sel, trust_remote_code=False)
    return sel


def set_selection(**changes) -> Selection:
    sel = dataclasses.replace(selection(), **changes)
    st.session_state[_SELECTION] = sel
    # The sidebar was drawn before the page ran: redraw its summary, or it shows the old budget until the next
    # interaction.
    slot = st.session_state.get(_SIDEBAR_SLOT)
    if slot is not None:
        _summary(slot, sel)
    return sel


MAX_NAME = (
    1024  # characters of a model name or path: far above any real one, far below the file system's limits
)


def model_problem(name: str, allowed: list[Path] | None = None) -> str | None:
    """Why the web UI refuses `name` (a message for the page), or None when it may be loaded.

    Embedded names and hub ids pass (the loader reports an offline hub clearly). Anything that looks like a
    path must resolve, symlinks included, inside an allowed folder: the app may be reachable by others. A name
    the file system cannot take (too long, a symlink loop, a folder it may not read) is a message too, never an
    exception.
    """
    name = name.strip()
    if not name:
        return "Enter a model: an embedded name, a folder inside an allowed folder, or a hub id (org/name)."
    if len(name) > MAX_NAME:
        return (
            f"That model name is {len(name):,} characters long; a name, hub id or path has at most {MAX_NAME:,}. "
            "Check what was pasted."
        )
    if name in models.EMBEDDED:
        return None
    try:
        return _path_problem(name, allowed_dirs() if allowed is None else allowed)
    except RuntimeError as exc:  # pathlib's "Symlink loop from ..."
        return f"{name!r} cannot be read: {exc}. Fix the link or choose another folder."
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"{name!r} cannot be read as a model folder: {reason}."


def _path_problem(name: str, roots: list[Path]) -> str | None:
    path = Path(name).expanduser()
    looks_like_path = path.is_absolute() or name.startswith((".", "~")) or path.exists()
    if looks_like_path or not _HUB_ID.match(name):
        if not looks_like_path:
            return (
                f"{name!r} is neither an embedded model ({', '.join(models.EMBEDDED)}) nor a hub id (org/name) "
                "nor a folder path."
            )
        resolved = path.resolve()
        if not any(resolved.is_relative_to(root) for root in roots):
            return (
                f"{resolved} is outside the folders this app may read models from "
                f"({', '.join(map(str, roots)) or 'none'}). Copy the model folder into one of them, or set "
                "HEMLAB_ALLOWED_DIRS when starting the app."
            )
        if resolved.is_file() and resolved.suffix.lower() == ".gguf":
            return None  # a GGUF checkpoint: transformers reads its config and tokenizer from the file
        config = resolved / "config.json"
        config.resolve(
            strict=False
        )  # a config.json that is itself a symlink loop raises here, not in the loader
        if not config.is_file():
            return f"{resolved} is not a transformers model folder (no config.json in it) or a .gguf file."
    return None


def remote_code_allowed() -> bool:
    """Whether the operator lets visitors run a model's own code (HEMLAB_ALLOW_REMOTE_CODE=1; off by default): on
    a shared dashboard, any visitor could otherwise tick trust_remote_code and run a hub model's Python."""
    return os.environ.get("HEMLAB_ALLOW_REMOTE_CODE", "").strip().lower() in ("1", "true", "yes", "on")


def remote_code_checkbox(sel: Selection) -> bool:
    """The trust_remote_code choice: a checkbox with its warning where the operator allows remote code, else a
    line saying it is off on this server (and how an operator turns it on). Returns the choice."""
    if not remote_code_allowed():
        st.caption(
            "A model's own code (trust_remote_code) cannot run on this server: the operator has not allowed it "
            "(HEMLAB_ALLOW_REMOTE_CODE=1 when starting the app)."
        )
        return False
    trust = st.checkbox(
        "Allow the model's own code to run (trust_remote_code)",
        value=sel.trust_remote_code,
        key="model.trust",
    )
    if trust:
        st.warning(
            "Remote code runs with this app's permissions. Only allow it for models whose code you have read."
        )
    return trust


def save_upload(name: str, data: bytes) -> str:
    """Check that an upload is UTF-8 text, store it under the uploads folder named by content hash, and return
    its path. Raises CorpusError (shown on the page) for binary, non-UTF-8 or empty uploads."""
    corpora.corpus_from_text(name, data)  # validates: raises CorpusError with a clear message
    folder = uploads_dir()
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^\w.-]+", "_", Path(name).name)[:80] or "upload.txt"
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}-{safe}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def corpus_label(corpus: str) -> str:
    return corpus if corpus in corpora.CORPORA else f"file {Path(corpus).name}"


def _summary(slot, sel: Selection) -> None:
    with slot.container():
        st.markdown("**Measuring on**")
        st.caption(
            f"Model `{sel.model}`  \nCorpus `{corpus_label(sel.corpus)}`  \n"
            f"{sel.tokens:,} tokens · window {sel.window}  \n"
            f"attention probes {sel.attn_probes} × {sel.attn_len} tokens"
            + ("  \n⚠ remote code allowed" if sel.trust_remote_code else "")
        )


def app_theme() -> str:
    """ "light" or "dark": what the browser shows (st.context.theme); light where no browser is behind the run."""
    try:
        return st.context.theme.type or "light"
    except Exception:  # AppTest, a bare script
        return "light"


def sidebar() -> Selection:
    """The current selection, summarised on every page (it is changed on the Model page, which redraws the
    summary through set_selection), and where the theme is chosen."""
    sel = selection()
    with st.sidebar:
        slot = st.empty()
        st.session_state[_SIDEBAR_SLOT] = slot
        _summary(slot, sel)
        st.page_link("pages/model.py", label="Change model or corpus", icon=":material/tune:")
        st.caption(
            f"Theme: {app_theme()}. It follows your browser; switch it with ⋮ (top right) → "
            "System · Light · Dark."
        )
    return sel


def problem(sel: Selection) -> str | None:
    """A message when the selection cannot be measured as it stands (checked before any run)."""
    issue = model_problem(sel.model)
    if issue:
        return issue
    try:
        sel.probe()
    except HemlabError as exc:
        return str(exc)
    return None
