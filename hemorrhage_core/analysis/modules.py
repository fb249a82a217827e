"""Which layers bleed most: the output error of every modified weight on calibration inputs, ranked.

For each Linear / Conv1D module of the base model, the calibration text is run through the *base* model; every
module's input X is also fed to its counterpart in the modified model, and the error of its output is accumulated:

    out_error = ||f'(X) - f(X)||_F            (= ||(W' - W) X||_F for a weight-only change: the bias cancels)
    rel_error = ||f'(X) - f(X)||_F / ||f(X)||_F

Feeding both modules the *same* X isolates each module's own damage from the damage it inherits from earlier
layers (that inherited part is the cascade, measured per layer by the profile). Calling the modified module
(instead of reading W') makes this work for every kind of modification: fake-quantized or pruned weights, bitsandbytes
layers that store int8/4-bit codes, and activation quantization hooks attached to the module.

Counterparts are matched by name; when a depth change renumbered the blocks, block i is looked up as block
`layer_map[i]`. Modules whose output shape changed (structured pruning) or whose block was removed have no
comparable output and are listed with `comparable = False`; modules whose output did not change at all, or
changed by less than float noise (`NOISE`, relative 1e-6: a copied lm_head recomputed in another order), are
left out (they were not modified).

A depth change modifies whole blocks, not weights, so `rank_modules` ranks the blocks that changed
(`block_changes`): a removed block i by what skipping it costs on the original's stream, ‖X − block_i(X)‖ /
‖block_i(X)‖ (the block becomes the identity); an added block j of the modified model by what it writes into
its own stream, ‖block_j(X) − X‖ / ‖X‖ (it used not to exist: the identity). An identity insertion writes
exactly 0 and is left out like any unmodified module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import nn

from .. import structure
from ..modify.targets import LINEAR_TYPES
from ..progress import Progress, scaled

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

_BLOCK = re.compile(r"\.(layers|h|blocks)\.(\d+)\.")
COLUMNS = ["rank", "module", "layer", "kind", "rel_error", "out_error", "out_norm", "tokens", "comparable"]
NOISE = 1e-6  # relative output errors below this are float noise (fp32 eps is 1.2e-7), not a modification
# What a block row is, stored as its "block" metric (the store keeps numbers): 1 removed, 2 added.
BLOCK_KINDS = {1.0: "block (removed)", 2.0: "block (added)"}


def block_index(name: str) -> int | None:
    """The transformer block a module belongs to ('model.layers.7.mlp.down_proj' -> 7), None outside blocks."""
    m = _BLOCK.search(f".{name}.")
    return int(m.group(2)) if m else None


def counterpart_name(name: str, layer_map: list[int | None] | None) -> str | None:
    """The name of `name`'s module in the modified model (None when its block was removed)."""
    layer = block_index(name)
    if layer is None or layer_map is None:
        return name
    j = layer_map[layer] if layer < len(layer_map) else None
    if j is None:
        return None
    return _BLOCK.sub(lambda m: f".{m.group(1)}.{j}.", f".{name}.", count=1)[1:-1]


