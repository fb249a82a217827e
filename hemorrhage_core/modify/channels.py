"""MLP channel layouts for structured pruning, described as data: where each intermediate channel lives.

A channel of a dense MLP is a row of every input projection (gate and up; one row in each half of a fused
[gate; up] projection) and a column of the output projection. `MLP_LAYOUTS` lists the dense layouts by module
names; the block's MLP (`structure.mlp_of`, or the block itself for OPT-style blocks that hold fc1/fc2 directly)
is searched for modules that match a row, so a mixture of experts with a dense shared expert (Qwen2-MoE) or
experts kept as a list of MLPs yields one channel group per dense MLP.

Fused experts (transformers' 3-D parameters `gate_up_proj` [E, 2I, d] or `up_proj` [E, I, d], and `down_proj`
[E, d, I]; `is_transposed` means [E, in, out]; `is_concatenated=False` means gate and up interleave) are pruned
per expert: every expert loses the same number of channels (one 3-D tensor holds them all), each its own least
important ones. Each expert matrix is scored as a `WeightTarget` (targets.py), so "activation" reads the tokens
routed to that expert and its own gated activation (taps.py), and "taylor" its slice of the gradient.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import SpecError
from ..structure import attention_of, mlp_of, text_config
from .targets import LINEAR_TYPES, WeightTarget, slice_layer, weight_view

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MlpLayout:
    name: str
    inputs: tuple[str, ...]  # projections whose output rows are the channels
    output: str  # the projection whose input columns are the channels
    examples: str
    halves: int = 1  # 2: the one input holds [gate; up], `width` rows each


MLP_LAYOUTS: tuple[MlpLayout, ...] = (
    MlpLayout("gate_proj/up_proj/down_proj", ("gate_proj", "up_proj"), "down_proj",
              "Llama, Mistral, Qwen, Gemma, OLMo, shared experts"),
    MlpLayout("gate_up_proj [gate; up] + down_proj", ("gate_up_proj",), "down_proj", "Phi-3", halves=2),
    MlpLayout("w1/w3/w2", ("w1", "w3"), "w2", "experts kept as MLP lists"),
    MlpLayout("up_proj/down_proj", ("up_proj",), "down_proj", "ungated MLPs"),
    MlpLayout("c_fc/c_proj", ("c_fc",), "c_proj", "GPT-2, GPT-BigCode"),
    MlpLayout("fc1/fc2", ("fc1",), "fc2", "OPT, Phi, BioGPT, XGLM"),
    MlpLayout("fc_in/fc_out", ("fc_in",), "fc_out", "GPT-J, CodeGen"),
    MlpLayout("dense_h_to_4h/dense_4h_to_h", ("dense_h_to_4h",), "dense_4h_to_h", "GPT-NeoX, BLOOM, Falcon"),
)  # fmt: skip

EXPERT_LAYOUT = "fused experts gate_up_proj or up_proj [E, ·, ·] + down_proj [E, ·, ·]"
# Attributes of an MLP / experts module holding its channel count; updated where equal to the old count.
WIDTH_ATTRIBUTES = ("intermediate_size", "intermediate_dim", "expert_dim", "ffn_dim")


def supported_layouts() -> str:
    return "; ".join(f"{lay.name} ({lay.examples})" for lay in MLP_LAYOUTS) + f"; {EXPERT_LAYOUT} (MoE)"


def _refuse(block: nn.Module, why: str) -> SpecError:
    return SpecError(
        f"prune_channels: the MLP of {type(block).__name__} {why}; supported layouts: {supported_layouts()}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Dense MLPs.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class DenseChannels:
    """One dense MLP: channel c is `index[c]` along `side` of each part's [out, in] weight."""

    layout: MlpLayout
    owner: nn.Module
    width: int
    parts: list[tuple[nn.Module, str, torch.Tensor]]  # (module, side, [width, size] indices)

    def remove(self, gone: list[int]) -> None:
        gone_set = set(gone)
        keep = torch.tensor([c for c in range(self.width) if c not in gone_set], dtype=torch.long)
        for module, side, index in self.parts:
            slice_layer(module, side, index[keep].T.flatten().sort().values)
        _set_width(self.owner, self.width, len(keep))


