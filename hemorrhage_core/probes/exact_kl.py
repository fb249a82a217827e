"""Exact full-vocabulary KL(P_base || P_mod) per position, from a reference that keeps no base logits.

For logits a (base) and b (modified) with log-normalisers log Z_a, log Z_b:

    KL(P || Q) = sum_v p_v (a_v - b_v) - log Z_a + log Z_b = E_P[a - b] - log Z_a + log Z_b

Both normalisers are known exactly: log Z_b from the profile's own summary of the modified logits
(`metrics.summarize_logits`), log Z_a stored per position in the reference (float64). The cross term E_P[a - b]
needs P over the whole vocabulary, which is not stored; it is obtained exactly in one of two ways:

- `MOMENTS`, the common case: when both heads compute scale * (h @ W.T + c) with the same W and c (every
  modification leaves lm_head alone unless `include_lm_head`; a temperature changes only the scale), the KL is
  split at the base's top-K ids S (`metrics.kl_head_tail`). On S both models' log-probabilities are in the
  summaries already. Over the tail, sum_{v not in S} p_v b_v = scale_b * (mu . h_b + c_bar) with
  mu = sum_{v not in S} p_v W_v and c_bar = sum_{v not in S} p_v c_v, because an expectation of a linear map is the
  map of the expectation. The reference stores mu (one d-vector per position, float32), c_bar and the base's own
  tail term (float64), computed once when it is built; the profile then pays one d-length dot product per
  position. Splitting at S (rather than taking mu over the whole vocabulary) keeps the float32 rounding of the
  logits where it cancels, as it does in any KL of rounded logits: only the tail's share of it is left. An
  unmodified model has h_b = h_a bit for bit, so every term is exactly 0.
- `LOGITS`, everything else (a modified or quantized lm_head, a soft-capped or bf16 head, a model the self-check put
  on its own forward, a non-linear logit transform: top-k/p, min-p, a repetition penalty): the base logits are
  recomputed from the base's final hidden states (stored in the reference in the model's dtype) through the base
  model's own unembedding. Exact as well, at the cost of one more unembedding and two passes over the vocabulary.

Without the base model (`profile_model(base_model=None)`) the second way is impossible and the first cannot be
verified, so the profile falls back to the top-K + tail coarsening (`TOPK`, `metrics.kl_topk_parts`, a lower
bound), logs a warning and reports `kl_exact` = 0.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch

from .capture import LinearHead, linear_head, unembed
from .metrics import (
    VocabSummary,
    cross_from_logits_,
    expected_logit,
    kl_from_cross,
    kl_head_tail,
    kl_topk_parts,
)

if TYPE_CHECKING:  # modify/ imports probes/ (the reference's helpers): no import of it at load time
    from transformers import PreTrainedModel

    from ..modify.base import ModifiedModel

log = logging.getLogger(__name__)

MOMENTS, LOGITS, TOPK = "moments", "logits", "topk"


def reference_moments(
    head: LinearHead, probs: torch.Tensor, top_ids: torch.Tensor, hidden: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What the reference stores for the `MOMENTS` path, for one chunk: the moments of P's tail (outside its top-K
    ids [R, K]) from P [R, V] float32 (as computed from the stored log-normaliser; overwritten) and the final
    hidden states [R, d] that produced it. The top-K part of the KL is read from the summaries instead
    (`metrics.kl_head_tail`)."""
    with torch.inference_mode():
        probs.scatter_(1, top_ids.long(), 0.0)
        mu = torch.mm(probs, head.weight)  # [R, d]: sum over the tail of p_v W_v
        bias = (
            torch.mv(probs, head.bias).double()
            if head.bias is not None
            else torch.zeros(probs.shape[0], dtype=torch.float64, device=probs.device)
        )
    return {"mu_tail": mu, "bias_tail": bias, "mean_tail": expected_logit(mu, hidden, head.scale, bias)}


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b.to(a.device)))


def moments_scale(mod: ModifiedModel, base_model: PreTrainedModel) -> float | None:
    """The modified logits' scale when they are scale * (h @ W.T + c) with the base head's W and c (the `MOMENTS`
    path applies), else None."""
    from ..modify.base import LINEAR_SCALE  # see TYPE_CHECKING above

    base, head = linear_head(base_model), linear_head(mod.model)
    if base is None or head is None:
        return None
    scales = [s for fn in mod.logit_transforms if (s := getattr(fn, LINEAR_SCALE, None)) is not None]
    if len(scales) != len(mod.logit_transforms):  # some transform is not a pure scale
        return None
    if not (_same(base.weight, head.weight) and _same(base.bias, head.bias)):
        return None
    return head.scale * math.prod(scales)


class ExactKL:
    """Per-position KL of one profile: picks the path once (module docstring), then serves every chunk."""

    def __init__(self, mod: ModifiedModel, meta: dict, base_model: PreTrainedModel | None):
        self.base_model = base_model
        self.scale = None
        if base_model is None:
            self.path = TOPK
            log.warning(
                "no base model given: KL is the top-K + tail lower bound, not the exact full-vocabulary KL"
            )
        else:
            self.scale = moments_scale(mod, base_model) if meta.get("moments") else None
            self.path = MOMENTS if self.scale is not None else LOGITS
        log.info("exact KL path: %s", self.path)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def exact(self) -> bool:
        return self.path != TOPK

    def cross(
        self, ref: dict, rows: slice, logits: torch.Tensor, hidden: torch.Tensor
    ) -> torch.Tensor | None:
        """E_P[a - b] [R] float64 for the modified logits [R, V] of the reference rows `rows` and the modified
        model's final hidden states [R, d] that produced them. Call before the logits are summarised (the
        summary overwrites them)."""
        if self.path == MOMENTS:  # the tail's part of E_P[a - b]
            if self.scale is None:
                raise RuntimeError("exact KL: the moments path needs the head's scale")
            device = hidden.device
            mean_b = expected_logit(
                ref["mu_tail"][rows].to(device), hidden, self.scale, ref["bias_tail"][rows].to(device)
            )
            return ref["mean_tail"][rows].to(device) - mean_b
        if self.path == LOGITS:
            if self.base_model is None:
                raise RuntimeError("exact KL: the logits path needs the base model")
            n, device = logits.shape[0], logits.device
            if self._buffers is None or self._buffers[0].shape[0] < n:
                self._buffers = (torch.empty_like(logits), torch.empty_like(logits))
            base_logits = unembed(self.base_model, ref["final"][rows].to(device), out=self._buffers[0][:n])
            return cross_from_logits_(
                base_logits, ref["log_z"][rows].to(device), logits, self._buffers[1][:n]
            )
        return None

    def kl(
        self,
        cross: torch.Tensor | None,
        ref: dict,
        rows: slice,
        summary: VocabSummary,
        base_top: torch.Tensor,
        base_tail: torch.Tensor,
    ) -> torch.Tensor:
        """KL(P_base || P_mod) per row [R]: exact (float64) on the `MOMENTS` and `LOGITS` paths."""
        if cross is None:
            return kl_topk_parts(base_top, base_tail, summary.top_lp, summary.tail_lp)
        log_z = ref["log_z"][rows].to(cross.device)
        if self.path == MOMENTS:
            return kl_head_tail(base_top, summary.top_lp, cross, base_tail, log_z, summary.log_z)
        return kl_from_cross(cross, log_z, summary.log_z)