@contextmanager
def _hooks(modules: Mapping[str, nn.Module], hook_for):
    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def module_errors(
    base: PreTrainedModel,
    modified: PreTrainedModel,
    calibration: torch.Tensor,
    *,
    layer_map: list[int | None] | None = None,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Per-module output error of `modified` against `base` on calibration windows [n, T], ranked worst first.

    Neither model is changed (hooks are always removed). Returns a DataFrame with COLUMNS; `rank` 1 is the
    module with the largest relative error among the comparable ones.
    """
    base_linears = {name: m for name, m in base.named_modules() if isinstance(m, LINEAR_TYPES)}
    mod_modules = dict(modified.named_modules())
    pairs: dict[str, nn.Module] = {}
    absent: list[str] = []
    shared: set[str] = set()
    for name in base_linears:
        other = counterpart_name(name, layer_map)
        if other is None or other not in mod_modules:
            absent.append(name)
        elif mod_modules[other] is base_linears[name]:
            shared.add(name)  # the same object (a chain that made no copy): not modified
        else:
            pairs[name] = mod_modules[other]
    sq_err = dict.fromkeys(base_linears, 0.0)
    sq_out = dict.fromkeys(base_linears, 0.0)
    tokens = dict.fromkeys(base_linears, 0)
    mismatched: set[str] = set()

    def hook_for(name):
        def hook(_module, inputs, output):
            if name not in pairs or name in mismatched:
                return
            x = inputs[0]
            y = output.float()
            y_mod = pairs[name](x)
            y_mod = (y_mod[0] if isinstance(y_mod, tuple) else y_mod).float()
            if y_mod.shape != y.shape:
                mismatched.add(name)  # heads or channels removed: outputs no longer correspond
                return
            sq_err[name] += float((y_mod - y).double().pow(2).sum())
            sq_out[name] += float(y.double().pow(2).sum())
            tokens[name] += y.numel() // y.shape[-1]

        return hook

    device = next(base.parameters()).device
    with torch.inference_mode(), _hooks(base_linears, hook_for):
        for start in range(0, calibration.shape[0], batch_size):
            if progress is not None:
                progress(
                    start / calibration.shape[0],
                    f"module errors: sequence {start + 1}/{calibration.shape[0]}",
                )
            base(
                input_ids=calibration[start : start + batch_size].to(device),
                use_cache=False,
                logits_to_keep=1,
            )

    rows = []
    for name in base_linears:
        if name in shared:
            continue
        comparable = name in pairs and name not in mismatched
        if comparable and sq_err[name] <= (NOISE**2) * sq_out[name]:
            continue  # this module was not modified (or only by float noise)
        out_norm = sq_out[name] ** 0.5
        rows.append(
            {
                "module": name,
                "layer": block_index(name),
                "kind": name.rsplit(".", 1)[-1],
                "rel_error": (sq_err[name] ** 0.5) / out_norm
                if comparable and out_norm > 0
                else float("nan"),
                "out_error": sq_err[name] ** 0.5 if comparable else float("nan"),
                "out_norm": out_norm,
                "tokens": tokens[name],
                "comparable": comparable,
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])
    df = df.sort_values(
        ["comparable", "rel_error"], ascending=[False, False], na_position="last", ignore_index=True
    )
    df.insert(0, "rank", range(1, len(df) + 1))
    if absent:
        log.info("%d modules have no counterpart in the modified model (removed blocks)", len(absent))
    return df


def _block_stream(
    model: PreTrainedModel, blocks: list[int], calibration: torch.Tensor, batch_size: int, removed: bool
):
    """Squared norms per block of `blocks` over the calibration windows: (‖out − in‖², ‖reference‖², tokens),
    the reference being the block's output for a removed block and its input for an added one."""
    all_blocks = structure.find_blocks(model)
    sq_err, sq_ref, tokens = dict.fromkeys(blocks, 0.0), dict.fromkeys(blocks, 0.0), dict.fromkeys(blocks, 0)

    def hook_for(i: int):
        def hook(_module, args, kwargs, output):
            h_in = (args[0] if args else kwargs["hidden_states"]).double()
            h_out = structure.block_hidden(output).double()
            sq_err[i] += float((h_out - h_in).pow(2).sum())
            sq_ref[i] += float((h_out if removed else h_in).pow(2).sum())
            tokens[i] += h_in.numel() // h_in.shape[-1]

        return hook

    handles = [all_blocks[i].register_forward_hook(hook_for(i), with_kwargs=True) for i in blocks]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, calibration.shape[0], batch_size):
                model(
                    input_ids=calibration[start : start + batch_size].to(device),
                    use_cache=False,
                    logits_to_keep=1,
                )
    finally:
        for h in handles:
            h.remove()
    return sq_err, sq_ref, tokens


