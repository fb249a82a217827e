"""Stored runs as the pages need them: results rebuilt from the store, tidy tables, headline numbers. Pure."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hemorrhage_core.analysis.sweep_points import short_model
from hemorrhage_core.specs import RunSpec

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


def _infinite(v: Any) -> bool:
    return isinstance(v, float) and math.isinf(v)


def _divergence_headline(m: dict[str, float]) -> Headline:
    """KL(original ‖ modified), or, where a truncating sampler makes it ∞ by definition, the reverse KL that
    stays finite (with the ∞ stated and explained)."""
    if _infinite(m.get("kl_mean")) and m.get("kl_reverse_mean") is not None:
        share = m.get("kl_forward_infinite_share")
        return Headline(
            "Reverse KL mean (nats)",
            _fmt(m.get("kl_reverse_mean"), "{:.4f}"),
            "forward KL ∞" + (f" at {_fmt(share, '{:.0%}')}" if share is not None else ""),
            "KL(modified ‖ original): sums over the tokens the sampler keeps, so it stays finite. The forward KL "
            "is infinite wherever the sampler gives probability 0 to a token the original can emit.",
        )
    return Headline(
        "KL mean (nats)",
        _fmt(m.get("kl_mean"), "{:.4f}"),
        f"p99 {_fmt(m.get('kl_p99'), '{:.3f}')}",
        "KL(original ‖ modified) of the next-token distribution, averaged over positions",
    )


def _perplexity_headline(m: dict[str, float]) -> Headline:
    cut = m.get("target_cut_share")
    if _infinite(m.get("ppl_ratio")) and cut:
        delta = f"next token cut at {_fmt(cut, '{:.1%}')} of positions"
    else:
        delta = f"{_fmt(m.get('ppl_base'), '{:.2f}')} → {_fmt(m.get('ppl'), '{:.2f}')}"
    return Headline(
        "Perplexity ratio",
        _fmt(m.get("ppl_ratio"), "×{:.3f}"),
        delta,
        "modified / original perplexity on the same windows (1 = no change). ∞ when the modified model gives "
        "some actual next token probability 0, as a truncating sampler does by definition.",
    )


def headlines(metrics: dict[str, float]) -> list[Headline]:
    """The four headline numbers of a run: perplexity ratio, KL (reverse KL where the forward one is ∞ by
    definition), top-1 agreement, and a size number (or, for a sampler that cuts, the probability mass cut)."""
    m = metrics
    out = [
        _perplexity_headline(m),
        _divergence_headline(m),
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
    else:
        if m.get("mass_cut_mean"):
            out.append(
                Headline(
                    "Probability mass cut",
                    _fmt(m["mass_cut_mean"], "{:.1%}"),
                    f"p90 {_fmt(m.get('mass_cut_p90'), '{:.1%}')}",
                    "the original's probability on the tokens the sampler drops, averaged over positions",
                )
            )
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


def export_caption(spec: RunSpec, settings: dict[str, Any], metrics: dict[str, float]) -> str:
    """The settings line written under an exported chart (plain text: an image has no markdown): what was
    changed, on which model, corpus and tokens, so a picture pasted elsewhere still says what it shows."""
    sha = (settings.get("corpus_sha256") or "")[:12]
    tokens = settings.get("tokens")
    return (
        f"{spec.label()} on {short_model(spec.model)} · corpus {settings.get('corpus')} (sha256 {sha}) · "
        f"window {settings.get('window')}, stride {settings.get('stride')} · "
        + (f"{int(tokens):,} tokens" if tokens else "")
        + f" · Hemorrhage Lab code v{settings.get('code_version')}"
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


# -- captions of charts that compare several runs ------------------------------------------------------------------

CAPTION_WIDTH = 150  # characters per caption line under an exported chart of 1000 px
CAPTION_LINES = 8  # at most; the rest is counted


def _wrapped(head: str, items: list[str]) -> list[str]:
    """`head: a, b, c, …` broken into caption lines of at most CAPTION_WIDTH characters."""
    lines, line = [], f"{head}: "
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "")
        if len(line) + len(piece) > CAPTION_WIDTH and line.strip():
            lines.append(line.rstrip())
            line = "    "
        line += piece
    return [*lines, line.rstrip()]


def _capped(lines: list[str], what: str) -> str:
    if len(lines) > CAPTION_LINES:
        lines = [*lines[: CAPTION_LINES - 1], f"… and {len(lines) - CAPTION_LINES + 1} more lines of {what}"]
    return "\n".join(lines)


def _measured(row: dict[str, Any]) -> str:
    sha = str(row.get("corpus_sha256") or "")[:12]
    tokens, window = row.get("token_budget"), row.get("window_tokens")
    return (
        f"corpus {row.get('corpus')}"
        + (f" (sha256 {sha})" if sha else "")
        + (f" · window {int(window)}" if _number(window) else "")
        + (f" · {int(tokens):,} tokens" if _number(tokens) else "")
    )


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not math.isnan(v)


def runs_caption(rows: Any) -> str | None:
    """The settings line(s) written under an exported chart of several stored runs (`views.compared_runs` or
    history rows: label, model, corpus, corpus_sha256, window_tokens, token_budget): the runs grouped by model and
    measurement, each group's changes listed, so a comparison pasted elsewhere says what it compares."""
    if rows is None or len(rows) == 0:
        return None
    groups: dict[str, list[str]] = {}
    for row in rows.to_dict("records"):
        where = f"{short_model(str(row.get('model')))} · {_measured(row)}"
        groups.setdefault(where, []).append(str(row.get("label")))
    lines = [f"{len(rows)} run(s) · Hemorrhage Lab"]
    for where, labels in groups.items():
        lines += _wrapped(where, list(dict.fromkeys(labels)))
    return _capped(lines, "runs")


def series_caption(points: Any, x_label: str, *, source: str | None = None) -> str | None:
    """The caption of a chart of curves (sweep points or the Paper page's overlay: columns series and x): every
    series (model, method, fixed settings, corpus, budget, window) with the settings measured along it; `source`
    (e.g. the paper's citation) first."""
    lines = [source] if source else []
    if points is not None and len(points):
        for series, group in points.groupby("series", sort=False):
            xs = [f"{x:g}" if isinstance(x, float) else str(x) for x in sorted(group.x.dropna().unique())]
            lines += _wrapped(f"{series} — {x_label}", xs)
    return _capped(lines, "series") if lines else None
