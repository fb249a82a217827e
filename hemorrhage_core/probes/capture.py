"""Observation sites of a causal LM, captured with hooks that are always removed.

Canonical site names (TransformerLens style): `blocks.{i}.resid_post` is the residual stream after block i,
`final` the output of the final norm (what the unembedding reads), `blocks.{i}.attn.pattern` the attention
probabilities [batch, heads, query, key].
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..structure import attention_of, block_hidden, decoder, find_blocks
from .kernels import KERNEL

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@contextmanager
def capture_resid_post(model: PreTrainedModel):
    """Collect every block's output (the residual stream after it) in a list ordered by block index."""
    blocks = find_blocks(model)
    outputs: list[torch.Tensor | None] = [None] * len(blocks)

    def hook_for(i):
        def hook(_module, _inputs, output):
            outputs[i] = block_hidden(output)

        return hook

    handles = [block.register_forward_hook(hook_for(i)) for i, block in enumerate(blocks)]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def forward_sites(model: PreTrainedModel, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One decoder pass: (final normed hidden [B, T, d], per-block residual stream [L] x [B, T, d]).

    Calls the decoder, not the LM head, so the caller can unembed position chunks and never hold a whole batch of
    full-vocabulary logits.
    """
    with torch.inference_mode(), capture_resid_post(model) as resid:
        out = decoder(model)(input_ids=ids, use_cache=False)
    return out.last_hidden_state, list(resid)


# What *ForCausalLM.forward does to the head's output, by the attribute that turns it on. The profile unembeds
# position chunks itself (never a batch of full-vocabulary logits), so it must apply these too; the self-check at
# load (probes/selfcheck.py) compares the result with model(ids).logits and switches to `own_logits` when an
# architecture does something not listed here.
def _softcap(model: PreTrainedModel):
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    return (lambda x: torch.tanh(x / cap) * cap) if cap else None


def _logit_scale(model: PreTrainedModel):  # Cohere, Cohere 2: logits * logit_scale
    scale = getattr(model, "logit_scale", None)
    return (lambda x: x * scale) if isinstance(scale, (int, float)) and scale != 1 else None


def _logits_scaling(model: PreTrainedModel):  # Granite, Granite MoE: logits / logits_scaling
    scale = getattr(model.config.get_text_config(), "logits_scaling", None)
    return (lambda x: x / scale) if isinstance(scale, (int, float)) and scale != 1 else None


def _lm_head_multiplier(model: PreTrainedModel):  # Falcon-H1: lm_head(h) * lm_head_multiplier
    scale = getattr(getattr(model, "model", None), "lm_head_multiplier", None)
    return (lambda x: x * scale) if isinstance(scale, (int, float)) and scale != 1 else None


OUTPUT_TRANSFORMS = (_logit_scale, _logits_scaling, _lm_head_multiplier, _softcap)  # in forward's order

OWN_LOGITS = (
    "_hemlab_own_logits"  # set on a model (by the self-check) whose logits `unembed` cannot reproduce
)
_SCALINGS = (_logit_scale, _logits_scaling, _lm_head_multiplier)  # the linear ones of OUTPUT_TRANSFORMS


@dataclass(frozen=True)
class LinearHead:
    """A head whose float32 logits are `scale * (hidden @ weight.T + bias)`, so that any expectation of them over
    the vocabulary is an expectation of `weight`'s rows dotted with `hidden` (probes/exact_kl.py)."""

    weight: torch.Tensor  # [V, d] float32
    bias: torch.Tensor | None  # [V] float32
    scale: float


def linear_head(model: PreTrainedModel) -> LinearHead | None:
    """The model's unembedding as a `LinearHead`, or None when `unembed` does more than a float32 linear map and
    constant scalings (a soft-cap, another head type, a bf16 head whose logits are rounded to bf16, a model on
    `own_logits`)."""
    head = model.get_output_embeddings()
    if model.__dict__.get(OWN_LOGITS) or type(head) is not nn.Linear or head.weight.dtype != torch.float32:
        return None
    if _softcap(model) is not None:
        return None
    scale = 1.0
    probe = torch.ones(1)
    for transform in _SCALINGS:
        fn = transform(model)
        if fn is not None:
            scale *= float(fn(probe))  # each is x * c or x / c: its value at 1 is its factor
    return LinearHead(head.weight, head.bias, scale)


def unembed(model: PreTrainedModel, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [N, V] float32 from final hidden states [N, d], as the model's own forward computes them.

    `out` [N, V] float32: written instead of a new tensor when the unembedding is a plain float32 linear layer
    (reusing one buffer across position chunks saves the page faults of a fresh ~200 MB tensor per chunk: ~10%
    of the unembedding on CPU); other heads (quantized, bf16) ignore it.
    """
    if model.__dict__.get(OWN_LOGITS):
        return own_logits(model, hidden)
    head = model.get_output_embeddings()
    with torch.inference_mode():
        if out is not None and type(head) is nn.Linear and head.weight.dtype == hidden.dtype == out.dtype:
            logits = torch.mm(hidden, head.weight.t(), out=out)
            if head.bias is not None:
                logits.add_(head.bias)
        else:
            logits = head(hidden).float()
        for transform in OUTPUT_TRANSFORMS:
            fn = transform(model)
            if fn is not None:
                logits = fn(logits)
    return logits


def own_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] float32 of final hidden states [N, d] through the model's own *ForCausalLM.forward: its
    decoder is replaced, for this call, by one that returns `hidden`, so whatever forward does after the decoder
    (head, scalings, caps) is applied exactly as written. Not thread-safe on a shared model (the runner
    serialises computations)."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    stack = decoder(model)
    stack.forward = lambda *args, **kwargs: BaseModelOutputWithPast(last_hidden_state=hidden[None])
    try:
        with torch.inference_mode():
            dummy = torch.zeros(1, hidden.shape[0], dtype=torch.long, device=hidden.device)
            logits = model(input_ids=dummy, use_cache=False).logits[0]
    finally:
        del stack.forward
    return logits.float()


def attention_patterns(model: PreTrainedModel, ids: torch.Tensor) -> list[torch.Tensor | None]:
    """Attention probabilities per block, [L] x [B, H, T, T] float32, None for blocks without attention (Mamba,
    recurrent layers of hybrids). Read from each block's attention module output, so it needs the eager kernel."""
    blocks = find_blocks(model)
    maps: list[torch.Tensor | None] = [None] * len(blocks)
    handles = []

    def hook_for(i: int):
        def hook(_module, _args, output):
            weights = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if isinstance(weights, torch.Tensor) and weights.dim() == 4:
                maps[i] = weights.float()

        return hook

    attentions = {i: found[1] for i, block in enumerate(blocks) if (found := attention_of(block)) is not None}
    with_attention = list(attentions)
    for i, attn in attentions.items():
        handles.append(attn.register_forward_hook(hook_for(i)))
    try:
        with torch.inference_mode():
            try:
                model(input_ids=ids, output_attentions=True, use_cache=False, logits_to_keep=1)
            except TypeError:  # a forward without output_attentions (state-space models)
                model(input_ids=ids, use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    silent = [i for i in with_attention if maps[i] is None]
    if silent:
        kernel = getattr(model.config, "_attn_implementation", None)
        if kernel not in ("eager", KERNEL):  # sdpa and flash kernels drop the weights silently
            raise RuntimeError(
                "the model returned no attention maps: load it with attn_implementation='eager' "
                "(sdpa silently drops output_attentions)"
            )
        # On the eager kernel a module of an attention-like class that returns no weights is not softmax
        # attention (RWKV's time mixing, linear attention): those blocks have no maps, like Mamba's.
        log.info(
            "blocks %s of %s return no attention weights: no attention rows for them",
            silent,
            type(model).__name__,
        )
    return maps
