"""Quality against bytes of weights, for every stored run of a set of models (the equal-memory comparison).

Bytes of weights of a run, in order of preference:
1. `weight_bytes` from the run's report (every quantization handler records it, see footprint.py: quantized
   matrices at their format's cost including scales and zero points, everything else at 16 bits);
2. `params_after` (structured pruning) at 16 bits per parameter;
3. the model's parameter count at 16 bits (the original, a decoding change, or unstructured pruning stored
   dense). For unstructured / N:M pruning, `weight_bytes_sparse` also estimates a bitmask format: 16 bits per
   kept weight plus 1 bit per weight of the pruned matrices (an optimistic format; real sparse kernels need more).

Perplexity depends on the tokenizer, so models with different vocabularies are compared in **bits per byte** of
the evaluated text: bpb = ln(ppl) * evaluated_tokens / (ln 2 * UTF-8 bytes of the predicted tokens). Only runs on
the same corpus, window and token budget are comparable; the table carries those columns.
"""

from __future__ import annotations

import json
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import cast

import pandas as pd

from .. import corpora, models

log = logging.getLogger(__name__)

BASE_BITS = 16
COLUMNS = [
    "model", "run_key", "label", "family", "weight_bytes", "weight_mib", "bytes_source", "weight_bytes_sparse",
    "bits_per_weight", "ppl", "ppl_base", "ppl_ratio", "kl_mean", "bpb", "bpb_base", "corpus", "corpus_sha256",
    "window_tokens", "token_budget", "n_params",
]  # fmt: skip


def model_folder(name: str) -> Path | None:
    """The local folder holding `name`'s weights (embedded models once prepared, or a path), else None."""
    if name in models.EMBEDDED:
        folder = models.prepared_dir(name)
        return folder if folder.exists() else None
    path = Path(name).expanduser()
    return path if path.is_dir() else None


@lru_cache(maxsize=32)
def parameter_count(name: str) -> int | None:
    """Parameters stored in the model folder's safetensors files (a tied embedding is stored, and counted, once).
    None for a model with no local safetensors (a hub id)."""
    from safetensors import safe_open

    folder = model_folder(name)
    files = sorted(folder.glob("*.safetensors")) if folder else []
    if not files:
        return None
    total = 0
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():  # noqa: SIM118 (safe_open is not iterable)
                total += math.prod(st.get_slice(key).get_shape())
    return total


@lru_cache(maxsize=64)
def evaluated_bytes(name: str, corpus: str, window: int, tokens: int) -> int | None:
    """UTF-8 bytes of the tokens the profile predicts (every window but its first token) for this model's
    tokenizer; None when the tokenizer or corpus is not available locally."""
    from transformers import AutoTokenizer

    folder = model_folder(name)
    if folder is None:
        return None
    try:
        tok = AutoTokenizer.from_pretrained(folder)
        windows = corpora.token_windows(tok, corpora.load_corpus(corpus), window=window, tokens=tokens)
    except Exception as exc:  # an unreadable folder or a missing corpus: the bpb column stays empty
        log.info("no bits-per-byte for %s on %s: %s", name, corpus, exc)
        return None
    # decode of one id list returns a str; the stub's `str | list[str]` also covers batched input
    return sum(len(cast(str, tok.decode(w[1:].tolist())).encode("utf-8")) for w in windows)


def weight_bytes(metrics: dict, n_params: int | None) -> tuple[float | None, str, float | None]:
    """(bytes, where they came from, bitmask-sparse bytes or None) for one run's metrics (see module doc)."""
    dense = None if n_params is None else n_params * BASE_BITS / 8
    sparse = None
    sparsity = metrics.get("achieved_sparsity")
    pruned = metrics.get("pruned_weights")
    if dense is not None and sparsity is not None and pruned:
        # Kept weights at 16 bits plus a 1-bit mask over the pruned matrices; other parameters unchanged.
        sparse = dense - pruned * BASE_BITS / 8 + pruned * ((1 - sparsity) * BASE_BITS + 1) / 8
    if metrics.get("weight_bytes"):
        return float(metrics["weight_bytes"]), "report", sparse
    if metrics.get("params_after"):
        return float(metrics["params_after"]) * BASE_BITS / 8, "params_after", sparse
    return dense, "parameters x 16 bits", sparse