def block_changes(
    base: PreTrainedModel,
    modified: PreTrainedModel,
    calibration: torch.Tensor,
    layer_map: list[int | None],
    *,
    batch_size: int = 4,
) -> pd.DataFrame:
    """The blocks a depth change removed or added, with the relative error of the stream they change (see the
    module docstring), in COLUMNS without `rank`; empty when no block was removed or added, and without the
    added blocks that write nothing (identity insertion)."""
    removed = [i for i, j in enumerate(layer_map) if j is None]
    kept = {j for j in layer_map if j is not None}
    added = [j for j in range(len(structure.find_blocks(modified))) if j not in kept]
    rows = []
    for blocks, model, code in ((removed, base, 1.0), (added, modified, 2.0)):
        if not blocks:
            continue
        prefix = structure.blocks_name(model)
        sq_err, sq_ref, tokens = _block_stream(model, blocks, calibration, batch_size, removed=code == 1.0)
        for i in blocks:
            if sq_err[i] <= (NOISE**2) * sq_ref[i]:
                continue  # an added identity block: nothing changed
            rows.append(
                {
                    "module": f"{prefix}.{i}",
                    "layer": i,
                    "kind": BLOCK_KINDS[code],
                    "rel_error": (sq_err[i] / sq_ref[i]) ** 0.5 if sq_ref[i] > 0 else float("nan"),
                    "out_error": sq_err[i] ** 0.5,
                    "out_norm": sq_ref[i] ** 0.5,
                    "tokens": tokens[i],
                    "comparable": True,
                }
            )
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "rank"])


def _is_depth_change(layer_map: list[int | None], modified: PreTrainedModel) -> bool:
    return layer_map != list(range(len(structure.find_blocks(modified))))


def rank_modules(
    runner,
    spec,
    *,
    corpus: str | None = None,
    n: int = 8,
    length: int = 256,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """`module_errors` of `spec`'s modified model on `n` x `length` calibration tokens of `corpus` (default: the
    evaluation corpus; the windows come from its end, never from the evaluation windows). `progress` hears the
    modification block by block, then each calibration batch. After a depth change, the blocks it removed or
    added (`block_changes`) rank with the modules, worst first."""
    loaded = runner.base(spec.model)
    calib = runner.calibration_windows(spec, corpus or spec.probe.corpus, n, length)
    modified = runner.modify(spec, progress=scaled(progress, 0.0, 0.5))
    try:
        df = module_errors(
            loaded.model,
            modified.model,
            calib,
            layer_map=modified.layer_map,
            progress=scaled(progress, 0.5, 1.0),
        )
        if not _is_depth_change(modified.layer_map, modified.model):
            return df
        blocks = block_changes(loaded.model, modified.model, calib, modified.layer_map)
        if blocks.empty:
            return df
        both = pd.concat([blocks, df.drop(columns="rank")], ignore_index=True)
        both = both.sort_values(
            ["comparable", "rel_error"], ascending=[False, False], na_position="last", ignore_index=True
        )
        both.insert(0, "rank", range(1, len(both) + 1))
        return both
    finally:
        del modified


def to_rows(df: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(item, metric, value) rows for Store.save_analysis."""
    metrics = ["rank", "rel_error", "out_error", "out_norm", "tokens", "comparable"]
    codes = {kind: code for code, kind in BLOCK_KINDS.items()}
    rows = [(r["module"], m, float(r[m])) for r in df.to_dict("records") for m in metrics]
    return rows + [
        (r["module"], "block", codes[r["kind"]]) for r in df.to_dict("records") if r["kind"] in codes
    ]


def from_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The ranked table back from Store.analysis(run_key, 'module_errors')."""
    if rows.empty:
        return pd.DataFrame(columns=COLUMNS)
    wide = (
        rows.pivot(index="item", columns="metric", values="value")
        .reset_index()
        .rename(columns={"item": "module"})
    )
    wide.columns.name = None
    wide["layer"] = wide.module.map(block_index)
    wide["kind"] = wide.module.str.rsplit(".", n=1).str[-1]
    if "block" in wide.columns:  # whole blocks of a depth change: their index is the last part of the name
        is_block = wide["block"].notna()
        wide.loc[is_block, "kind"] = wide.loc[is_block, "block"].map(BLOCK_KINDS)
        wide.loc[is_block, "layer"] = wide.loc[is_block, "module"].str.rsplit(".", n=1).str[-1].astype(int)
    wide["rank"] = wide["rank"].astype(int)
    wide["tokens"] = wide["tokens"].astype(int)
    wide["comparable"] = wide["comparable"].astype(bool)
    return wide.sort_values("rank", ignore_index=True)[COLUMNS]
