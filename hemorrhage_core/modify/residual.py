"""What a block writes into the residual stream, found structurally, and blocks made exactly the identity.

A block's attention and MLP each add their output projection's result to the residual stream. Which Linear that
is, is read from one short forward pass (no table of names): the last Linear/Conv1D called inside the block's
attention (`structure.attention_of`) and inside its MLP (`structure.mlp_of`, or the rest of the block for
OPT-style blocks that hold fc1/fc2 themselves) whose output has the residual width. Fused MoE experts add their
3-D `down_proj` (and its bias). Zeroing those parameters makes a pre-norm block add exactly 0 (Gemma's post-norms
map 0 to 0); `check_identity` then runs the model once and refuses any block whose output is not bit for bit its
input (a post-norm block, an unknown extra path), so an identity block is never only approximately one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SpecError
from ..structure import attention_of, block_hidden, find_blocks, mlp_of, text_config
from .targets import LINEAR_TYPES

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

EXPERT_OUTPUTS = ("down_proj", "down_proj_bias")  # 3-D fused expert parameters that write the MLP output


def _probe_ids(model: PreTrainedModel) -> torch.Tensor:
    vocab = int(getattr(text_config(model), "vocab_size", 2) or 2)
    return (torch.arange(4) % max(vocab, 1))[None].to(next(model.parameters()).device)


def _hidden_of(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def residual_writers(model: PreTrainedModel) -> list[list[str]]:
    """For every block, the names (relative to the block) of the parameters that write its attention and MLP
    outputs into the residual stream. SpecError for a block where one of the two is not found."""
    blocks = find_blocks(model)
    widths: dict[int, int] = {}
    calls: dict[int, list[tuple[str, int]]] = {i: [] for i in range(len(blocks))}
    handles = []

    def block_hook(i: int):
        def hook(_module, args, kwargs):
            widths.setdefault(i, _hidden_of(args, kwargs).shape[-1])

        return hook

    def linear_hook(i: int, name: str):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                calls[i].append((name, output.shape[-1]))

        return hook

    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(block_hook(i), with_kwargs=True))
        for name, module in block.named_modules():
            if isinstance(module, LINEAR_TYPES):
                handles.append(module.register_forward_hook(linear_hook(i, name)))
    try:
        with torch.inference_mode():
            model(input_ids=_probe_ids(model), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return [_writers_of(block, calls[i], widths.get(i)) for i, block in enumerate(blocks)]


def _inside(prefix: str, name: str) -> bool:
    return name.startswith(prefix + ".")


def _writers_of(block: nn.Module, calls: list[tuple[str, int]], width: int | None) -> list[str]:
    attn, mlp = attention_of(block), mlp_of(block)
    seen = [name for name, w in calls if w == width]  # residual-width outputs, in call order
    attn_out = [name for name in seen if attn is not None and _inside(attn[0], name)][-1:]
    if mlp is not None:
        mlp_out = [name for name in seen if _inside(mlp[0], name)][-1:]
    else:  # OPT-style: the MLP's layers sit in the block itself
        mlp_out = [name for name in seen if attn is None or not _inside(attn[0], name)][-1:]
    experts = (
        [
            ".".join(filter(None, (mlp[0], name, p)))
            for name, module in mlp[1].named_modules()
            for p in EXPERT_OUTPUTS
            if isinstance(getattr(module, p, None), nn.Parameter) and getattr(module, p).dim() >= 2
        ]
        if mlp is not None
        else []
    )
    if not attn_out or not (mlp_out or experts):
        raise SpecError(
            f"cannot make an identity block of {type(block).__name__}: found output projections "
            f"{attn_out + mlp_out + experts or 'none'}, need the attention and the MLP output (the last "
            "residual-width Linear called in each, or fused MoE experts' down_proj)"
        )
    named = [(n, block.get_submodule(n)) for n in attn_out + mlp_out]
    return [f"{n}.{p}" for n, m in named for p, _ in m.named_parameters(recurse=False)] + experts


def zero_output_projections(block: nn.Module, params: list[str]) -> list[str]:
    """Zero the named parameters of `block` in place (see `residual_writers`); return their names."""
    for name in params:
        block.get_parameter(name).data.zero_()
    return params


def check_identity(model: PreTrainedModel, positions: frozenset[int]) -> None:
    """Run the model once and refuse (SpecError) if a block at `positions` changes its input at all."""
    blocks = find_blocks(model)
    worst: dict[int, float] = {}

    def hook_for(pos: int):
        def hook(_module, args, kwargs, output):
            h_in, h_out = _hidden_of(args, kwargs), block_hidden(output)
            worst[pos] = 0.0 if torch.equal(h_in, h_out) else float((h_out - h_in).abs().max())

        return hook

    handles = [blocks[p].register_forward_hook(hook_for(p), with_kwargs=True) for p in sorted(positions)]
    try:
        with torch.inference_mode():
            model(input_ids=_probe_ids(model), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    bad = {p: d for p, d in worst.items() if d != 0.0}
    if bad or len(worst) < len(positions):
        # Hooks sit only on `positions`, so a position missing from `worst` exists when `bad` is empty.
        pos = next(iter(bad), None)
        if pos is None:
            pos = min(set(positions) - set(worst))
        raise SpecError(
            f"insert_identity: zeroing the output projections of {type(blocks[pos]).__name__} does not make it the "
            f"identity (block {pos} changes its input by up to {bad.get(pos, float('nan')):.3g}: a post-norm or "
            "another path writes to the residual stream), so identity blocks are refused for this architecture"
        )
