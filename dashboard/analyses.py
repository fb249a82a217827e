"""The heavier analyses a page runs on demand (they rebuild the modified model): the module ranking and the
attention maps for a prompt. Each holds the process's compute lock; results are stored (module ranking, in the
store's analysis table) or cached (attention maps, per spec / prompt / layer / head) so a revisit is instant.
"""

from __future__ import annotations

import importlib
import json

import pandas as pd
import streamlit as st

from hemorrhage_core.runner import Runner, RunResult
from hemorrhage_core.specs import RunSpec

from .state import compute_lock

MODULE_ANALYSIS = "module_errors"  # the name analysis.modules' rows are stored under


def stored_module_ranking(runner: Runner, run_key: str) -> pd.DataFrame:
    """The stored ranking of a run's modules (empty when it was never computed)."""
    modules = importlib.import_module("hemorrhage_core.analysis.modules")
    return modules.from_rows(runner.store.analysis(run_key, MODULE_ANALYSIS))


def compute_module_ranking(
    runner: Runner, result: RunResult, *, n: int = 8, length: int = 256
) -> pd.DataFrame:
    """Rank the modules of a run on n x length calibration tokens of its corpus, and store the ranking."""
    modules = importlib.import_module("hemorrhage_core.analysis.modules")
    with compute_lock():
        ranked = modules.rank_modules(runner, result.spec, n=n, length=length)
    runner.store.save_analysis(result.run_key, MODULE_ANALYSIS, modules.to_rows(ranked))
    return ranked


@st.cache_data(show_spinner=False, max_entries=16)
def attention_view(
    _runner: Runner, spec_json: str, prompt: str, layer: int, head: int | None, max_tokens: int
):
    """analysis.attention's view of one layer (one head, or all with None) on a prompt; cached, the runner is
    not hashed."""
    attention = importlib.import_module("hemorrhage_core.analysis.attention")
    with compute_lock():
        return attention.attention_view(
            _runner, RunSpec.from_dict(json.loads(spec_json)), prompt, layer, head, max_tokens=max_tokens
        )


FLIPS_ANALYSIS = "flips"


@st.cache_data(show_spinner=False, max_entries=16)
def flip_report(_runner: Runner, spec_json: str, run_key: str, n_items: int, corpus: str | None):
    """analysis.flips on a cloze set of `corpus` (default: the run's evaluation corpus); the metrics are stored
    under the run, as `hemlab flips` stores them. Cached per spec, size and corpus."""
    flips = importlib.import_module("hemorrhage_core.analysis.flips")
    with compute_lock():
        report = flips.flip_report(
            _runner, RunSpec.from_dict(json.loads(spec_json)), corpus=corpus, n_items=n_items
        )
    _runner.store.save_analysis(
        run_key, FLIPS_ANALYSIS, [(report.set_id, k, v) for k, v in report.metrics().items()]
    )
    return report
