"""Logit lens: read a block's residual stream as a next-token distribution through the final norm and unembedding.

Applied to the base model's h_l and the modified model's h'_l (both through the *base* model's final norm and
unembedding, so only the residual stream differs), KL(lens(h_l) || lens(h'_l)) shows at which depth predictive
information is lost (../shared/guide/metrics.md §2). It is full-vocabulary and exact, so it is computed on a small,
fixed subset of positions per batch (`lens_rows`); the count is recorded with the results.
"""

from __future__ import annotations

import torch
from torch import nn

from .capture import unembed

LENS_ROWS_PER_BATCH = (
    16  # positions per batch: 16 x L layers x 2 unembeddings ~ 5% of a SmolLM2 batch's FLOPs
)


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the decoder applies before the unembedding (Llama/Gemma `norm`, GPT-2 `ln_f`, NeoX)."""
    decoder = model.get_decoder()
    for attr in ("norm", "ln_f", "final_layernorm", "final_layer_norm"):
        module = getattr(decoder, attr, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"cannot find the final norm of {type(model).__name__}")


def lens_rows(n_rows: int, k: int = LENS_ROWS_PER_BATCH) -> torch.Tensor:
    """k row indices spread evenly over 0..n_rows-1 (all rows when there are fewer): LongTensor [min(k, n)]."""
    if n_rows <= k:
        return torch.arange(n_rows)
    return torch.linspace(0, n_rows - 1, k).round().long()


def lens_logprobs(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [N, V] float32 of residual-stream vectors `hidden` [N, d] read through `model`'s final
    norm and unembedding (with Gemma-style soft-capping, see `capture.unembed`)."""
    norm = final_norm(model)
    param = next(norm.parameters(), None)
    dtype = param.dtype if param is not None else next(model.parameters()).dtype
    with torch.inference_mode():
        return torch.log_softmax(unembed(model, norm(hidden.to(dtype))), dim=-1)


def predicting_rows(hidden: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Select flattened predicting positions from a block output [B, T, d] -> [len(rows), d].

    Row r is window r // (T-1), position r % (T-1): the layout of `reference.position_logprobs`.
    """
    flat = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    return flat[rows.to(flat.device)]
