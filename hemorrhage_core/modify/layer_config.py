"""Per-layer facts in a config, kept true when the block list changes (depth changes, ShortGPT block pruning).

A plan is the new block list as indices into the old one (`depth.rebuild_blocks`). The config states per-layer
facts in three ways, each handled here so that the config keeps describing the model it belongs to (masks and
caches are built from it at every forward, and a saved model is rebuilt from it):

- `PER_LAYER_LISTS`: one entry per block (`layer_types`: sliding vs full attention, Gemma 2/3's alternation
  included; `mlp_layer_types`; `no_rope_layers`; ...): the entries move with their blocks;
- `INDEX_LISTS`: block indices with a property (`mlp_only_layers`, `moe_layers`): renumbered;
- `LAYER_RULES`: a property computed from the layer index (Qwen-MoE's `decoder_sparse_step`, DeepSeek's
  `first_k_dense_replace`): each block's property is read under the old rule and re-expressed for the new order,
  or the change is refused when the config cannot express it;
- `CROSS_LAYER`: settings that tie one layer to another (KV sharing between layers): refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import SpecError

log = logging.getLogger(__name__)

PER_LAYER_LISTS = (
    "layer_types",
    "mlp_layer_types",
    "no_rope_layers",
    "layers_block_type",
    "num_attention_heads_per_layer",
    "num_key_value_heads_per_layer",
    "layer_rope_theta",  # Granite SWA: a rope base per block
)
INDEX_LISTS = ("mlp_only_layers", "moe_layers")
CROSS_LAYER = ("num_kv_shared_layers", "kv_source_layers")

# A rule: (config, plan, old depth) -> names of the attributes it rewrote (the generic lists then skip them).
Rule = Callable[[Any, list[int], int], set[str]]
LAYER_RULES: list[Rule] = []


def layer_rule(fn: Rule) -> Rule:
    LAYER_RULES.append(fn)
    return fn


@layer_rule
def _sparse_step(cfg, plan: list[int], depth: int) -> set[str]:
    """Qwen2/3-MoE: layer i is MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0. The new
    order is stated with step 1 and the dense blocks listed, which expresses any order."""
    step = getattr(cfg, "decoder_sparse_step", None)
    if not isinstance(step, int) or step < 1:
        return set()
    dense = set(getattr(cfg, "mlp_only_layers", None) or [])
    moe = [j not in dense and (j + 1) % step == 0 for j in range(depth)]
    cfg.decoder_sparse_step = 1
    cfg.mlp_only_layers = [pos for pos, j in enumerate(plan) if not moe[j]]
    return {"decoder_sparse_step", "mlp_only_layers"}


@layer_rule
def _first_k_dense(cfg, plan: list[int], depth: int) -> set[str]:
    """DeepSeek-V2/V3, GLM-4-MoE, ...: the first `first_k_dense_replace` layers have a dense MLP. Expressible only
    while the dense blocks stay in front."""
    k = getattr(cfg, "first_k_dense_replace", None)
    if not isinstance(k, int):
        return set()
    dense = [j < k for j in plan]
    new_k = sum(dense)
    if dense != [pos < new_k for pos in range(len(plan))]:
        raise SpecError(
            f"{type(cfg).__name__}: the new block order {plan} puts a dense-MLP block after a MoE block, which "
            f"config.first_k_dense_replace={k} cannot describe; the first {k} block(s) must stay ahead of every "
            "MoE block"
        )
    cfg.first_k_dense_replace = new_k
    return {"first_k_dense_replace"}


def update_layer_config(cfg, plan: list[int], depth: int) -> None:
    """Rewrite `cfg`'s per-layer facts for the new block list `plan` (indices into the old `depth` blocks)."""
    for name in CROSS_LAYER:
        if getattr(cfg, name, None):
            raise SpecError(
                f"depth changes are not supported for {type(cfg).__name__}: config.{name} ties layers to other "
                "layers' key/value caches, which a changed block list would break"
            )
    handled: set[str] = set()
    for rule in LAYER_RULES:
        handled |= rule(cfg, plan, depth)
    derived: dict[str, list] = {}  # lists the config computes from other fields (read-only properties)
    for name in PER_LAYER_LISTS:
        values = getattr(cfg, name, None)
        if name not in handled and isinstance(values, list) and len(values) == depth:
            wanted = [values[j] for j in plan]
            if _read_only(cfg, name):
                derived[name] = wanted
            else:
                setattr(cfg, name, wanted)
    for name in INDEX_LISTS:
        values = getattr(cfg, name, None)
        if name not in handled and isinstance(values, list):
            members = set(values)
            setattr(cfg, name, [pos for pos, j in enumerate(plan) if j in members])
    cfg.num_hidden_layers = len(plan)
    # A derived list (Mamba's layer_types, Jamba's and RecurrentGemma's layers_block_type) is recomputed from
    # the new depth; it must still say what each moved block is, or the change cannot be described.
    for name, wanted in derived.items():
        got = list(getattr(cfg, name))
        if got != wanted:
            raise SpecError(
                f"this depth change cannot be described by {type(cfg).__name__}: it derives {name} from other "
                f"settings, which give {got} for the new block order where the blocks are {wanted}"
            )


def _read_only(cfg, name: str) -> bool:
    name = getattr(cfg, "attribute_map", {}).get(
        name, name
    )  # RecurrentGemma: layer_types -> layers_block_type
    attr = getattr(type(cfg), name, None)
    return isinstance(attr, property) and attr.fset is None
