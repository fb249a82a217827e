"""Depth changes: layer duplication (SOLAR), identity-block insertion (LLaMA-Pro) and layer removal.

Every change is expressed as a *plan*: the new block list as indices into the current one (a source may appear
several times; its first appearance keeps the module, later ones are deep copies, so no two blocks share
weights and later modifications never hit one tensor twice). `rebuild_blocks` then applies the plan and keeps
the rest of the model consistent with it:

- `state.layer_map`: each original block -> the first appearance of its current block (for a duplicated or
  identity-expanded section that is the original copy, whose output equals the base's up to that depth);
- `layer_idx` of every module in a block (the KV cache is indexed by it);
- `config.num_hidden_layers` (Llama-style decoders run `layers[:num_hidden_layers]`) and every per-layer fact of
  the config (`layer_config.py`: lists such as `layer_types` move with their blocks, index lists are renumbered,
  index rules such as `decoder_sparse_step` or `first_k_dense_replace` are re-expressed or the change refused).

Identity copies get their residual writers zeroed (`residual.py`: found from one traced forward pass), and a
second short pass checks that each really returns its input bit for bit.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SpecError
from ..specs.depth import DepthUpscale, DuplicateLayers, InsertIdentity, RemoveLayers
from ..structure import find_blocks
from .base import ModContext, ModifiedModel, handles
from .layer_config import update_layer_config
from .residual import check_identity, residual_writers, zero_output_projections

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def _refuse_shared_blocks(blocks: list[nn.Module]) -> None:
    """SpecError when blocks share parameters (Zamba2's one attention block serves several layers through a
    layer-index table): copying or dropping a block would silently break what the others index."""
    owner: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            j = owner.setdefault(id(p), i)
            if j != i:
                raise SpecError(
                    f"depth changes are not supported for this model: blocks {j} and {i} share weights "
                    f"({type(block).__name__} reuses one module across layers), which a changed block list breaks"
                )


def rebuild_blocks(state: ModifiedModel, plan: list[int], zero_output: frozenset[int] = frozenset()) -> None:
    """Replace the block list of `state.model` with `[blocks[j] for j in plan]`, in place.

    `zero_output`: positions of the new list whose block becomes an identity copy (they must be repeats, never
    the first appearance of a block, or an original block would be destroyed).
    """
    blocks = find_blocks(state.model)
    old = list(blocks)
    if not plan:
        raise SpecError("a depth change cannot remove every block")
    _refuse_shared_blocks(old)
    writers = residual_writers(state.model) if zero_output else []  # traced on the model as it is
    # The config first: it may refuse the change, and must do so before any block moves.
    update_layer_config(state.model.config.get_text_config(), plan, len(old))
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
            zero_output_projections(block, writers[j])
        new_blocks.append(block)

    del blocks[:]
    blocks.extend(new_blocks)
    for pos, block in enumerate(blocks):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = pos  # type: ignore[assignment]  # nn.Module types attributes Tensor | Module
    if zero_output:
        check_identity(state.model, zero_output)
    state.layer_map = [None if j is None else first.get(j) for j in state.layer_map]
    state.report["num_layers"] = float(len(plan))
    state.report["param_count"] = float(sum(p.numel() for p in state.model.parameters()))
    _check_runs(state.model)
    log.info("block list rebuilt: %d -> %d blocks", len(old), len(plan))


def _check_runs(model: PreTrainedModel) -> None:
    """SpecError when the changed model no longer runs: some architectures index per-layer state by a layer
    number fixed at construction (Zamba2's shared-block table), which no config list describes."""
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(input_ids=torch.zeros(1, 4, dtype=torch.long, device=device), use_cache=False)
    except Exception as exc:  # what an architecture raises here is its own; the user gets one clear line
        raise SpecError(
            f"depth changes are not supported for {type(model).__name__}: the changed model does not run "
            f"({type(exc).__name__}: {exc}); its layers hold state indexed by their original position"
        ) from exc


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
