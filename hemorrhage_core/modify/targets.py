"""Which weight matrices a modification touches, in one orientation: [out_features, in_features].

transformers' GPT-2 uses `Conv1D` (weight stored [in, out]) instead of `nn.Linear`; `weight_view` hides that so
every quantizer and pruner works on rows = output channels. `lm_head` and the embeddings are excluded unless
asked for; when `lm_head` is included and tied to the input embedding, it is untied first so that only the output
projection changes (modifying one tied tensor silently modifies the other).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

log = logging.getLogger(__name__)

LINEAR_TYPES = (nn.Linear, Conv1D)


def weight_view(module: nn.Module) -> torch.Tensor:
    """The module's weight as an [out, in] tensor that shares storage with the parameter."""
    w = module.weight.data
    return w.t() if isinstance(module, Conv1D) else w


def set_weight(module: nn.Module, w_out_in: torch.Tensor) -> None:
    """Write an [out, in] tensor back into the module's parameter, in place and in its own layout and dtype."""
    target = weight_view(module)
    target.copy_(w_out_in.to(target.dtype))


def untie_lm_head(model: nn.Module) -> None:
    """Give lm_head its own copy of the weight if it shares it with the input embedding."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is not None and emb is not None and head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
        log.info("untied lm_head from the input embedding so only the output projection is modified")


def linear_targets(model: nn.Module, *, include_lm_head: bool = False) -> Iterator[tuple[str, nn.Module]]:
    """Yield (qualified name, module) for every Linear/Conv1D weight a modification should touch."""
    head = model.get_output_embeddings()
    if include_lm_head:
        untie_lm_head(model)
        head = model.get_output_embeddings()
    for name, module in model.named_modules():
        if not isinstance(module, LINEAR_TYPES):
            continue
        if module is head and not include_lm_head:
            continue
        yield name, module
