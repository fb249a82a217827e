"""One attention implementation that is fast for the corpus pass and returns weights for the attention probes.

transformers' `sdpa` kernel is ~15-20% faster than `eager` on CPU for the long corpus pass, but returns no
attention weights (output_attentions then silently gives nothing). The profile needs both: fast passes over the
corpus, and attention maps on the short probe set. Switching a shared model between kernels is not thread-safe,
so instead the model is given one registered implementation, "hemlab", that decides per call:

- inside `fast_attention()` (a context variable: per thread, per task): torch's scaled_dot_product_attention;
- everywhere else: the model file's own `eager_attention_forward`, so any caller that asks for attention weights
  (generation, the dashboard, other analyses) gets exactly what the eager kernel gives.

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

from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

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


def _dispatch(module, query, key, value, attention_mask, **kwargs):
    if _FAST.get():
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return _eager_for(module)(module, query, key, value, attention_mask, **kwargs)


def _mask(*args, **kwargs):
    # Built once per forward, inside the same context as the attention calls it serves.
    return (sdpa_mask if _FAST.get() else eager_mask)(*args, **kwargs)


AttentionInterface.register(KERNEL, _dispatch)
AttentionMaskInterface.register(KERNEL, _mask)


@contextmanager
def fast_attention():
    """Within this block, models using the "hemlab" kernel run sdpa (no attention weights)."""
    token = _FAST.set(True)
    try:
        yield
    finally:
        _FAST.reset(token)


def use_fast_attention(model: nn.Module) -> bool:
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