def _dense(block: nn.Module, module: nn.Module, lay: MlpLayout) -> DenseChannels | None:
    if not all(isinstance(getattr(module, n, None), LINEAR_TYPES) for n in (*lay.inputs, lay.output)):
        return None
    output = getattr(module, lay.output)
    width = weight_view(output).shape[1]
    parts = []
    for name in lay.inputs:
        rows = weight_view(getattr(module, name)).shape[0]
        if rows != lay.halves * width:
            raise _refuse(block, f"({lay.name}) has {name} with {rows} rows for {width} channels")
        index = torch.arange(rows).view(lay.halves, width).T  # channel c: row c of every half
        parts.append((getattr(module, name), "out", index))
    parts.append((output, "in", torch.arange(width)[:, None]))
    # Another matrix of the channel width beside the known ones: a layout we would prune only in part.
    known = {id(getattr(module, n)) for n in (*lay.inputs, lay.output)}
    for name, child in module.named_children():
        if id(child) not in known and isinstance(child, LINEAR_TYPES) and width in weight_view(child).shape:
            raise _refuse(block, f"({lay.name}) has a further projection {name} of the channel width")
    return DenseChannels(lay, module, width, parts)


# ----------------------------------------------------------------------------------------------------------------
# Fused experts.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class ExpertChannels:
    """Fused experts: channel c of expert e is rows `up_rows[c]` of up[e] and column c of down[e] (canonical
    [E, out, in] orientation)."""

    module: nn.Module
    name: str  # of the experts module inside its block
    up_name: str  # "gate_up_proj" or "up_proj"
    transposed: bool
    gated: bool
    concatenated: bool
    n_experts: int
    width: int

    @property
    def up_rows(self) -> torch.Tensor:
        """[width, 1 or 2] rows of the up/gate_up matrix that belong to each channel."""
        c = torch.arange(self.width)
        if not self.gated:
            return c[:, None]
        return torch.stack((c, c + self.width) if self.concatenated else (2 * c, 2 * c + 1), dim=1)

    def canonical(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A stored [E, ·, ·] tensor of parameter `name` (or its gradient) as [E, out, in]."""
        return tensor.transpose(1, 2) if self.transposed else tensor

    def targets(self, block: nn.Module, index: int, block_name: str) -> dict[str, list[WeightTarget]]:
        """Per parameter (up, down), one `WeightTarget` per expert: the [out, in] matrices the importance scores
        read, with each expert's routed inputs (taps.py) and gradients. `block_name`: "model.layers.3"."""
        prefix = f"{block_name}.{self.name}"
        return {
            param: [
                WeightTarget(
                    name=f"{prefix}.{param}.{e}",
                    module=self.module,
                    module_name=prefix,
                    param=param,
                    kind="expert",
                    expert=e,
                    transposed=self.transposed,
                    block=index,
                    block_module=block,
                )  # fmt: skip
                for e in range(self.n_experts)
            ]
            for param in (self.up_name, "down_proj")
        }

    def channel_scores(self, up: list[torch.Tensor], down: list[torch.Tensor]) -> torch.Tensor:
        """[E, width] channel scores from each expert's up row sums [rows] and down column sums [width]."""
        rows = self.up_rows
        return torch.stack(
            [u.double().cpu()[rows].sum(-1) + d.double().cpu() for u, d in zip(up, down, strict=True)]
        )

    def remove(self, gone: torch.Tensor) -> None:
        """`gone` [E, r]: each expert's channels to remove."""
        keep_mask = torch.ones(self.n_experts, self.width, dtype=torch.bool)
        keep_mask.scatter_(1, gone.cpu(), False)
        keep = torch.stack([row.nonzero().flatten() for row in keep_mask])  # [E, width'] ascending
        up_keep = self.up_rows[keep].flatten(1).sort(dim=1).values  # [E, rows'] in stored order
        self._gather(self.up_name, up_keep, dim=1)
        self._gather("down_proj", keep, dim=2)
        if isinstance(getattr(self.module, f"{self.up_name}_bias", None), nn.Parameter):
            self._gather(f"{self.up_name}_bias", up_keep, dim=1, canonical=False)
        _set_width(self.module, self.width, keep.shape[1])
        self.width = keep.shape[1]

    def _gather(self, name: str, index: torch.Tensor, dim: int, canonical: bool = True) -> None:
        param = getattr(self.module, name)
        data = self.canonical(name, param.data) if canonical else param.data
        index = index.to(data.device)
        shape = list(data.shape)
        shape[dim] = index.shape[1]
        view = index.view(index.shape[0], *(index.shape[1] if d == dim else 1 for d in range(1, data.dim())))
        picked = torch.gather(data, dim, view.expand(shape))
        if canonical:
            picked = self.canonical(name, picked)
        setattr(self.module, name, nn.Parameter(picked.contiguous(), requires_grad=param.requires_grad))


def _experts(block: nn.Module, name: str, module: nn.Module, hidden: int) -> ExpertChannels | None:
    down = getattr(module, "down_proj", None)
    if not (isinstance(down, nn.Parameter) and down.dim() == 3):
        return None
    gated = isinstance(getattr(module, "gate_up_proj", None), nn.Parameter)
    up_name = "gate_up_proj" if gated else "up_proj"
    up = getattr(module, up_name, None)
    if not (isinstance(up, nn.Parameter) and up.dim() == 3):
        raise _refuse(block, f"({EXPERT_LAYOUT}) has down_proj but no 3-D {up_name}")
    transposed = getattr(module, "is_transposed", None)
    if transposed is None:  # not declared: read it from the shapes where they are unambiguous
        plain, flipped = down.shape[1] == hidden, down.shape[2] == hidden
        if plain == flipped:
            raise _refuse(block, f"({EXPERT_LAYOUT}) does not say whether its experts are transposed")
        transposed = flipped
    concatenated = getattr(module, "is_concatenated", None)
    if gated and concatenated is None:
        raise _refuse(block, f"({EXPERT_LAYOUT}) does not say whether gate and up are concatenated")
    width = down.shape[1] if transposed else down.shape[2]
    rows = up.shape[2] if transposed else up.shape[1]
    if rows != (2 if gated else 1) * width:
        raise _refuse(block, f"({EXPERT_LAYOUT}) has {up_name} with {rows} rows for {width} channels")
    return ExpertChannels(
        module, name, up_name, bool(transposed), gated, bool(concatenated), down.shape[0], width
    )


def _set_width(module: nn.Module, old: int, new: int) -> None:
    for name in WIDTH_ATTRIBUTES:
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value == old:
            setattr(module, name, new)


# ----------------------------------------------------------------------------------------------------------------
# A block's channel groups.
# ----------------------------------------------------------------------------------------------------------------


def channel_groups(block: nn.Module, model: PreTrainedModel) -> list[DenseChannels | ExpertChannels]:
    """Every channel group of the block's MLP (one per dense MLP, one per fused experts module)."""
    found = mlp_of(block)
    root = found[1] if found is not None else block
    attn = attention_of(block)
    skip = {id(m) for m in attn[1].modules()} if attn is not None and found is None else set()
    hidden = int(text_config(model).hidden_size)
    groups: list[DenseChannels | ExpertChannels] = []

    def visit(name: str, module: nn.Module) -> None:
        if id(module) in skip:
            return
        group = _experts(block, name, module, hidden) or next(
            (g for lay in MLP_LAYOUTS if (g := _dense(block, module, lay)) is not None), None
        )
        if group is not None:
            groups.append(group)
            return
        for child_name, child in module.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit(found[0] if found is not None else "", root)
    if not groups:
        linears = [n for n, m in root.named_modules() if isinstance(m, LINEAR_TYPES) and id(m) not in skip]
        raise _refuse(block, f"has no known channel layout (its projections: {', '.join(linears) or 'none'})")
    return groups
