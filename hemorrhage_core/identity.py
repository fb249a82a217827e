"""Cheap identities of models and checkpoints for cache keys, computed without loading weights.

An embedded model is its name; a local folder is its absolute path plus a hash of its config and the names,
sizes and modification times of its weight files (re-saving a model changes its identity); a single file (a
GGUF checkpoint) is its absolute path, size and modification time; a hub id is itself. `against_spec` builds the
`checkpoint` modification with the identity of the checkpoint's files, so rewriting them changes the cache key.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from . import models
from .errors import ModelError
from .specs.checkpoint import Against

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def model_identity(name_or_path: str) -> str:
    """The identity of an embedded name, a folder, a file or a hub id (see the module docstring)."""
    if name_or_path in models.EMBEDDED:
        return f"embedded:{name_or_path}"
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        config = path / "config.json"
        if config.exists():
            h.update(config.read_bytes())
        for f in sorted(path.iterdir()):
            if f.suffix in _WEIGHT_SUFFIXES:
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return f"path:{path.resolve()}:{h.hexdigest()[:16]}"
    if path.is_file():
        st = path.stat()
        digest = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return f"file:{path.resolve()}:{digest}"
    return f"hub:{name_or_path}"


def looks_like_path(text: str) -> bool:
    """Whether `text` was meant as a file or folder (not an embedded name or a hub id)."""
    return text.startswith(("/", ".", "~")) or text.lower().endswith(".gguf") or not _HUB_ID.match(text)


def against_spec(source: str) -> Against:
    """The `checkpoint` modification measuring `source` (a folder, a .gguf file, a hub id or an embedded name)
    against the run's model, with the identity of its files now. ModelError when a path does not exist."""
    source = source.strip()
    if not source:
        raise ModelError(
            "a checkpoint to measure is required: a model folder, a .gguf file or a hub id (org/name)"
        )
    path = Path(source).expanduser()
    if path.exists():
        source = str(path.resolve())  # stored with the run: a relative path would mean another folder later
    elif source not in models.EMBEDDED and looks_like_path(source):
        raise ModelError(
            f"checkpoint {source!r} does not exist: give a model folder (config.json and safetensors weights), "
            "a .gguf file or a hub id (org/name)"
        )
    return Against(source=source, identity=model_identity(source))
