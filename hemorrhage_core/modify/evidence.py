"""Calibration evidence: calibration sequences, activation statistics and loss gradients shared by calibrated
modifications (Wanda, SparseGPT, GBLM, Taylor, structured pruning; GPTQ and others may use the windows). Block-by-
block calibration on the outputs of already-modified blocks lives in sequential.py.

`calibration_windows` cuts calibration sequences out of a corpus; the runner caches them per (model, corpus,
n, length) and hands them to handlers through `ModContext.calibration_windows`. They are taken from the *end* of
the corpus, like the attention probe set, because the evaluation windows are taken from its start: when the
calibration corpus is the evaluation corpus, no calibration token is ever an evaluation token (checked, not
assumed), and the attention probe set at the very end is skipped too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..corpora import Corpus, probe_texts, sequence_bos
from ..errors import CorpusError
from .taps import target_inputs
from .targets import WeightTarget, as_targets

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def corpus_token_count(tokenizer, corpus: Corpus) -> int:
    """Tokens in the whole corpus (no special tokens), the unit of the overlap check below."""
    return len(tokenizer(corpus.text, add_special_tokens=False, verbose=False)["input_ids"])


def calibration_windows(
    tokenizer,
    corpus: Corpus,
    n: int,
    length: int,
    *,
    skip_tail_tokens: int = 0,
    reserved_head_tokens: int = 0,
) -> torch.Tensor:
    """`n` calibration sequences of `length` tokens from the end of `corpus`: LongTensor [n, length].

    Sequences follow the tokenizer's BOS convention (as evaluation windows do). `skip_tail_tokens` corpus tokens
    at the very end are left out (see Runner.calibration_windows); if the sequences would
    reach into the first `reserved_head_tokens` tokens (the evaluation windows), CorpusError says by how much.
    """
    if n < 1 or length < 2:
        raise CorpusError(f"calibration needs n >= 1 sequences of length >= 2, got n={n}, length={length}")
    span = length - (sequence_bos(tokenizer) is not None)  # corpus tokens per sequence
    skip = -(-skip_tail_tokens // span)  # whole sequences dropped at the end to step over the tail
    # probe_texts returns consecutive spans that end at the corpus end: the first n of n + skip are ours.
    windows = probe_texts(corpus, tokenizer, n + skip, length)[:n]
    if reserved_head_tokens:
        total = corpus_token_count(tokenizer, corpus)
        needed = (n + skip) * span + reserved_head_tokens
        if needed > total:
            raise CorpusError(
                f"calibration on {corpus.name!r} ({n} x {length} tokens from its end) would overlap the "
                f"{reserved_head_tokens} evaluation tokens at its start: the corpus has {total} tokens and "
                f"{needed} are needed. Use fewer or shorter calibration sequences, or another corpus."
            )
    return windows


# ----------------------------------------------------------------------------------------------------------------
# Activation statistics: forward hooks on Linear / Conv1D inputs, always removed.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class InputStats:
    """What the calibration inputs X [tokens, in] of one layer looked like.

    sq_norm: [in] sum over tokens of x_j² (Wanda's ‖X_j‖² before normalisation); hessian: [in, in] sum of x xᵀ
    (SparseGPT's / GPTQ's H up to a factor), only when asked for; sequences / tokens: how many were seen.
    """

    sq_norm: torch.Tensor | None = None
    hessian: torch.Tensor | None = None
    sequences: int = 0
    tokens: int = 0

    def add(self, x: torch.Tensor, *, norms: bool, hessian: bool, sequences: int | None = None) -> None:
        """x: [..., in] (the layer input for a batch of sequences, [B, T, in] in practice). `sequences`: how many
        sequences the batch covers when x is flattened (an expert's routed rows [n, in] of B sequences)."""
        self.sequences += sequences if sequences is not None else (x.shape[0] if x.dim() > 2 else 1)
        x = x.detach().reshape(-1, x.shape[-1]).float()  # [tokens, in]; fp32 sums even for half precision
        self.tokens += x.shape[0]
        if norms:
            s = x.pow(2).sum(0)
            self.sq_norm = s if self.sq_norm is None else self.sq_norm + s
        if hessian:
            h = x.t() @ x
            self.hessian = h if self.hessian is None else self.hessian + h

    @classmethod
    def pooled(cls, parts: list[InputStats]) -> InputStats:
        """The mean statistics of `parts` (experts of one layer, which saw the same sequences): see experts.py."""
        n = len(parts)

        def mean(values: Iterable[torch.Tensor | None]) -> torch.Tensor | None:
            present = [v for v in values if v is not None]
            if not present:
                return None
            total = present[0]
            for v in present[1:]:
                total = total + v
            return total / n

        return cls(
            sq_norm=mean(p.sq_norm for p in parts),
            hessian=mean(p.hessian for p in parts),
            sequences=max(p.sequences for p in parts),
            tokens=sum(p.tokens for p in parts),
        )

    def act_norm(self) -> torch.Tensor:
        """[in] ‖X_j‖₂ per sequence, as Wanda scales it: sqrt(mean over sequences of the per-sequence sum of x_j²)."""
        if self.sq_norm is None:
            raise RuntimeError("act_norm needs input statistics collected with norms=True")
        return (self.sq_norm / max(self.sequences, 1)).sqrt()


@contextmanager
def input_statistics(
    modules: Mapping[str, nn.Module | WeightTarget], *, norms: bool = True, hessian: bool = False
) -> Iterator[dict[str, InputStats]]:
    """Accumulate `InputStats` of every target's input (a Linear / Conv1D module or a `WeightTarget`, experts
    included, see taps.py) while the body runs forwards; hooks removed on exit."""
    targets = as_targets(modules)
    stats = {name: InputStats() for name in targets}
    names = {id(t): name for name, t in targets.items()}

    def add(target: WeightTarget, x: torch.Tensor, sequences: int) -> None:
        stats[names[id(target)]].add(x, norms=norms, hessian=hessian, sequences=sequences)

    with target_inputs(targets.values(), add):
        yield stats


# ----------------------------------------------------------------------------------------------------------------
# Loss gradients per weight (gradient-aware pruning: GBLM-Pruner, Taylor, LLM-Pruner).
# Memory: only the chosen Linear / Conv1D weights get `requires_grad` (never the embeddings, which hold most of
# Gemma 3's parameters), one sequence per backward pass, two fp32 accumulators per weight: for SmolLM2-135M
# (~106M pruned weights) ~1.3 GB beside the model; Gemma 3-270M's ~100M linear weights cost about the same.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GradientStats:
    """Per module name, in the [out, in] orientation of `weight_view`: `mean` = mean over sequences of the
    per-sequence gradient, `sq_sum` = sum over sequences of its square; `sequences` counted."""

    mean: dict[str, torch.Tensor] = field(default_factory=dict)
    sq_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    sequences: int = 0

    def l2(self, name: str) -> torch.Tensor:
        """[out, in] ‖G‖₂ over calibration sequences (GBLM-Pruner's gradient norm)."""
        return self.sq_sum[name].sqrt()


def _accumulate(sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    if name in sums:
        sums[name].add_(value)
    else:
        sums[name] = value.clone()


def accumulate_gradients(
    model: PreTrainedModel,
    modules: Mapping[str, nn.Module | WeightTarget],
    windows: torch.Tensor,
    *,
    mean: bool = True,
    squares: bool = True,
) -> GradientStats:
    """Gradients of the mean next-token loss of each sequence in `windows` [n, T] w.r.t. each module's weight.

    One sequence per backward pass, so `sq_sum` holds per-sequence squares (GBLM-Pruner's l2 over samples). The
    model's `requires_grad` flags are restored afterwards; its weights are not changed.
    """
    device = next(model.parameters()).device
    targets = as_targets(modules)
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    stats = GradientStats()
    try:
        for p in params:
            p.requires_grad_(False)
        for t in targets.values():
            t.parameter.requires_grad_(True)
        with torch.enable_grad():
            for row in windows:
                ids = row[None].to(device)  # [1, T]
                loss = model(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                for name, t in targets.items():
                    g = t.grad_view()
                    if mean:
                        _accumulate(stats.mean, name, g)
                    if squares:
                        _accumulate(stats.sq_sum, name, g * g)
                for t in targets.values():
                    t.parameter.grad = None
                stats.sequences += 1
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
            p.grad = None
    for name in stats.mean:
        stats.mean[name] /= max(stats.sequences, 1)
    log.info("accumulated gradients of %d weights over %d sequences", len(targets), stats.sequences)
    return stats
