"""Depth changes: layer duplication (SOLAR), identity-block insertion (LLaMA-Pro) and layer removal.

Every change is expressed as a *plan*: the new block list as indices into the current one (a source may appear
several times; its first appearance keeps the module, later ones are deep copies, so no two blocks share
weights and later modifications never hit one tensor twice). `rebuild_blocks` then applies the plan and keeps
the rest of the model consistent with it:

- `state.layer_map`: each original block -> the first appearance of its current block (for a duplicated or
  identity-expanded section that is the original copy, whose output equals the base's up to that depth);
- `layer_idx` of every module in a block (the KV cache is indexed by it);
- `config.num_hidden_layers` (Llama-style decoders run `layers[:num_hidden_layers]`) and per-layer config lists
  such as Gemma 3's `layer_types` (sliding vs full attention), which move with their blocks.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

from ..errors import SpecError
from ..specs.depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers
from ..structure import find_blocks
from .base import ModContext, ModifiedModel, handles
from .targets import LINEAR_TYPES

log = logging.getLogger(__name__)

# Leaf names of the projections that write a block's output into the residual stream: Llama/Gemma/Mistral/Qwen
# (o_proj, down_proj), GPT-2 (c_proj in attn and mlp), GPT-NeoX (dense, dense_4h_to_h), OPT/Phi (out_proj, fc2),
# T5-style (wo).
OUTPUT_PROJECTIONS = frozenset(
    {"o_proj", "down_proj", "c_proj", "dense", "dense_4h_to_h", "out_proj", "fc2", "wo"}
)
# Config attributes holding one entry per block; they are permuted with the blocks.
PER_LAYER_CONFIG_LISTS = ("layer_types", "no_rope_layers")


def zero_output_projections(block: nn.Module) -> list[str]:
    """Zero the weights and biases of every output projection in `block`, in place; return their names.

    With both the attention and the MLP output at exactly 0, a pre-norm block adds exactly 0 to the residual
    stream (Gemma's post-norms map 0 to 0), so the block is the identity bit for bit.
    """
    zeroed = []
    for name, module in block.named_modules():
        if name.rsplit(".", 1)[-1] in OUTPUT_PROJECTIONS and isinstance(module, LINEAR_TYPES):
            module.weight.data.zero_()
            if getattr(module, "bias", None) is not None:
                module.bias.data.zero_()
            zeroed.append(name)
    if len(zeroed) < 2:
        raise SpecError(
            f"cannot make an identity block of {type(block).__name__}: found output projections {zeroed or 'none'}, "
            f"need the attention and the MLP output (known names: {', '.join(sorted(OUTPUT_PROJECTIONS))})"
        )
    return zeroed


def rebuild_blocks(state: ModifiedModel, plan: list[int], zero_output: frozenset[int] = frozenset()) -> None:
    """Replace the block list of `state.model` with `[blocks[j] for j in plan]`, in place.

    `zero_output`: positions of the new list whose block becomes an identity copy (they must be repeats, never
    the first appearance of a block, or an original block would be destroyed).
    """
    blocks = find_blocks(state.model)
    old = list(blocks)
    if not plan:
        raise SpecError("a depth change cannot remove every block")
    first: dict[int, int] = {}
    new_blocks = []
    for pos, j in enumerate(plan):
        if j in first:
            block = copy.deepcopy(old[j])
        else:
            first[j] = pos
            block = old[j]
        if pos in zero_output:
            if first[j] == pos:
                raise ValueError(f"plan position {pos} is the original block {j}: only copies may be zeroed")
            zero_output_projections(block)
        new_blocks.append(block)

    del blocks[:]
    blocks.extend(new_blocks)
    for pos, block in enumerate(blocks):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = pos
    cfg = state.model.config.get_text_config()
    for name in PER_LAYER_CONFIG_LISTS:
        values = getattr(cfg, name, None)
        if isinstance(values, list) and len(values) == len(old):
            setattr(cfg, name, [values[j] for j in plan])
    cfg.num_hidden_layers = len(plan)
    state.layer_map = [None if j is None else first.get(j) for j in state.layer_map]
    state.report["num_layers"] = float(len(plan))
    state.report["param_count"] = float(sum(p.numel() for p in state.model.parameters()))
    log.info("block list rebuilt: %d -> %d blocks", len(old), len(plan))


def _current_depth(state: ModifiedModel) -> int:
    return len(find_blocks(state.model))


def _check_indices(indices, depth: int, what: str) -> None:
    bad = [i for i in indices if i >= depth]
    if bad:
        raise SpecError(f"{what}: block(s) {bad} do not exist; the model has {depth} blocks (0..{depth - 1})")


def duplicate_plan(depth: int, start: int, end: int, times: int) -> list[int]:
    """Blocks [start, end) repeated `times` more times right after block end-1."""
    return [*range(end), *list(range(start, end)) * times, *range(end, depth)]


def upscale_plan(depth: int, overlap: int) -> list[int]:
    """SOLAR: [0, depth - overlap) followed by [overlap, depth)."""
    return [*range(depth - overlap), *range(overlap, depth)]


def identity_plan(depth: int, after: set[int]) -> tuple[list[int], frozenset[int]]:
    """Each block, then a copy of it after every block in `after`; returns (plan, positions of the copies)."""
    plan, zeroed = [], set()
    for j in range(depth):
        plan.append(j)
        if j in after:
            zeroed.add(len(plan))
            plan.append(j)
    return plan, frozenset(zeroed)


@handles(DuplicateLayers)
def apply_duplicate(state: ModifiedModel, mod: DuplicateLayers, ctx: ModContext) -> None:
    depth = _current_depth(state)
    if mod.end > depth:
        raise SpecError(
            f"duplicate_layers: end={mod.end} is past the last block; the model has {depth} blocks"
        )
    rebuild_blocks(state, duplicate_plan(depth, mod.start, mod.end, mod.times))


@handles(DepthUpscale)
def apply_upscale(state: ModifiedModel, mod: DepthUpscale, ctx: ModContext) -> None:
    depth = _current_depth(state)
    if 2 * mod.overlap >= depth:
        raise SpecError(
            f"depth_upscale: overlap={mod.overlap} must be below half the depth ({depth} blocks), "
            "or the up-scaled model would not be deeper"
        )
    rebuild_blocks(state, upscale_plan(depth, mod.overlap))


@handles(InsertIdentity)
def apply_identity(state: ModifiedModel, mod: InsertIdentity, ctx: ModContext) -> None:
    depth = _current_depth(state)
    after = set(mod.after) if mod.after else set(range(mod.every - 1, depth, mod.every))
    if not after:
        raise SpecError(f"insert_identity: every={mod.every} selects no block of a {depth}-block model")
    _check_indices(after, depth, "insert_identity")
    plan, zeroed = identity_plan(depth, after)
    rebuild_blocks(state, plan, zeroed)


@handles(RemoveLayers)
def apply_remove(state: ModifiedModel, mod: RemoveLayers, ctx: ModContext) -> None:
    depth = _current_depth(state)
    _check_indices(mod.layers, depth, "remove_layers")
    removed = set(mod.layers)
    rebuild_blocks(state, [j for j in range(depth) if j not in removed])
