"""Logit lens: read a block's residual stream as a next-token distribution through the final norm and unembedding.

The final norm is whatever lies between the last block and the head (`structure.apply_final`).

Applied to the base model's h_l and the modified model's h'_l (both through the *base* model's final norm and
unembedding, so only the residual stream differs), KL(lens(h_l) || lens(h'_l)) shows at which depth predictive
information is lost (docs/metrics.md §2). It is full-vocabulary and exact, so it is computed on a small,
fixed subset of positions per batch (`lens_rows`); the count is recorded with the results.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..structure import apply_final
from .capture import unembed
from .metrics import kl_logits

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LENS_ROWS_PER_BATCH = (
    16  # positions per batch: 16 x L layers x 2 unembeddings ~ 5% of a SmolLM2 batch's FLOPs
)


def lens_rows(n_rows: int, k: int = LENS_ROWS_PER_BATCH) -> torch.Tensor:
    """k row indices spread evenly over 0..n_rows-1 (all rows when there are fewer): LongTensor [min(k, n)]."""
    if n_rows <= k:
        return torch.arange(n_rows)
    return torch.linspace(0, n_rows - 1, k).round().long()


def lens_logits(
    model: PreTrainedModel, hidden: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits [N, V] float32 of residual-stream vectors `hidden` [N, d] read through `model`'s final norm and
    unembedding (with Gemma-style soft-capping; `out`: a buffer to write them into, see `capture.unembed`)."""
    with torch.inference_mode():
        return unembed(model, apply_final(model, hidden.to(next(model.parameters()).dtype)), out=out)


# Rows of the KL computed at once: 64 x 49k-vocabulary floats is 12.6 MB, under glibc's mmap threshold (32 MB at
# most), so the temporaries reuse heap memory. Larger temporaries are fresh mmaps whose first touch faults in every
# page: in a profile that cost more than the KL arithmetic itself (~0.7 s for 480 rows).
LENS_CHUNK = 64


def lens_kl(model: PreTrainedModel, base_hidden: torch.Tensor, mod_hidden: torch.Tensor) -> torch.Tensor:
    """Exact KL(lens(base) || lens(mod)) per row [N] (float64) of residual-stream vectors [N, d], both read
    through `model`'s final norm and unembedding.

    Both sides are unembedded in one matmul each (small row blocks would make the matmul itself ~2x slower per
    row) into buffers allocated once, then compared LENS_CHUNK rows at a time.
    """
    n = base_hidden.shape[0]
    vocab = getattr(model.get_output_embeddings(), "out_features", None)

    def buffer():
        return torch.empty(n, vocab, device=base_hidden.device) if vocab else None

    p = lens_logits(model, base_hidden, out=buffer())
    q = lens_logits(model, mod_hidden, out=buffer())
    parts = [kl_logits(p[i : i + LENS_CHUNK], q[i : i + LENS_CHUNK]) for i in range(0, n, LENS_CHUNK)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def predicting_rows(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Select flattened predicting positions from a block output [B, T, d] -> [len(rows), d].

    Row r is window r // (T-1), position r % (T-1): the layout of `reference.position_logprobs`.
    """
    flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    return flat[rows.to(flat.device)]
