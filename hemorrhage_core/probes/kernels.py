"""One attention implementation that is fast for the corpus pass and returns weights for the attention probes.

transformers' `sdpa` kernel is ~15-20% faster than `eager` on CPU for the long corpus pass, but returns no
attention weights (output_attentions then silently gives nothing). The profile needs both: fast passes over the
corpus, and attention maps on the short probe set. Switching a shared model between kernels is not thread-safe,
so instead the model is given one registered implementation, "hemlab", that decides per call:

- inside `fast_attention()` (a context variable: per thread, per task): torch's scaled_dot_product_attention;
- everywhere else: the model file's own `eager_attention_forward`, so any caller that asks for attention weights
  (generation, the dashboard, other analyses) gets exactly what the eager kernel gives.

Inside `capture_prefix()` the fast branch also returns the attention probabilities of a prefix of the batch (the
attention probe set: the first tokens of the first evaluation windows), computed by the eager kernel on slices of
the same queries and keys, so the probes need no pass of their own.

The mask is chosen the same way: inside `fast_attention()` sdpa's own mask, which is no mask at all for a plain
causal window (sdpa then runs its causal kernel, ~10% faster on CPU than with an explicit float mask), elsewhere
the eager kernel's additive float mask. Both encode the same causal (and sliding-window) pattern. The base
reference and every modified copy run the same branch on the same tokens, so an unmodified model still compares
at exactly zero.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

KERNEL = "hemlab"
_FAST = contextvars.ContextVar("hemlab_fast_attention", default=False)
_EAGER: dict[type, Callable] = {}


def _eager_for(module: nn.Module) -> Callable:
    """The `eager_attention_forward` of the modeling file that defines this attention module's class."""
    cls = type(module)
    if cls not in _EAGER:
        fn = getattr(sys.modules[cls.__module__], "eager_attention_forward", None)
        if fn is None:
            raise RuntimeError(
                f"{cls.__module__} has no eager_attention_forward; load the model with eager attention"
            )
        _EAGER[cls] = fn
    return _EAGER[cls]


@dataclass
class PrefixCapture:
    """Attention probabilities of a prefix of the batch, collected during a fast pass (see `capture_prefix`)."""

    rows: int  # the first `rows` sequences of the batch ...
    length: int  # ... their first `length` positions
    maps: list[torch.Tensor] = field(default_factory=list)  # one [rows, H, length, length] per attention call


_PREFIX: contextvars.ContextVar[PrefixCapture | None] = contextvars.ContextVar("hemlab_prefix", default=None)


def _prefix_mask(attention_mask: torch.Tensor | None, rows: int, length: int, query: torch.Tensor):
    """The eager kernel's additive float mask [rows, 1, length, length] for the prefix, from the fast pass's mask
    (None: plain causal; bool: True = attend; float: already additive)."""
    if attention_mask is None:
        keep = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()[None, None]
    else:
        keep = attention_mask[:rows, :, :length, :length]
        if keep.dtype != torch.bool:
            return keep
    return torch.zeros(keep.shape, dtype=query.dtype, device=query.device).masked_fill(
        ~keep, torch.finfo(query.dtype).min
    )


def _dispatch(module, query, key, value, attention_mask, **kwargs):
    if not _FAST.get():
        return _eager_for(module)(module, query, key, value, attention_mask, **kwargs)
    out = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    prefix = _PREFIX.get()
    if prefix is not None and prefix.rows > 0:
        # Causal attention: the first `length` queries see only the first `length` keys, so these are exactly the
        # maps of the prefix run alone. The eager kernel of the model's own file computes them (soft-capping,
        # sinks, scaling as it defines them) on [rows, H, length, d] slices: ~1% of the pass, where a separate
        # eager pass over the probe set cost ~10% of a profile.
        n, t = prefix.rows, prefix.length
        _, weights = _eager_for(module)(
            module,
            query[:n, :, :t],
            key[:n, :, :t],
            value[:n, :, :t],
            _prefix_mask(attention_mask, n, t, query),
            **kwargs,
        )
        prefix.maps.append(weights.float())
    return out


def _mask(*args, **kwargs):
    # Built once per forward, inside the same context as the attention calls it serves.
    return (sdpa_mask if _FAST.get() else eager_mask)(*args, **kwargs)


AttentionInterface.register(KERNEL, _dispatch)
AttentionMaskInterface.register(KERNEL, _mask)


@contextmanager
def capture_prefix(rows: int, length: int):
    """Within a `fast_attention()` pass of a model on the "hemlab" kernel, collect the attention probabilities of
    the first `length` positions of the first `rows` sequences, one [rows, H, length, length] float32 tensor per
    attention call (per block, in execution order). Models on another kernel collect nothing."""
    capture = PrefixCapture(rows, length)
    token = _PREFIX.set(capture)
    try:
        yield capture
    finally:
        _PREFIX.reset(token)


@contextmanager
def fast_attention():
    """Within this block, models using the "hemlab" kernel run sdpa (no attention weights)."""
    token = _FAST.set(True)
    try:
        yield
    finally:
        _FAST.reset(token)


def use_fast_attention(model: PreTrainedModel) -> bool:
    """Give `model` (an eager-attention model, before it is shared) the "hemlab" kernel. Returns whether it did.

    Models loaded with another kernel (flash attention on a GPU, say) are left alone.
    """
    current = getattr(model.config, "_attn_implementation", None)
    if current == KERNEL:
        return True
    if current != "eager":
        return False
    try:
        model.set_attn_implementation(KERNEL)
    except (ValueError, KeyError, NotImplementedError) as exc:  # an architecture that refuses custom kernels
        log.info("keeping eager attention for %s: %s", type(model).__name__, exc)
        return False
    return True
