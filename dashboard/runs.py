"""Stored runs as the pages need them: results rebuilt from the store, tidy tables, headline numbers. Pure."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from hemorrhage_core.errors import HemlabError
from hemorrhage_core.runner import RunResult
from hemorrhage_core.specs import MODIFICATIONS, RunSpec
from hemorrhage_core.store import Store


def settings_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The measurement settings of a stored run, under the same names RunResult.settings uses."""
    return {
        "corpus": row.get("corpus"),
        "corpus_sha256": row.get("corpus_sha256"),
        "window": int(row["window_tokens"]) if row.get("window_tokens") is not None else None,
        "stride": int(row["stride"]) if row.get("stride") is not None else None,
        "tokens": int(row["token_budget"]) if row.get("token_budget") is not None else None,
        "code_version": row.get("code_version"),
    }


def stored_result(store: Store, run_key: str) -> RunResult | None:
    """A stored run as a RunResult (cached=True), or None if the key is not in the store.

    Raises HemlabError when the stored spec names a modification kind this code no longer knows.
    """
    stored = store.load_run(run_key)
    if stored is None:
        return None
    try:
        spec = RunSpec.from_dict(json.loads(stored.row["spec_json"]))
    except (HemlabError, KeyError, TypeError, ValueError) as exc:
        raise HemlabError(
            f"stored run {run_key[:12]} cannot be read by this version of the code: {exc}"
        ) from exc
    return RunResult(
        spec=spec,
        run_key=run_key,
        cached=True,
        metrics=stored.metrics,
        layers=stored.layers,
        heads=stored.heads,
        kl_hist=stored.kl_hist,
        settings=settings_from_row(stored.row),
    )


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
    from .sweeps import short_model

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


# -- headline numbers --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Headline:
    label: str
    value: str
    delta: str | None = None
    help: str | None = None


def _fmt(v: float, pattern: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return pattern.format(v)


# The size headline: the first of these a run reports (after its own modification) is shown.
_SIZE_HEADLINES: list[tuple[str, str, Callable[[float], str], str]] = [
    (
        "bits_per_weight",
        "Bits per weight",
        lambda v: f"{v:.2f}",
        "average storage bits of the modified weights",
    ),
    (
        "param_reduction",
        "Parameters left",
        lambda v: f"{1 - v:.1%}",
        "parameters of the structurally pruned model / original (1 − reduction)",
    ),
    (
        "achieved_sparsity",
        "Weights kept",
        lambda v: f"{1 - v:.1%}",
        "share of the weights of the pruned layers that stay non-zero (1 − achieved sparsity)",
    ),
    ("num_layers", "Blocks", lambda v: f"{v:.0f}", "transformer blocks in the changed model"),
]


def headlines(metrics: dict[str, float]) -> list[Headline]:
    """The four headline numbers of a run: perplexity ratio, KL, top-1 agreement, and a size number."""
    m = metrics
    out = [
        Headline(
            "Perplexity ratio",
            _fmt(m.get("ppl_ratio"), "×{:.3f}"),
            f"{_fmt(m.get('ppl_base'), '{:.2f}')} → {_fmt(m.get('ppl'), '{:.2f}')}",
            "modified / original perplexity on the same windows (1 = no change)",
        ),
        Headline(
            "KL mean (nats)",
            _fmt(m.get("kl_mean"), "{:.4f}"),
            f"p99 {_fmt(m.get('kl_p99'), '{:.3f}')}",
            "KL(original ‖ modified) of the next-token distribution, averaged over positions",
        ),
        Headline(
            "Top-1 agreement",
            _fmt(m.get("top1_agreement"), "{:.1%}"),
            f"top-5 overlap {_fmt(m.get('top5_overlap'), '{:.1%}')}",
            "share of positions where both models' most likely token is the same",
        ),
    ]
    # Coverage sits next to the size number it qualifies: 4.25 bits per weight over 11 % of the weights is not
    # a 4-bit model.
    coverage = m.get("coverage")
    covered = None if coverage is None else f"coverage {_fmt(coverage, '{:.1%}')}"
    for key, label, fmt, help_ in _SIZE_HEADLINES:
        if key in m and m[key] is not None and not (isinstance(m[key], float) and math.isnan(m[key])):
            out.append(
                Headline(
                    label, fmt(m[key]), covered, help_ + "; coverage: share of the blocks' weights modified"
                )
            )
            break
    return out


def settings_caption(spec: RunSpec, settings: dict[str, Any], metrics: dict[str, float], cached: bool) -> str:
    """What was measured and how: every number on the page depends on these (docs/metrics.md)."""
    sha = (settings.get("corpus_sha256") or "")[:12]
    tokens = metrics.get("evaluated_tokens")
    return (
        f"**{spec.label()}** on `{spec.model}` · corpus `{settings.get('corpus')}` (sha256 {sha}…) · "
        f"window {settings.get('window')}, stride {settings.get('stride')} · budget {settings.get('tokens'):,} tokens"
        + (f" ({int(tokens):,} predicted)" if tokens else "")
        + f" · code v{settings.get('code_version')}"
        + (" · from the store" if cached else " · just measured")
    )


def self_check_caption(info: dict[str, Any]) -> str:
    """How the profile measures this model (the self-check at load, probes/selfcheck.py), in one line."""
    if "selfcheck_output_path" not in info:
        return "Self-check: not run for this model yet."
    kernel = info["selfcheck_kernel"]
    k_diff = info.get("selfcheck_kernel_rel_diff")
    parts = [
        "Self-check against the model's own forward: logits from "
        + (
            "the profile's unembedding"
            if info["selfcheck_output_path"] == "fast"
            else "the model's own output path"
        )
        + f" (max relative difference {info['selfcheck_output_rel_diff']:.1e})",
        "corpus pass on "
        + ("the fast sdpa kernel" if kernel == "hemlab" else f"the model's own `{kernel}` attention")
        + (f" ({k_diff:.1e})" if k_diff is not None and k_diff != float("inf") else ""),
        "logit lens " + ("on" if info["selfcheck_lens"] else "off (final norm not located exactly)"),
        f"tolerance {info['selfcheck_tolerance']:.0e}",
    ]
    return " · ".join(parts) + "."
