"""Observation sites of a causal LM, captured with hooks that are always removed.

Canonical site names (TransformerLens style): `blocks.{i}.resid_post` is the residual stream after block i,
`final` the output of the final norm (what the unembedding reads), `blocks.{i}.attn.pattern` the attention
probabilities [batch, heads, query, key].
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM (Llama/Gemma/Mistral/Qwen-style or GPT-2-style)."""
    decoder = model.get_decoder()
    for attr in ("layers", "h", "blocks"):
        blocks = getattr(decoder, attr, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__}")


@contextmanager
def capture_resid_post(model: nn.Module):
    """Collect every block's output (the residual stream after it) in a list ordered by block index."""
    blocks = find_blocks(model)
    outputs: list[torch.Tensor | None] = [None] * len(blocks)

    def hook_for(i):
        def hook(_module, _inputs, output):
            outputs[i] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [block.register_forward_hook(hook_for(i)) for i, block in enumerate(blocks)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def forward_sites(model: nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One decoder pass: (final normed hidden [B, T, d], per-block residual stream [L] x [B, T, d]).

    Calls the decoder, not the LM head, so the caller can unembed position chunks and never hold a whole batch of
    full-vocabulary logits.
    """
    with torch.inference_mode(), capture_resid_post(model) as resid:
        out = model.get_decoder()(input_ids=ids, use_cache=False)
    return out.last_hidden_state, list(resid)


def unembed(model: nn.Module, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Logits from final hidden states [N, d], including Gemma-style final soft-capping. Returns float32.

    `out` [N, V] float32: written instead of a new tensor when the unembedding is a plain float32 linear layer
    (reusing one buffer across position chunks saves the page faults of a fresh ~200 MB tensor per chunk: ~10%
    of the unembedding on CPU); other heads (quantized, bf16) ignore it.
    """
    head = model.get_output_embeddings()
    with torch.inference_mode():
        if out is not None and type(head) is nn.Linear and head.weight.dtype == hidden.dtype == out.dtype:
            logits = torch.mm(hidden, head.weight.t(), out=out)
            if head.bias is not None:
                logits.add_(head.bias)
        else:
            logits = head(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def attention_patterns(model: nn.Module, ids: torch.Tensor) -> list[torch.Tensor]:
    """Attention probabilities per block, [L] x [B, H, T, T] in float32. Needs the eager attention kernel."""
    with torch.inference_mode():
        out = model(input_ids=ids, output_attentions=True, use_cache=False, logits_to_keep=1)
    attns = out.attentions
    if not attns or any(a is None for a in attns):
        raise RuntimeError(
            "the model returned no attention maps: load it with attn_implementation='eager' "
            "(sdpa silently drops output_attentions)"
        )
    return [a.float() for a in attns]
