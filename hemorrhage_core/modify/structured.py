"""Structured pruning: remove whole attention heads, MLP intermediate channels, or transformer blocks.

Heads and channels are "groups" of weights that live in several matrices (a query head is rows of q_proj and
columns of o_proj; an MLP channel is a row of gate_proj and up_proj and a column of down_proj). A group's importance
is the sum of an element-wise score over its weights (`IMPORTANCE`: magnitude w², activation |w|·‖X_j‖, or
LLM-Pruner's first-order Taylor |w·ḡ|), computed once on the model as it is. The least important groups of every
layer go (the same number per layer, as LLM-Pruner does, so every layer keeps a valid shape), the matrices are
sliced, and the attention modules learn their new head counts.

Layouts are found by module names, not by model class (`ATTENTION_LAYOUTS`, `MLP_LAYOUTS`): Llama / Mistral /
Qwen / Gemma (q/k/v/o_proj, gate/up/down_proj) and GPT-2 (fused c_attn, c_fc/c_proj, Conv1D weights).

Blocks follow ShortGPT: importance 1 − cos(h_in, h_out) averaged over calibration tokens; the least important
blocks are removed with the depth family's `rebuild_blocks`, and `layer_map` sends them to None.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..errors import SpecError
from ..specs.prune_structured import STRUCTURED_IMPORTANCE, PruneBlocks, PruneChannels, PruneHeads
from ..structure import find_blocks
from .base import ModContext, ModifiedModel, handles
from .calibration import GradientStats, InputStats, accumulate_gradients, input_statistics
from .depth import rebuild_blocks
from .prune import CALIB_BATCH
from .targets import weight_view

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Slicing a Linear / Conv1D along its output or input dimension ([out, in] view, as everywhere).
# ----------------------------------------------------------------------------------------------------------------


def slice_layer(module: nn.Module, side: str, keep: torch.Tensor) -> None:
    """Keep only the outputs (`side="out"`) or inputs (`"in"`) listed in `keep` (LongTensor, sorted), in place.

    New parameters replace the old (nothing outside the module may hold them: the runner works on a copy).
    """
    conv = isinstance(module, Conv1D)
    w = module.weight.data  # Linear: [out, in]; Conv1D: [in, out]
    dim = (1 if conv else 0) if side == "out" else (0 if conv else 1)
    requires_grad = module.weight.requires_grad
    module.weight = nn.Parameter(
        w.index_select(dim, keep.to(w.device)).contiguous(), requires_grad=requires_grad
    )
    if side == "out" and getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(
            module.bias.data[keep.to(w.device)].contiguous(), requires_grad=requires_grad
        )
    n = len(keep)
    if conv:  # Conv1D(nf=out, nx=in) reads nf in forward
        if side == "out":
            module.nf = n
        else:
            module.nx = n
    elif side == "out":
        module.out_features = n
    else:
        module.in_features = n


@dataclass(frozen=True)
class Part:
    """Where group g of a layout lives: indices [offset + g·size, offset + (g+1)·size) along `side` of `module`."""

    module: nn.Module
    side: str  # "out" (rows) or "in" (columns)
    offset: int
    size: int

    def indices(self, g: int) -> range:
        return range(self.offset + g * self.size, self.offset + (g + 1) * self.size)


@dataclass
class HeadLayout:
    """One block's attention: query heads (q rows + o columns) and KV heads (k and v rows)."""

    attn: nn.Module
    n_heads: int
    n_kv: int
    query_parts: list[Part]
    kv_parts: list[Part]
    set_heads: Callable[[int, int], None]  # (query heads, kv heads) -> update the module's own counts

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv


def _llama_attention(block: nn.Module) -> HeadLayout | None:
    attn = getattr(block, "self_attn", None)
    if attn is None or not all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return None
    hd = attn.head_dim
    n_heads, n_kv = weight_view(attn.q_proj).shape[0] // hd, weight_view(attn.k_proj).shape[0] // hd

    def set_heads(heads: int, kv: int) -> None:
        # Llama-style attention infers head counts from tensor shapes; only the K/V repeat factor is stored.
        attn.num_key_value_groups = heads // kv
        for name, value in (("num_heads", heads), ("num_key_value_heads", kv)):
            if hasattr(attn, name):
                setattr(attn, name, value)

    return HeadLayout(
        attn,
        n_heads,
        n_kv,
        query_parts=[Part(attn.q_proj, "out", 0, hd), Part(attn.o_proj, "in", 0, hd)],
        kv_parts=[Part(attn.k_proj, "out", 0, hd), Part(attn.v_proj, "out", 0, hd)],
        set_heads=set_heads,
    )


