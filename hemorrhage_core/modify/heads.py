"""Attention head layouts for structured pruning, described as data: where each head's rows and columns live.

A head is spread over several matrices: its query rows (and, for a KV head, its key and value rows) in one or
more input projections, and its columns in the output projection. `ATTENTION_LAYOUTS` lists the layouts this
project knows, each as the projections it reads (module attribute, packing, roles) and the output projection;
the first row whose modules exist (and whose `requires` attributes match) describes a block's attention. A
*packing* (`PACKINGS`) turns head counts into the row indices of every (role, head) inside one projection, so a
fused matrix is re-laid out for the new counts by the same function that describes the old one: slicing cannot
silently misplace rows (CodeGen's mp_num chunks move when a head goes).

Around the matrices, the pieces the attention forward reads are kept consistent:

- query/key norms (`q_norm`, `k_norm`, `q_layernorm`, `k_layernorm`): one weight per head dimension (Qwen3,
  Gemma 3, Phi) is shared by all heads and stays; a weight per head ([H, hd], Cohere) or a list of per-head norms
  (StableLM) keeps the kept heads' entries; a norm over the whole projection width (OLMo 2/3: RMS over all heads
  together) cannot be sliced without changing the kept heads' values, so the projection keeps every row and
  `HeadSelect` picks the kept heads after the norm;
- per-head parameters of the attention module (`PER_HEAD_PARAMETERS`: GPT-OSS's attention sinks) are sliced;
- ALiBi: the model builds slopes for all its original heads and passes them as `alibi=` (Falcon also folds them
  into a per-head mask); `AlibiHeads`, a forward pre-hook, keeps the rows of the heads this attention still has;
- head counts stored on the module (`HEAD_COUNT_ATTRIBUTES`: num_heads, num_key_value_groups, split sizes, ...)
  and, where a forward reads them from the config (Phi-3), a per-module `ConfigView`.

Anything in an attention module that none of this accounts for (an unknown parameter, a projection whose shape
does not fit the layout) is refused with a SpecError naming it, never pruned approximately.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import SpecError
from ..structure import attention_of, text_config
from .targets import LINEAR_TYPES, slice_layer, weight_view

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

ABSENT = object()  # in `requires`: the attribute must not exist
PRESENT = object()  # in `requires`: the attribute must exist, any value


# ----------------------------------------------------------------------------------------------------------------
# Packings: (attention module, heads, kv heads, head dim, roles) -> role -> [n heads of that role, head_dim] rows.
# ----------------------------------------------------------------------------------------------------------------

Packing = Callable[[nn.Module, int, int, int, str], dict[str, torch.Tensor]]
PACKINGS: dict[str, Packing] = {}


def packing(name: str):
    def register(fn: Packing) -> Packing:
        PACKINGS[name] = fn
        return fn

    return register


def _count(role: str, heads: int, kv: int) -> int:
    return heads if role == "q" else kv


@packing("concat")
def _concat(attn, heads, kv, hd, roles):
    """Roles one after another, heads in order within each: one projection per role (q_proj), or fused
    [q; k; v] (GPT-2's c_attn, Phi-3's qkv_proj, multi-query c_attn / query_key_value with one K and one V head)."""
    out, start = {}, 0
    for role in roles:
        n = _count(role, heads, kv)
        out[role] = torch.arange(start, start + n * hd).view(n, hd)
        start += n * hd
    return out


@packing("kv_group")
def _kv_group(attn, heads, kv, hd, roles):
    """Per KV group: its G query heads, its K head, its V head ([q_0 .. q_G-1, k, v] per group). GPT-NeoX, BLOOM,
    Falcon (G = 1 without GQA: [q, k, v] per head; Falcon's new decoder architecture: G = heads / kv), and
    GPT-BigCode's multi-head c_attn."""
    g = heads // kv
    rows = torch.arange(kv * (g + 2) * hd).view(kv, g + 2, hd)
    return {"q": rows[:, :g].reshape(heads, hd), "k": rows[:, g], "v": rows[:, g + 1]}


@packing("mp_chunks")
def _mp_chunks(attn, heads, kv, hd, roles):
    """CodeGen: the output is mp_num model-parallel chunks, each [q, v, k] of width/mp_num; a role's values are
    its chunk pieces concatenated, then read as heads (a head may straddle two chunks)."""
    mp, width = attn.mp_num, heads * hd
    if width % mp:
        raise SpecError(
            f"prune_heads: CodeGen's qkv_proj is read as mp_num={mp} chunks, so the kept heads' width "
            f"({heads} heads x {hd}) must be a multiple of {mp}"
        )
    rows = torch.arange(3 * width).view(mp, 3, width // mp)  # chunk, (q, v, k), position
    return {role: rows[:, i].reshape(heads, hd) for i, role in ((0, "q"), (1, "v"), (2, "k"))}


# ----------------------------------------------------------------------------------------------------------------
# The layouts.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionLayout:
    """One attention layout: input projections (module attribute, packing, roles it holds) and the output."""

    name: str
    projections: tuple[tuple[str, str, str], ...]
    output: str
    examples: str
    # (attribute of the attention module, the value it must have: a value, a tuple of them, ABSENT or PRESENT)
    requires: tuple[tuple[str, Any], ...] = ()
    config_counts: tuple[str, ...] = ()  # config attributes (query head count) the forward reads


_SEPARATE = (("q_proj", "concat", "q"), ("k_proj", "concat", "k"), ("v_proj", "concat", "v"))

ATTENTION_LAYOUTS: tuple[AttentionLayout, ...] = (
    AttentionLayout("q_proj/k_proj/v_proj + o_proj", _SEPARATE, "o_proj",
                    "Llama, Mistral, Qwen 2/3, Gemma, OLMo 2/3, GPT-OSS, Mixtral"),
    AttentionLayout("q_proj/k_proj/v_proj + out_proj", _SEPARATE, "out_proj", "OPT, GPT-J, BioGPT, XGLM"),
    AttentionLayout("q_proj/k_proj/v_proj + dense", _SEPARATE, "dense", "Phi"),
    AttentionLayout("qkv_proj in mp_num chunks [q, v, k] + out_proj", (("qkv_proj", "mp_chunks", "qvk"),),
                    "out_proj", "CodeGen", requires=(("mp_num", PRESENT),)),
    AttentionLayout("qkv_proj [q; k; v] + o_proj", (("qkv_proj", "concat", "qkv"),), "o_proj", "Phi-3",
                    config_counts=("num_attention_heads",)),
    AttentionLayout("c_attn [q, k, v] per head + c_proj", (("c_attn", "kv_group", "qkv"),), "c_proj",
                    "GPT-BigCode multi-head", requires=(("multi_query", False),)),
    AttentionLayout("c_attn [q; k; v] + c_proj", (("c_attn", "concat", "qkv"),), "c_proj",
                    "GPT-2, GPT-BigCode multi-query", requires=(("is_cross_attention", (False, ABSENT)),)),
    AttentionLayout("query_key_value [q; k; v] + dense", (("query_key_value", "concat", "qkv"),), "dense",
                    "Falcon multi-query", requires=(("multi_query", True), ("new_decoder_architecture", False))),
    AttentionLayout("query_key_value per KV group [q.., k, v] + dense", (("query_key_value", "kv_group", "qkv"),),
                    "dense", "GPT-NeoX, BLOOM, Falcon"),
)  # fmt: skip

NORM_NAMES = {"q": ("q_norm", "q_layernorm"), "k": ("k_norm", "k_layernorm")}
PER_HEAD_PARAMETERS = ("sinks",)  # direct parameters of the attention module with one entry per query head
# Attribute -> which count it holds. Updated only where the module's value equals the old count, so an attribute
# of the same name that means something else is left alone.
HEAD_COUNT_ATTRIBUTES = {
    "num_heads": "heads", "num_attention_heads": "heads", "n_head": "heads", "n_heads": "heads",
    "num_key_value_heads": "kv", "num_kv_heads": "kv", "kv_heads": "kv",
    "num_key_value_groups": "groups",
    "embed_dim": "q_width", "split_size": "q_width", "kv_dim": "kv_width",
}  # fmt: skip


def supported_layouts() -> str:
    return "; ".join(f"{lay.name} ({lay.examples})" for lay in ATTENTION_LAYOUTS)


# ----------------------------------------------------------------------------------------------------------------
# Helpers that stay on the model: a norm followed by head selection, ALiBi head selection, a config view.
# ----------------------------------------------------------------------------------------------------------------


class HeadSelect(nn.Module):
    """`norm` over the full projection width, then only the kept positions: the pruned heads still count in the
    norm's statistics (OLMo 2/3 normalise q and k over all heads together), exactly as in the unpruned model."""

    keep: torch.Tensor  # a buffer: [kept positions] indices into the norm's output

    def __init__(self, norm: nn.Module, keep: torch.Tensor):
        super().__init__()
        self.norm = norm
        self.register_buffer("keep", keep.clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x).index_select(-1, self.keep)


class AlibiHeads:
    """Forward pre-hook: the model builds ALiBi slopes for its `total` original heads ([batch·H₀, 1, S] in BLOOM,
    [batch, H₀, 1, S] in Falcon, which also folds them into a per-head [batch, H₀, T, S] attention mask); keep the
    entries of `heads` (original indices), so every kept head keeps its own slope."""

    def __init__(self, total: int, heads: torch.Tensor):
        self.total, self.heads = total, heads

    def _pick(self, x: torch.Tensor, flat: bool) -> torch.Tensor:
        heads = self.heads.to(x.device)
        if flat:
            batch = x.shape[0] // self.total
            return x.view(batch, self.total, *x.shape[1:])[:, heads].reshape(-1, *x.shape[1:])
        return x.index_select(1, heads)

    def __call__(self, _module, args, kwargs):
        alibi, mask = kwargs.get("alibi"), kwargs.get("attention_mask")
        if alibi is None:
            return None
        kwargs["alibi"] = self._pick(alibi, flat=alibi.dim() == 3)
        if isinstance(mask, torch.Tensor) and mask.dim() == 4 and mask.shape[1] == self.total > 1:
            kwargs["attention_mask"] = self._pick(mask, flat=False)
        return args, kwargs


class ConfigView:
    """The shared config with a few attributes overridden for one module (Phi-3's attention reads its query
    width from `config.num_attention_heads`); every other attribute, `_attn_implementation` included, is read
    live from the shared config, so switching the model's attention kernel still reaches this module."""

    def __init__(self, base: Any, **overrides: Any):
        self.__dict__["_base"] = base
        self.__dict__["_overrides"] = dict(overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_base", "_overrides"):
            raise AttributeError(name)
        overrides = self.__dict__["_overrides"]
        return overrides[name] if name in overrides else getattr(self.__dict__["_base"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.__dict__["_base"], name, value)


# ----------------------------------------------------------------------------------------------------------------
# A block's attention, found and checked.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Projection:
    module: nn.Module
    packing: str
    roles: str
    full_norm: str = ""  # attribute of a norm over this projection's whole width: its rows then all stay ...
    select: HeadSelect | None = None  # ... and, once heads are gone, this picks the kept ones after the norm


@dataclass(eq=False)
class HeadLayout:
    """One block's attention as it is now: the layout row, the modules, and the head counts."""

    layout: AttentionLayout
    attn: nn.Module
    n_heads: int
    n_kv: int
    head_dim: int
    projections: list[Projection]
    output: nn.Module
    per_head_norms: list[tuple[str, nn.Module, str]] = field(
        default_factory=list
    )  # (role, norm with [n, hd] weight or a list of per-head norms, "per_head" or "per_head_list")

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv

    def rows(self, proj: Projection, role: str) -> torch.Tensor:
        """[n heads of `role`, head_dim] row indices of the current heads in `proj`'s output."""
        if proj.select is not None:
            return proj.select.keep.cpu().view(-1, self.head_dim)
        return PACKINGS[proj.packing](self.attn, self.n_heads, self.n_kv, self.head_dim, proj.roles)[role]

    def parts(self, unit: str) -> list[tuple[nn.Module, str, torch.Tensor]]:
        """(module, side, [n heads, size] indices) of every matrix a query head (`unit="q"`) or a KV head
        (`"kv"`) lives in."""
        if unit == "q":
            out = [(p.module, "out", self.rows(p, "q")) for p in self.projections if "q" in p.roles]
            cols = torch.arange(self.n_heads * self.head_dim).view(self.n_heads, self.head_dim)
            return [*out, (self.output, "in", cols)]
        return [(p.module, "out", self.rows(p, r)) for p in self.projections for r in "kv" if r in p.roles]


def _matches(attn: nn.Module, lay: AttentionLayout) -> bool:
    names = [name for name, _, _ in lay.projections] + [lay.output]
    if not all(isinstance(getattr(attn, n, None), LINEAR_TYPES) for n in names):
        return False
    for attr, wanted in lay.requires:
        value = getattr(attn, attr, ABSENT)
        allowed = wanted if isinstance(wanted, tuple) else (wanted,)
        if not any(value is a or (a is PRESENT and value is not ABSENT) or value == a for a in allowed):
            return False
    return True


def _head_dim(attn: nn.Module, model: PreTrainedModel) -> int:
    for name in ("head_dim", "head_size"):
        value = getattr(attn, name, None)
        if isinstance(value, int) and value > 0:
            return value
    cfg = text_config(model)
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def _norm_kind(module: nn.Module, n: int, hd: int) -> str:
    """How a q/k norm relates to heads: "shared" (one weight per head dimension, or none), "per_head" (a [n, hd]
    weight), "per_head_list" (a list of n norms, StableLM), "full" (over the whole n·hd width), or "unknown"."""
    if isinstance(module, HeadSelect):
        return "full"
    own = {tuple(p.shape) for p in module.parameters(recurse=False)}
    children = [c for c in module.children() if list(c.parameters())]
    if not own and len(children) == 1 and isinstance(children[0], nn.ModuleList) and len(children[0]) == n:
        members = {tuple(p.shape) for c in children[0] for p in c.parameters()}
        return "per_head_list" if members <= {(hd,)} else "unknown"
    if children:
        return "unknown"
    if own <= {(hd,)}:
        return "shared"
    if own == {(n, hd)}:
        return "per_head"
    if own == {(n * hd,)}:
        return "full"
    return "unknown"


def _refuse(block: nn.Module, attn: nn.Module | None, why: str) -> SpecError:
    where = type(block).__name__ + (f" ({type(attn).__name__})" if attn is not None else "")
    return SpecError(f"prune_heads: the attention of {where} {why}; supported layouts: {supported_layouts()}")


def head_layout(block: nn.Module, model: PreTrainedModel) -> HeadLayout:
    """The `HeadLayout` of one block's self-attention, or a SpecError naming what was found."""
    found = attention_of(block)
    if found is None:
        raise _refuse(block, None, "was not found (no module of an attention class)")
    attn = found[1]
    lay = next((row for row in ATTENTION_LAYOUTS if _matches(attn, row)), None)
    if lay is None:
        linears = [n for n, m in attn.named_children() if isinstance(m, LINEAR_TYPES)]
        raise _refuse(
            block, attn, f"has no known head layout (its projections: {', '.join(linears) or 'none'})"
        )
    hd = _head_dim(attn, model)
    output = getattr(attn, lay.output)
    width = weight_view(output).shape[1]
    if width % hd:
        raise _refuse(
            block, attn, f"({lay.name}) has an output projection of width {width}, not heads x {hd}"
        )
    n_heads = width // hd
    projections = [Projection(getattr(attn, name), pk, roles) for name, pk, roles in lay.projections]
    norms = {
        role: (name, getattr(attn, name))
        for role, names in NORM_NAMES.items()
        for name in names
        if isinstance(getattr(attn, name, None), nn.Module)
    }
    for role, (name, norm) in norms.items():
        if isinstance(norm, HeadSelect):
            proj = next(p for p in projections if p.roles == role)
            proj.full_norm, proj.select = name, norm
    n_kv = _kv_heads(block, attn, lay, projections, n_heads, hd)
    result = HeadLayout(lay, attn, n_heads, n_kv, hd, projections, output)
    for role, (name, norm) in norms.items():
        kind = _norm_kind(norm, _count(role, n_heads, n_kv), hd)
        reader = next((p for p in projections if p.roles == role), None)
        if kind == "unknown" or (kind == "full" and reader is None):
            raise _refuse(block, attn, f"({lay.name}) has a {name} whose shape fits no head layout")
        if kind in ("per_head", "per_head_list"):
            result.per_head_norms.append((role, norm, kind))
        elif kind == "full" and reader is not None:
            reader.full_norm = name
    _check_shapes(block, result)
    _check_nothing_else(block, result, [norm for _, norm in norms.values()])
    return result


def _kv_heads(block, attn, lay, projections: list[Projection], n_heads: int, hd: int) -> int:
    fused = next((p for p in projections if "q" in p.roles and "k" in p.roles), None)
    if fused is not None:
        spare = weight_view(fused.module).shape[0] // hd - n_heads  # rows left for K and V heads
        n_kv = spare // 2 if spare > 0 and spare % 2 == 0 else 0
    else:
        k = next(p for p in projections if p.roles == "k")
        rows = k.select.keep.numel() if k.select is not None else weight_view(k.module).shape[0]
        n_kv = rows // hd
    if n_kv <= 0 or n_heads % n_kv:
        raise _refuse(
            block, attn, f"({lay.name}) has K/V widths that do not divide into {n_heads} query heads"
        )
    return n_kv


def _check_shapes(block: nn.Module, lay: HeadLayout) -> None:
    for p in lay.projections:
        need = sum(_count(r, lay.n_heads, lay.n_kv) for r in p.roles) * lay.head_dim
        have = weight_view(p.module).shape[0]
        if p.select is not None:  # rows stay; the selection must pick one row per current head position
            have = p.select.keep.numel() if int(p.select.keep.max()) < have else -1
        if have != need:
            raise _refuse(
                block,
                lay.attn,
                f"({lay.layout.name}) has {have} output rows in a projection where {lay.n_heads} query / "
                f"{lay.n_kv} KV heads of size {lay.head_dim} need {need}",
            )


def _check_nothing_else(block: nn.Module, lay: HeadLayout, norms: list[nn.Module]) -> None:
    """Refuse attention modules with parameters the layout does not account for: pruning around them would
    give a model that computes something else."""
    known = {id(p.module) for p in lay.projections} | {id(lay.output)}
    known |= {id(m) for norm in norms for m in norm.modules()}
    unknown = [
        name for name, _ in lay.attn.named_parameters(recurse=False) if name not in PER_HEAD_PARAMETERS
    ]
    for name, module in lay.attn.named_modules():
        if name and id(module) not in known:
            unknown += [f"{name}.{p}" for p, _ in module.named_parameters(recurse=False)]
    if unknown:
        raise _refuse(
            block,
            lay.attn,
            f"({lay.layout.name}) has parameters head pruning cannot place: {', '.join(unknown)}",
        )


# ----------------------------------------------------------------------------------------------------------------
# Removing heads.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadCut:
    """Which heads of one block stay (current indices, ascending)."""

    q: list[int]
    kv: list[int]


def check_cut(lay: HeadLayout, cut: HeadCut) -> None:
    """Raise SpecError when the layout cannot hold the new counts, before anything is changed."""
    for p in lay.projections:
        if not p.full_norm:
            PACKINGS[p.packing](lay.attn, len(cut.q), len(cut.kv), lay.head_dim, p.roles)


def remove_heads(lay: HeadLayout, cut: HeadCut) -> None:
    """Remove every head not in `cut` from the block's attention, in place, keeping the forward consistent."""
    attn, hd = lay.attn, lay.head_dim
    heads, kv = len(cut.q), len(cut.kv)
    kept = {"q": torch.tensor(cut.q, dtype=torch.long), "k": torch.tensor(cut.kv, dtype=torch.long)}
    kept["v"] = kept["k"]
    for p in lay.projections:
        if p.full_norm:
            keep = lay.rows(p, p.roles)[kept[p.roles]].flatten().to(weight_view(p.module).device)
            if p.select is None:
                setattr(attn, p.full_norm, HeadSelect(getattr(attn, p.full_norm), keep))
            else:
                p.select.keep = keep
            continue
        old = PACKINGS[p.packing](attn, lay.n_heads, lay.n_kv, hd, p.roles)
        new = PACKINGS[p.packing](attn, heads, kv, hd, p.roles)
        order = torch.empty(sum(t.numel() for t in new.values()), dtype=torch.long)
        for role in p.roles:
            order[new[role].flatten()] = old[role][kept[role]].flatten()
        slice_layer(p.module, "out", order)
    cols = torch.arange(lay.n_heads * hd).view(lay.n_heads, hd)[kept["q"]].flatten()
    slice_layer(lay.output, "in", cols)
    for role, norm, kind in lay.per_head_norms:
        if kind == "per_head":
            _slice_parameters(norm, kept[role])
        else:  # a list of per-head norms, applied to the heads in order
            name, members = next((n, c) for n, c in norm.named_children() if isinstance(c, nn.ModuleList))
            setattr(norm, name, nn.ModuleList([members[h] for h in kept[role].tolist()]))
            if getattr(norm, "num_heads", None) == len(members):
                norm.num_heads = len(kept[role])  # type: ignore[assignment]  # nn.Module types attributes Tensor | Module
    for name in PER_HEAD_PARAMETERS:
        if isinstance(getattr(attn, name, None), nn.Parameter):
            _slice_parameters(attn, kept["q"], names=(name,))
    _cut_alibi(attn, lay.n_heads, kept["q"])
    _set_counts(lay, heads, kv)


def _slice_parameters(module: nn.Module, keep: torch.Tensor, names: tuple[str, ...] | None = None) -> None:
    """Keep entries `keep` along dim 0 of the module's own parameters (all of them, or `names`)."""
    for name, param in list(module.named_parameters(recurse=False)):
        if names is None or name in names:
            sliced = param.data.index_select(0, keep.to(param.device)).contiguous()
            setattr(module, name, nn.Parameter(sliced, requires_grad=param.requires_grad))


def _cut_alibi(attn: nn.Module, old_heads: int, kept: torch.Tensor) -> None:
    if "alibi" not in inspect.signature(attn.forward).parameters:
        return
    hook = next((h for h in attn._forward_pre_hooks.values() if isinstance(h, AlibiHeads)), None)
    if hook is None:
        hook = AlibiHeads(old_heads, torch.arange(old_heads))
        attn.register_forward_pre_hook(hook, with_kwargs=True)
    hook.heads = hook.heads[kept]


def _set_counts(lay: HeadLayout, heads: int, kv: int) -> None:
    hd, attn = lay.head_dim, lay.attn
    old = {"heads": lay.n_heads, "kv": lay.n_kv, "groups": lay.group_size, "q_width": lay.n_heads * hd,
           "kv_width": lay.n_kv * hd}  # fmt: skip
    new = {"heads": heads, "kv": kv, "groups": heads // kv, "q_width": heads * hd, "kv_width": kv * hd}
    for name, what in HEAD_COUNT_ATTRIBUTES.items():
        value = getattr(attn, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value == old[what]:
            setattr(attn, name, new[what])
    if lay.layout.config_counts:
        config = attn.config
        base, overrides = (
            (config.__dict__["_base"], config.__dict__["_overrides"])
            if isinstance(config, ConfigView)
            else (config, {})
        )
        # nn.Module types its attributes Tensor | Module; `config` is a plain attribute
        attn.config = ConfigView(base, **{**overrides, **dict.fromkeys(lay.layout.config_counts, heads)})  # type: ignore[assignment]