def bits_per_byte(ppl: float | None, evaluated_tokens: float, n_bytes: int | None) -> float | None:
    if not n_bytes or not ppl or not math.isfinite(ppl) or ppl <= 0:
        return None
    return math.log(ppl) * evaluated_tokens / (math.log(2) * n_bytes)


def memory_table(store, model_names: list[str] | None = None, *, include_base: bool = True) -> pd.DataFrame:
    """One row per stored run of `model_names` (all stored models when None), plus, per model and measurement
    setting, one row for the original model at 16 bits (`label` 'original (16-bit)'). Sorted by model, bytes."""
    runs = store.runs()
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    if model_names:
        runs = runs[runs.model.isin(model_names)]
    rows = []
    for r in runs.to_dict("records"):
        metrics = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not pd.isna(v)}
        n_params = parameter_count(r["model"])
        nbytes, source, sparse = weight_bytes(metrics, n_params)
        evaluated = metrics.get("evaluated_tokens")
        spec = json.loads(r["spec_json"])
        # The corpus as the user named it (a built-in name or a file path), not its display name.
        corpus_arg = spec.get("probe", {}).get("corpus", r["corpus"])
        n_bytes = evaluated_bytes(r["model"], corpus_arg, int(r["window_tokens"]), int(r["token_budget"]))
        family = _family(spec)
        common = {
            "model": r["model"],
            "corpus": r["corpus"],
            "corpus_sha256": r["corpus_sha256"],
            "window_tokens": int(r["window_tokens"]),
            "token_budget": int(r["token_budget"]),
            "n_params": n_params,
            "ppl_base": metrics.get("ppl_base"),
            "bpb_base": bits_per_byte(metrics.get("ppl_base"), evaluated, n_bytes) if evaluated else None,
        }
        rows.append(
            common
            | {
                "run_key": r["run_key"],
                "label": r["label"],
                "family": family,
                "weight_bytes": nbytes,
                "bytes_source": source,
                "weight_bytes_sparse": sparse,
                "bits_per_weight": metrics.get("bits_per_weight"),
                "ppl": metrics.get("ppl"),
                "ppl_ratio": metrics.get("ppl_ratio"),
                "kl_mean": metrics.get("kl_mean"),
                "bpb": bits_per_byte(metrics.get("ppl"), evaluated, n_bytes) if evaluated else None,
            }
        )
        if include_base:
            rows.append(
                common
                | {
                    "run_key": None,
                    "label": "original (16-bit)",
                    "family": "original",
                    "weight_bytes": None if n_params is None else n_params * BASE_BITS / 8,
                    "bytes_source": "parameters x 16 bits",
                    "ppl": metrics.get("ppl_base"),
                    "ppl_ratio": 1.0,
                    "kl_mean": 0.0,
                    "bpb": common["bpb_base"],
                }
            )
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    # One original row per (model, measurement setting), not one per run.
    base = df.run_key.isna()
    df = pd.concat(
        [df[~base], df[base].drop_duplicates(["model", "corpus_sha256", "window_tokens", "token_budget"])]
    )
    df["weight_mib"] = df.weight_bytes / 2**20
    return df.sort_values(["model", "weight_bytes"], ignore_index=True)


def _family(spec: dict) -> str:
    from ..specs import MODIFICATIONS

    kinds = [m["kind"] for m in spec.get("mods", [])]
    families = {getattr(MODIFICATIONS.get(k), "family", "other") for k in kinds}
    return "original" if not kinds else ("+".join(sorted(families)))


def pareto_front(df: pd.DataFrame, *, x: str = "weight_bytes", y: str = "bpb") -> pd.DataFrame:
    """Rows no other row beats on both `x` and `y` (smaller is better for both), sorted by `x`."""
    d = df.dropna(subset=[x, y]).sort_values([x, y])
    keep, best = [], math.inf
    for idx, value in zip(d.index, d[y], strict=True):
        if value < best:
            keep.append(idx)
            best = value
    return d.loc[keep]
