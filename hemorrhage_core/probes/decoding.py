"""Metrics of the distribution a user samples from: truncated support, reverse KL, confidence calibration.

Truncating samplers (top-k, top-p, min-p) give probability 0 to tokens the original model can emit, so the
forward KL(P_base || P_mod) is infinite at those positions by definition. What stays finite and informative:

- `mass_cut`: the original model's probability on the tokens the modified distribution gives 0;
- `kl_reverse`: KL(P_mod || P_base), which sums over the modified support only;
- `kl_forward_infinite_share`: the share of positions where the forward KL is infinite;
- `target_cut_share`: the share of positions whose reference token has probability 0 (perplexity is then inf).

The base distribution is known as its top-K plus one tail bucket (see reference.py), so `kl_reverse` and
`mass_cut` are computed on those K + 1 outcomes. `kl_reverse` is a lower bound of the full reverse KL (log-sum
inequality), exact when the modified support lies inside the base top-K. `mass_cut` is exact when the cut set
lies inside the top-K or covers the whole tail, and a lower bound when a tail is only partly cut (the base
probabilities of individual tail tokens are not kept). generation.py measures both exactly from full logits.

Entropy and support (what a sampler leaves to draw from), on the same K + 1 outcomes:
- `entropy_mean` / `entropy_base_mean`: H = -sum q log q of the modified / original distribution, the tail counted
  as one outcome: a lower bound of the full-vocabulary entropy, exact when the support lies inside the top-K;
- `support_topk_mean`: how many of the original's top-K tokens keep a probability above 0 (K when none is cut);
  `support_tail_share`: the share of positions where some token outside the top-K keeps probability.

Expected calibration error (ECE) uses 15 equal-width bins of the modified model's top-1 probability:
ECE = sum_b (n_b / N) * |accuracy_b - confidence_b|, accuracy being the share of positions whose argmax is the
reference (next) token (`ece`); `ece_base` is the original model's own ECE on the same tokens. (Accuracy against
the original's argmax is not used: the original itself would score 1 - its mean confidence, a number that says
nothing about calibration.)
"""

from __future__ import annotations

import torch

from .metrics import VocabSummary, log_tail_mass, quantile_summary

ECE_BINS = 15