def _gpt2_attention(block: nn.Module) -> HeadLayout | None:
    attn = getattr(block, "attn", None)
    if (
        attn is None
        or not (hasattr(attn, "c_attn") and hasattr(attn, "c_proj"))
        or getattr(attn, "is_cross_attention", False)
    ):
        return None
    hd, n = attn.head_dim, attn.num_heads
    width = n * hd  # c_attn's outputs are [q | k | v], each n·hd wide

    def set_heads(heads: int, _kv: int) -> None:
        attn.num_heads = heads
        attn.split_size = heads * hd  # forward splits c_attn's output into q, k, v of this width

    return HeadLayout(
        attn,
        n,
        n,
        query_parts=[Part(attn.c_attn, "out", 0, hd), Part(attn.c_proj, "in", 0, hd)],
        kv_parts=[Part(attn.c_attn, "out", width, hd), Part(attn.c_attn, "out", 2 * width, hd)],
        set_heads=set_heads,
    )


def _llama_mlp(block: nn.Module) -> list[Part] | None:
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):
        return None
    return [Part(mlp.gate_proj, "out", 0, 1), Part(mlp.up_proj, "out", 0, 1), Part(mlp.down_proj, "in", 0, 1)]


def _two_layer_mlp(block: nn.Module) -> list[Part] | None:
    mlp = getattr(block, "mlp", None)
    for up, down in (("c_fc", "c_proj"), ("fc1", "fc2"), ("up_proj", "down_proj")):
        if mlp is not None and hasattr(mlp, up) and hasattr(mlp, down):
            return [Part(getattr(mlp, up), "out", 0, 1), Part(getattr(mlp, down), "in", 0, 1)]
    return None


ATTENTION_LAYOUTS: list[Callable[[nn.Module], HeadLayout | None]] = [_llama_attention, _gpt2_attention]
MLP_LAYOUTS: list[Callable[[nn.Module], list[Part] | None]] = [_llama_mlp, _two_layer_mlp]


def _layout(block: nn.Module, finders, what: str):
    for find in finders:
        found = find(block)
        if found is not None:
            return found
    raise SpecError(f"structured pruning does not know the {what} layout of {type(block).__name__}")


def nearest(x: float) -> int:
    """Round half up (Python's round() sends 0.5 to 0 and 2.5 to 2: surprising for a count of heads)."""
    return math.floor(x + 0.5)


