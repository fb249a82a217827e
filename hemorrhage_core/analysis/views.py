"""Data the analysis pages draw, gathered from the store as tidy frames. Pure: a Store in, DataFrames out."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ..specs import MODIFICATIONS
from ..store import Store


def _names(store: Store, keys: list[str]) -> pd.DataFrame:
    """run_key -> run (a unique display name) and family, for the given keys (in that order)."""
    table = history(store)
    table = table[table.run_key.isin(keys)].set_index("run_key").reindex(keys).dropna(subset=["label"])
    names = table["label"].astype(str)
    if names.duplicated().any():  # same label on two models / corpora / budgets: add what differs
        names = (
            names
            + " · "
            + table["model"].astype(str)
            + " · "
            + table["corpus"].astype(str)
            + " · "
            + (table["token_budget"].astype(int).astype(str) + " tok")
        )
    if names.duplicated().any():
        names = names + " · " + names.index.str[:6]
    return pd.DataFrame({"run_key": table.index, "run": names.values, "family": table["family"].values})


def layer_rows(store: Store, keys: list[str]) -> pd.DataFrame:
    """Tidy per-layer rows of several runs: run, family, layer, metric, value (runs in the order given)."""
    rows = store.layer_metrics(keys)
    if rows.empty:
        return pd.DataFrame(columns=["run", "family", "layer", "metric", "value"])
    names = _names(store, keys)
    out = rows.merge(names, on="run_key")
    out["order"] = out.run_key.map({k: i for i, k in enumerate(keys)})
    return out.sort_values(["order", "metric", "layer"])[["run", "family", "layer", "metric", "value"]]


def layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    """Wide per-layer table (run, layer, one column per metric) for display and export."""
    if layers.empty:
        return layers
    wide = layers.pivot_table(index=["run", "layer"], columns="metric", values="value", aggfunc="first")
    return wide.reset_index().rename_axis(None, axis=1)


def kl_hist_rows(store: Store, keys: list[str]) -> pd.DataFrame:
    """The stored KL histograms of several runs, tidy: run, family, bin_lo, bin_hi, count."""
    names = _names(store, keys)
    parts = []
    for rec in names.to_dict("records"):
        stored = store.load_run(rec["run_key"])
        if stored is not None and not stored.kl_hist.empty:
            parts.append(stored.kl_hist.assign(run=rec["run"], family=rec["family"]))
    if not parts:
        return pd.DataFrame(columns=["run", "family", "bin_lo", "bin_hi", "count"])
    return pd.concat(parts, ignore_index=True)


def compared_runs(store: Store, keys: list[str]) -> pd.DataFrame:
    """The wide history rows of the chosen runs (in the order given), with a unique `label` per run."""
    table = history(store)
    chosen = table.set_index("run_key").reindex(keys).dropna(subset=["label"]).reset_index()
    names = _names(store, keys).set_index("run_key")["run"]
    chosen["label"] = chosen.run_key.map(names)
    return chosen


def layer_counts(store: Store, keys: list[str]) -> dict[str, int]:
    """Blocks of the original model per run (its per-layer rows are indexed by original block)."""
    rows = store.layer_metrics(keys)
    return {} if rows.empty else rows.groupby("run_key").layer.nunique().astype(int).to_dict()


def memory_points(memory, runner, sel) -> pd.DataFrame:
    """analysis.memory's table for the selected model, restricted to runs measured like the selection (same
    corpus content, window and budget), as chart points: label, memory_mb, ppl_ratio, family, series."""
    table = memory.memory_table(runner.store, [sel.model])
    if table.empty:
        return pd.DataFrame(columns=["label", "memory_mb", "ppl_ratio", "family", "series"])
    sha = runner.corpus(sel.corpus).sha256
    same = table[
        (table.corpus_sha256 == sha)
        & (table.window_tokens == sel.window)
        & (table.token_budget == sel.tokens)
    ]
    same = same.dropna(subset=["weight_bytes", "ppl_ratio"])
    return pd.DataFrame(
        {
            "label": same.label,
            "memory_mb": same.weight_bytes / 2**20,
            "ppl_ratio": same.ppl_ratio,
            "family": same.family,
            "series": same.family,
        }
    )


# -- the run table ------------------------------------------------------------------------------------------


def families_of(spec_json: str) -> str:
    """'quant+prune' style family summary of a stored spec (for filters and colours); 'original' if none."""
    try:
        kinds = [m["kind"] for m in json.loads(spec_json).get("mods", [])]
    except (ValueError, TypeError, KeyError):
        return "unknown"
    fams = dict.fromkeys(getattr(MODIFICATIONS.get(k), "family", "other") for k in kinds)
    return "+".join(fams) or "original"


def kinds_of(spec_json: str) -> str:
    try:
        return "+".join(m["kind"] for m in json.loads(spec_json).get("mods", [])) or "original"
    except (ValueError, TypeError, KeyError):
        return "unknown"


def history(store: Store, model: str | None = None) -> pd.DataFrame:
    """Every stored run (newest first) with its headline metrics as columns plus `family` and `kinds`."""
    runs = store.runs(model)
    if runs.empty:
        return runs
    runs = runs.copy()
    runs["family"] = runs.spec_json.map(families_of)
    runs["kinds"] = runs.spec_json.map(kinds_of)
    return runs


def run_title(row: dict[str, Any]) -> str:
    """One line naming a stored run for pickers: label · model · corpus · tokens."""
    from hemorrhage_core.analysis.sweep_points import short_model

    return (
        f"{row['label']} · {short_model(row['model'])} · {row['corpus']} · {int(row['token_budget']):,} tok"
    )


def spec_field_values(spec_json: str) -> list[tuple[str, dict[str, Any]]]:
    """[(kind, fields)] of a stored spec, in order."""
    out = []
    for m in json.loads(spec_json).get("mods", []):
        m = dict(m)
        out.append((m.pop("kind"), m))
    return out


def filter_history(
    history: pd.DataFrame,
    *,
    models: list[str] | None = None,
    families: list[str] | None = None,
    corpora: list[str] | None = None,
    text: str = "",
) -> pd.DataFrame:
    """The history rows matching every filter given (an empty filter keeps everything; `text`: a case-blind
    substring of the label), renumbered from 0."""
    shown = history
    for column, wanted in (("model", models), ("family", families), ("corpus", corpora)):
        if wanted:
            shown = shown[shown[column].isin(wanted)]
    if text:
        shown = shown[shown.label.str.contains(text, case=False, regex=False)]
    return shown.reset_index(drop=True)