def support_divergence(
    base_top_lp: torch.Tensor,
    base_tail_lp: torch.Tensor,
    top_ids: torch.Tensor,
    mod_logprobs: torch.Tensor | None = None,
    *,
    mod_top: torch.Tensor | None = None,
    mod_tail: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kl_reverse [N], mass_cut [N]) from the base top-K [N, K] + tail [N] and modified log-probs [N, V] (or,
    instead of those, the modified model's log-probs on the top-K ids `mod_top` [N, K] and its log tail `mod_tail`).

    kl_reverse = sum over the K + 1 outcomes with q > 0 of q (log q - log p); 0 log 0 = 0, so cut tokens add
    nothing. mass_cut = base mass on the top-K tokens with q = 0, plus the base tail when q's tail is 0.
    """
    if mod_top is None or mod_tail is None:
        if mod_logprobs is None:
            raise ValueError("support_divergence needs mod_logprobs, or both mod_top and mod_tail")
        mod_top = mod_logprobs.gather(1, top_ids.long()) if mod_top is None else mod_top  # [N, K]
        mod_tail = log_tail_mass(mod_logprobs, top_ids) if mod_tail is None else mod_tail  # [N]
    q_top, q_tail = mod_top.exp(), mod_tail.exp()
    head = torch.where(q_top > 0, q_top * (mod_top - base_top_lp), torch.zeros_like(q_top)).sum(-1)
    tail = torch.where(q_tail > 0, q_tail * (mod_tail - base_tail_lp), torch.zeros_like(q_tail))
    p_top = base_top_lp.exp()
    cut_top = torch.where(torch.isneginf(mod_top), p_top, torch.zeros_like(p_top)).sum(-1)
    cut_tail = torch.where(torch.isneginf(mod_tail), base_tail_lp.exp(), torch.zeros_like(q_tail))
    return head + tail, cut_top + cut_tail


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = ECE_BINS
) -> float:
    """ECE over equal-width confidence bins: sum_b (n_b / N) |mean(correct_b) - mean(confidence_b)|.

    confidence: [N] in [0, 1]; correct: [N] bool.
    """
    conf = confidence.double().flatten()
    hit = correct.double().flatten()
    if conf.numel() == 0:
        return float("nan")
    # Bin b holds (b/n, (b+1)/n]; confidence 0 goes to the first bin.
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = torch.bincount(idx, weights=hit, minlength=n_bins)
    return float((hit_sum - conf_sum).abs().sum() / conf.numel())


def _entropy(top_lp: torch.Tensor, tail_lp: torch.Tensor) -> torch.Tensor:
    """-sum q log q over the K + 1 outcomes (top-K [N, K] and tail [N] log-probabilities), 0 log 0 = 0."""

    def plogp(lp: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.isfinite(lp), lp.exp() * lp, torch.zeros_like(lp))

    return -(plogp(top_lp).sum(-1) + plogp(tail_lp))


class PredictionStats:
    """Streams the decoding metrics above over position chunks; keeps O(N) scalars, never a distribution."""

    PARTS = (
        "kl_reverse",
        "mass_cut",
        "infinite",
        "target_cut",
        "conf",
        "hit",
        "base_conf",
        "base_hit",
        "entropy",
        "entropy_base",
        "support",
        "tail_kept",
    )

    def __init__(self):
        self._parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.PARTS}

    def add(
        self,
        base_top_lp: torch.Tensor,
        base_tail_lp: torch.Tensor,
        summary: VocabSummary,
        targets: torch.Tensor,
    ) -> None:
        """One chunk: base top-K [N, K] / tail [N], the modified model's summary on the base top-K ids
        (`metrics.summarize_logits`), reference ids [N]."""
        kl_rev, cut = support_divergence(
            base_top_lp,
            base_tail_lp,
            summary.top_ids,
            mod_top=summary.top_lp,
            mod_tail=summary.tail_lp,
        )
        targets = targets.long()
        values = {
            "kl_reverse": kl_rev,
            "mass_cut": cut,
            "infinite": summary.infinite,
            "target_cut": torch.isneginf(summary.target_lp),
            "conf": summary.best_lp[:, 0].exp(),
            "hit": summary.best_ids[:, 0] == targets,
            "base_conf": base_top_lp[:, 0].exp(),
            "base_hit": summary.top_ids[:, 0].long() == targets,
            "entropy": _entropy(summary.top_lp, summary.tail_lp),
            "entropy_base": _entropy(base_top_lp, base_tail_lp),
            "support": torch.isfinite(summary.top_lp).sum(-1),
            "tail_kept": torch.isfinite(summary.tail_lp),
        }
        for k, v in values.items():
            self._parts[k].append(v.detach().cpu())

    def results(self) -> dict[str, float]:
        cat = {k: torch.cat(v) for k, v in self._parts.items()}
        mass_cut = cat["mass_cut"].double()
        return {
            **quantile_summary(cat["kl_reverse"].double(), "kl_reverse"),
            "mass_cut_mean": float(mass_cut.mean()),
            "mass_cut_p90": quantile_summary(mass_cut, "m")["m_p90"],
            "mass_cut_max": float(mass_cut.max()),
            "kl_forward_infinite_share": float(cat["infinite"].double().mean()),
            "target_cut_share": float(cat["target_cut"].double().mean()),
            "ece": expected_calibration_error(cat["conf"], cat["hit"]),
            "ece_base": expected_calibration_error(cat["base_conf"], cat["base_hit"]),
            "entropy_mean": float(cat["entropy"].double().mean()),
            "entropy_base_mean": float(cat["entropy_base"].double().mean()),
            "support_topk_mean": float(cat["support"].double().mean()),
            "support_tail_share": float(cat["tail_kept"].double().mean()),
        }
