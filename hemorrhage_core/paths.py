"""Where the project keeps prepared assets and results. Everything is overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Root for prepared models, corpora, reference caches and the default database (HEMLAB_DATA)."""
    return Path(os.environ.get("HEMLAB_DATA", PROJECT_ROOT / "data"))


def cache_dir() -> Path:
    """Prepared (converted) models and base-reference caches (HEMLAB_CACHE, default data/cache)."""
    return Path(os.environ.get("HEMLAB_CACHE", data_dir() / "cache"))


def default_db_path() -> Path:
    return Path(os.environ.get("HEMLAB_DB", data_dir() / "hemlab.duckdb"))
