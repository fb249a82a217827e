"""Every metric the tool reports, named once: its label, unit, direction, axis scale and level. No torch.

Charts, pages, the mitigation tables and the report read `METRICS` instead of keeping their own tables, so a new
metric is one entry here (its definition is in docs/metrics.md; the code that measures it in probes/).
`level`: "run" (one number per run), "layer" (per block), "head" (per layer and head).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # readable name, e.g. for a panel title or a table header
    unit: str  # axis title: "nats", "dB", "ratio", "share", ...
    higher_is_better: bool | None  # None: neither (a shift, a count)
    log_scale: bool  # spans decades: drawn on a log axis
    level: str  # "run", "layer" or "head"
    short: str = ""  # a table header where the label is too long (the label when empty)
    # The finite stand-in the store keeps for an infinite value (JSON and SQL hold no inf): values at or above
    # it read as ∞. SQNR of an unchanged layer is infinite.
    infinite_at: float | None = None

    @property
    def header(self) -> str:
        return self.short or self.label


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        # -- per run
        Metric("ppl", "perplexity", "perplexity", False, True, "run"),
        Metric("ppl_base", "perplexity of the original", "perplexity", False, True, "run"),
        Metric(
            "ppl_ratio",
            "perplexity ratio (modified / original)",
            "ratio",
            False,
            True,
            "run",
            "perplexity ratio",
        ),
        Metric("kl_mean", "KL mean (nats)", "nats", False, True, "run"),
        Metric("kl_median", "KL median (nats)", "nats", False, True, "run"),
        Metric("kl_p90", "KL p90 (nats)", "nats", False, True, "run"),
        Metric("kl_p99", "KL p99 (nats)", "nats", False, True, "run"),
        Metric("kl_max", "KL max (nats)", "nats", False, True, "run"),
        Metric("top1_agreement", "top-1 agreement", "share", True, False, "run"),
        Metric("top5_overlap", "top-5 overlap", "share", True, False, "run"),
        Metric("dp_mean", "Δp mean", "probability", None, False, "run"),
        Metric("dp_rms", "Δp RMS", "probability", False, False, "run"),
        Metric("bits_per_weight", "bits per weight", "bits", None, False, "run"),
        Metric("achieved_sparsity", "sparsity", "share", None, False, "run"),
        Metric("coverage", "coverage", "share", True, False, "run"),
        Metric("attn_js_mean", "attention JS divergence (nats)", "nats", False, False, "run"),
        # -- per run, what a sampler changes (probes/decoding.py; docs/metrics.md "Decoding metrics")
        Metric(
            "kl_reverse_mean",
            "reverse KL(modified ‖ original) mean (nats)",
            "nats",
            False,
            True,
            "run",
            "reverse KL mean",
        ),
        Metric("kl_reverse_p99", "reverse KL p99 (nats)", "nats", False, True, "run"),
        Metric("mass_cut_mean", "probability mass cut (mean)", "share", False, False, "run", "mass cut"),
        Metric("mass_cut_p90", "probability mass cut (p90)", "share", False, False, "run", "mass cut p90"),
        Metric("mass_cut_max", "probability mass cut (max)", "share", False, False, "run", "mass cut max"),
        Metric(
            "kl_forward_infinite_share",
            "positions where KL(original ‖ modified) is ∞",
            "share",
            False,
            False,
            "run",
            "KL ∞ share",
        ),
        Metric(
            "target_cut_share",
            "next token cut (probability 0)",
            "share",
            False,
            False,
            "run",
            "next token cut",
        ),
        Metric("ece", "calibration error (ECE)", "ECE", False, False, "run", "ECE"),
        Metric(
            "ece_base", "calibration error of the original (ECE)", "ECE", False, False, "run", "ECE original"
        ),
        Metric(
            "entropy_mean",
            "entropy of the next-token distribution (nats)",
            "nats",
            None,
            False,
            "run",
            "entropy",
        ),
        Metric(
            "entropy_base_mean",
            "entropy of the original (nats)",
            "nats",
            None,
            False,
            "run",
            "entropy original",
        ),
        Metric(
            "support_topk_mean",
            "support: tokens of the original's top-K kept",
            "tokens",
            None,
            False,
            "run",
            "support",
        ),
        Metric(
            "support_tail_share",
            "positions whose support reaches past the top-K",
            "share",
            None,
            False,
            "run",
            "support past top-K",
        ),
        Metric(
            "gen_matching_prefix_mean",
            "generation: matching prefix (tokens)",
            "tokens",
            True,
            False,
            "run",
            "matching prefix",
        ),
        Metric("gen_diverged_share", "generations that diverge", "share", False, False, "run", "diverged"),
        # -- per layer
        Metric("hidden_rel_error", "relative error ‖h′−h‖/‖h‖", "ratio", False, False, "layer"),
        Metric("hidden_cosine", "cosine similarity", "cosine", True, False, "layer"),
        Metric("hidden_sqnr_db", "SQNR (dB)", "dB", True, False, "layer", infinite_at=200.0),
        Metric("lens_kl", "logit-lens KL (nats)", "nats", False, True, "layer"),
        Metric("logit_lens_kl", "logit-lens KL (nats)", "nats", False, True, "layer"),
        Metric("attn_entropy_shift", "attention entropy shift (nats)", "nats", None, False, "layer"),
        Metric("cascade_ratio", "cascade ratio e(l+1)/e(l)", "ratio", False, False, "layer"),
        Metric("attn_topk_overlap", "top-k attended overlap", "share", True, False, "layer"),
        # -- per head
        Metric("attn_js", "JS divergence", "nats", False, False, "head"),
        Metric("attn_sink", "sink mass (modified)", "share", None, False, "head"),
        Metric("attn_sink_base", "sink mass (original)", "share", None, False, "head"),
    )
}


def label(name: str) -> str:
    """The metric's readable name (the raw name for one the registry does not know)."""
    return METRICS[name].label if name in METRICS else name


def header(name: str) -> str:
    """The metric's table header (its short name, else its label; the raw name for an unknown one)."""
    return METRICS[name].header if name in METRICS else name


def header_with_unit(name: str) -> str:
    """The header with its unit in brackets ("entropy (nats)"), unless the header already says it or the unit is
    a share or the measure's own name (ECE)."""
    head, u = header(name), unit(name)
    return head if not u or u in ("share", "ECE", "ratio") or f"({u})" in head else f"{head} ({u})"


def infinite_at(name: str) -> float | None:
    return METRICS[name].infinite_at if name in METRICS else None


def unit(name: str) -> str:
    return METRICS[name].unit if name in METRICS else ""


def log_scale(name: str) -> bool:
    return name in METRICS and METRICS[name].log_scale


def at_level(level: str) -> list[str]:
    """Metric names of one level, in the registry's order."""
    return [m.name for m in METRICS.values() if m.level == level]