def count_params(model: nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def linear_weight_count(model: nn.Module) -> int:
    """Weights of the Linear / Conv1D layers inside the blocks: what unstructured pruning's sparsity refers to."""
    return sum(
        weight_view(m).numel()
        for b in find_blocks(model)
        for m in b.modules()
        if isinstance(m, nn.Linear | Conv1D)
    )


# ----------------------------------------------------------------------------------------------------------------
# Importance: an element-wise score [out, in] per involved matrix, summed over each group's weights.
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Evidence:
    inputs: dict[str, InputStats] | None = None
    grads: GradientStats | None = None


ElementScore = Callable[[str, nn.Module, Evidence], torch.Tensor]  # (name, module, evidence) -> [out, in]
IMPORTANCE: dict[
    str, tuple[ElementScore, bool, bool]
] = {}  # name -> (score, needs activations, needs gradients)


def importance(name: str, *, activations: bool = False, gradients: bool = False):
    def register(fn: ElementScore) -> ElementScore:
        IMPORTANCE[name] = (fn, activations, gradients)
        return fn

    return register


@importance("magnitude")
def _magnitude(name, module, ev):
    return weight_view(module).float().pow(2)


@importance("activation", activations=True)
def _activation(name, module, ev):
    w = weight_view(module).float()
    return w.abs() * ev.inputs[name].act_norm().to(w.device)[None, :]


@importance("taylor", gradients=True)
def _taylor(name, module, ev):
    w = weight_view(module).float()
    return (w * ev.grads.mean[name].to(w.device)).abs()


assert set(IMPORTANCE) == STRUCTURED_IMPORTANCE, "specs/prune_structured.py and structured.py disagree"


def _part_sums(
    model: nn.Module, parts: list[Part], mod, ctx: ModContext
) -> dict[tuple[int, str], torch.Tensor]:
    """(id(module), side) -> [n] element scores summed along the other side, for every module in `parts`."""
    modules = {f"m{id(p.module)}": p.module for p in parts}
    score, activations, gradients = IMPORTANCE[mod.importance]
    ev = Evidence()
    if activations or gradients:
        windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
        if gradients:
            ev.grads = accumulate_gradients(model, modules, windows, squares=False)
        if activations:
            device = next(model.parameters()).device
            with torch.no_grad(), input_statistics(modules, hessian=False) as stats:
                for start in range(0, windows.shape[0], CALIB_BATCH):
                    model.get_decoder()(
                        input_ids=windows[start : start + CALIB_BATCH].to(device), use_cache=False
                    )
            ev.inputs = stats
    sums = {}
    for name, module in modules.items():
        s = score(name, module, ev)  # [out, in]
        sums[(id(module), "out")] = s.sum(1)
        sums[(id(module), "in")] = s.sum(0)
    return sums


def _group_scores(parts: list[Part], n_groups: int, sums) -> torch.Tensor:
    """[n_groups] total element score of each group over its parts."""
    out = torch.zeros(n_groups, dtype=torch.float64)
    for p in parts:
        v = sums[(id(p.module), p.side)].double().cpu()
        out += v[p.offset : p.offset + n_groups * p.size].reshape(n_groups, p.size).sum(1)
    return out


def _remove_groups(parts: list[Part], drop: dict[int, list[int]]) -> None:
    """Slice every module once, dropping the indices of the groups in `drop` (group index lists per Part index)."""
    removed: dict[tuple[int, str], set[int]] = defaultdict(set)
    modules = {}
    for k, p in enumerate(parts):
        for g in drop.get(k, ()):
            removed[(id(p.module), p.side)].update(p.indices(g))
        modules[id(p.module)] = p.module
    for (mid, side), gone in removed.items():
        module = modules[mid]
        size = weight_view(module).shape[0 if side == "out" else 1]
        keep = torch.tensor([i for i in range(size) if i not in gone], dtype=torch.long)
        slice_layer(module, side, keep)


def _report(state: ModifiedModel, before: int, before_linear: int) -> None:
    after, after_linear = count_params(state.model), linear_weight_count(state.model)
    state.report["params_before"] = float(before)
    state.report["params_after"] = float(after)
    state.report["param_reduction"] = 1 - after / before
    # Comparable with unstructured pruning's sparsity, which counts only the blocks' linear weights.
    state.report["linear_param_reduction"] = 1 - after_linear / before_linear


# ----------------------------------------------------------------------------------------------------------------
# Handlers.
# ----------------------------------------------------------------------------------------------------------------


def _original_layers(state: ModifiedModel, j: int) -> list[int]:
    return [i for i, mapped in enumerate(state.layer_map) if mapped == j]


@handles(PruneHeads)
def apply_prune_heads(state: ModifiedModel, mod: PruneHeads, ctx: ModContext) -> None:
    model = state.model
    before, before_linear = count_params(model), linear_weight_count(model)
    layouts = [_layout(b, ATTENTION_LAYOUTS, "attention") for b in find_blocks(model)]
    sums = _part_sums(model, [p for lay in layouts for p in lay.query_parts + lay.kv_parts], mod, ctx)
    removed_heads = 0
    for j, lay in enumerate(layouts):
        g_size, n_kv = lay.group_size, lay.n_kv
        q_scores = _group_scores(lay.query_parts, lay.n_heads, sums)  # [heads]
        kv_scores = _group_scores(lay.kv_parts, n_kv, sums)  # [kv heads]
        if mod.unit == "kv" or g_size == 1:
            # Whole KV groups: the group's K/V heads and all its query heads.
            r = nearest(mod.fraction * n_kv)
            if r >= n_kv:
                raise SpecError(
                    f"prune_heads: fraction {mod.fraction} removes all {n_kv} KV groups of a layer"
                )
            group_total = kv_scores + q_scores.reshape(n_kv, g_size).sum(1)
            gone_kv = sorted(torch.topk(group_total, r, largest=False).indices.tolist()) if r else []
            gone_q = [g * g_size + h for g in gone_kv for h in range(g_size)]
            new_heads, new_kv = lay.n_heads - len(gone_q), n_kv - r
        else:
            # The same number of query heads from every KV group: repeat_kv needs one group size.
            r = nearest(mod.fraction * g_size)
            if r >= g_size:
                raise SpecError(
                    f"prune_heads: fraction {mod.fraction} removes all {g_size} query heads of a KV group"
                )
            per_group = q_scores.reshape(n_kv, g_size)
            low = (
                torch.topk(per_group, r, dim=1, largest=False).indices
                if r
                else torch.empty(n_kv, 0, dtype=torch.long)
            )
            gone_q = sorted(g * g_size + int(h) for g in range(n_kv) for h in low[g])
            gone_kv = []
            new_heads, new_kv = lay.n_heads - len(gone_q), n_kv
        if not gone_q:
            continue
        drop = {k: gone_q for k in range(len(lay.query_parts))}
        drop |= {len(lay.query_parts) + k: gone_kv for k in range(len(lay.kv_parts))}
        _remove_groups(lay.query_parts + lay.kv_parts, drop)
        lay.set_heads(new_heads, new_kv)
        removed_heads += len(gone_q)
        gone_set = set(gone_q)
        kept = [h for h in range(lay.n_heads) if h not in gone_set]
        for i in _original_layers(state, j):
            previous = state.head_map.get(i, list(range(lay.n_heads)))
            state.head_map[i] = [previous[h] for h in kept]
    if not removed_heads:
        log.warning("prune_heads: fraction %g removes no head of a %s layer", mod.fraction, mod.unit)
    state.report["heads_removed"] = float(removed_heads)
    _report(state, before, before_linear)


@handles(PruneChannels)
def apply_prune_channels(state: ModifiedModel, mod: PruneChannels, ctx: ModContext) -> None:
    model = state.model
    before, before_linear = count_params(model), linear_weight_count(model)
    layouts = [_layout(b, MLP_LAYOUTS, "MLP") for b in find_blocks(model)]
    sums = _part_sums(model, [p for parts in layouts for p in parts], mod, ctx)
    removed = 0
    for parts in layouts:
        width = weight_view(parts[0].module).shape[0]  # intermediate channels
        r = nearest(mod.fraction * width)
        if not r:
            continue
        gone = torch.topk(_group_scores(parts, width, sums), r, largest=False).indices.tolist()
        _remove_groups(parts, {k: gone for k in range(len(parts))})
        removed += r
    state.report["channels_removed"] = float(removed)
    _report(state, before, before_linear)


# ----------------------------------------------------------------------------------------------------------------
# Whole blocks (ShortGPT).
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def block_importance(model: nn.Module, windows: torch.Tensor, batch_size: int = CALIB_BATCH) -> torch.Tensor:
    """ShortGPT block influence [L]: 1 − mean over tokens of cos(h_in, h_out) of every block, one forward pass."""
    blocks = find_blocks(model)
    sums = torch.zeros(len(blocks), dtype=torch.float64)
    tokens = torch.zeros(len(blocks), dtype=torch.float64)

    def hook_for(i: int):
        def hook(_module, args, kwargs, output):
            h_in = args[0] if args else kwargs["hidden_states"]  # [b, T, d]
            h_out = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # [b, T]
            sums[i] += float(cos.sum())
            tokens[i] += cos.numel()

        return hook

    handles_ = [b.register_forward_hook(hook_for(i), with_kwargs=True) for i, b in enumerate(blocks)]
    device = next(model.parameters()).device
    try:
        for start in range(0, windows.shape[0], batch_size):
            model.get_decoder()(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    finally:
        for h in handles_:
            h.remove()
    return 1 - sums / tokens


@handles(PruneBlocks)
def apply_prune_blocks(state: ModifiedModel, mod: PruneBlocks, ctx: ModContext) -> None:
    model = state.model
    n = len(find_blocks(model))
    if mod.n_blocks >= n:
        raise SpecError(f"prune_blocks: n_blocks={mod.n_blocks} would remove all {n} blocks")
    before, before_linear = count_params(model), linear_weight_count(model)
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    bi = block_importance(model, windows)
    drop = set(torch.topk(bi, mod.n_blocks, largest=False).indices.tolist())
    log.info("ShortGPT block influence %s; removing %s", [round(float(v), 4) for v in bi], sorted(drop))
    # The depth family's block-list rebuild keeps layer_map, layer_idx and per-layer config lists consistent.
    rebuild_blocks(state, [j for j in range(n) if j not in drop])
    for i, j in enumerate(state.layer_map):
        if j is None:
            state.head_map.pop(i, None)
    state.report["blocks_removed"] = float(len(drop))
    _report(state, before, before_linear)
