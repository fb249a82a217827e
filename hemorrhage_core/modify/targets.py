"""Which weight matrices a modification touches, each as an [out_features, in_features] view of its parameter.

A `WeightTarget` is one matrix: a `nn.Linear` weight, a GPT-2 `Conv1D` weight (stored [in, out]), one expert of a
fused 3-D experts parameter (transformers 5 stores MoE experts as `gate_up_proj` [E, 2I, d] and `down_proj`
[E, d, I], or [E, in, out] when the class says `is_transposed`, as GPT-OSS does), or a router weight. `view()`
hides the layout, so every quantizer and pruner works on rows = output channels and treats an expert matrix like
a Linear.

`plan_targets` decides what one modification touches and says what it does not (coverage.py keeps the tally):

* the routers of MoE blocks (`mlp.gate`, `router`, Qwen2-MoE's `shared_expert_gate`) are excluded unless
  `include_router` is set: a few thousand weights that decide which experts run, where a rounding error changes
  the routing of whole tokens rather than one output channel;
* `lm_head` and the embeddings are excluded unless asked for; when `lm_head` is included and tied to the input
  embedding it is untied first, so that only the output projection changes;
* any other weight matrix inside the blocks that no target kind describes (a Mamba convolution, an experts class
  of unknown layout) is *unhandled*: the modification refuses to run unless the spec asks for a partial scope.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..structure import find_blocks

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

LINEAR_TYPES = (nn.Linear, Conv1D)

# Fused-experts parameters whose role (and so whose input) is known: transformers' experts integration calls the
# first projection `gate_up_proj` (gated experts) or `up_proj`, and the second `down_proj`.
FIRST_PROJECTIONS = ("gate_up_proj", "up_proj")
SECOND_PROJECTION = "down_proj"
# Children of an MoE block that compute routing weights: the top-k router and Qwen2-MoE's shared-expert gate.
ROUTER_NAMES = frozenset({"gate", "router", "shared_expert_gate"})
_ROUTER_CLASS = re.compile(r"Router", re.IGNORECASE)


def tensor_attr(module: nn.Module, name: str) -> torch.Tensor:
    """A tensor attribute of a module (`weight`, `bias`, an experts parameter), checked to be one: nn.Module's
    attribute lookup is typed Tensor | Module, and a module in its place would be a layout this code misreads."""
    value = getattr(module, name)
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.{name} is a {type(value).__name__}, not a tensor")
    return value


def weight_view(module: nn.Module) -> torch.Tensor:
    """The module's weight as an [out, in] tensor that shares storage with the parameter."""
    w = tensor_attr(module, "weight").data
    return w.t() if isinstance(module, Conv1D) else w


def set_weight(module: nn.Module, w_out_in: torch.Tensor) -> None:
    """Write an [out, in] tensor back into the module's parameter, in place and in its own layout and dtype."""
    target = weight_view(module)
    target.copy_(w_out_in.to(target.dtype))


def untie_lm_head(model: PreTrainedModel) -> None:
    """Give lm_head its own copy of the weight if it shares it with the input embedding."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or emb is None:
        return
    weight = tensor_attr(head, "weight")
    if weight.data_ptr() == tensor_attr(emb, "weight").data_ptr():
        head.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        log.info("untied lm_head from the input embedding so only the output projection is modified")


def linear_targets(
    model: PreTrainedModel, *, include_lm_head: bool = False
) -> Iterator[tuple[str, nn.Module]]:
    """Yield (qualified name, module) for every Linear/Conv1D weight (the dense-only view; MoE-aware callers use
    `plan_targets`)."""
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


# ----------------------------------------------------------------------------------------------------------------
# One weight matrix.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class WeightTarget:
    """One weight matrix a modification may change, seen as [out, in]. Identity-hashed (one object per matrix)."""

    name: str  # unique and readable: "model.layers.0.mlp.down_proj", "model.layers.0.mlp.experts.down_proj.3"
    module: nn.Module  # the module that holds the parameter (the experts module for an expert matrix)
    module_name: str
    param: str  # attribute of `module`: "weight", "gate_up_proj", "down_proj", ...
    kind: str = "linear"  # "linear" (Linear / Conv1D), "expert", "router"
    expert: int | None = None  # index along the stacked parameter's first dimension
    transposed: bool = False  # stored [in, out] (Conv1D, `is_transposed` experts)
    block: int | None = None  # index of the block that holds it (None: outside the blocks)
    # The block holding it: its input [B, T, d] says how many sequences a calibration call covers, which a
    # layer fed flattened tokens [N, in] (experts, routers, Qwen2-MoE's shared expert) cannot tell.
    block_module: nn.Module | None = None

    @property
    def param_name(self) -> str:
        """The qualified parameter name, as `model.named_parameters()` spells it."""
        return f"{self.module_name}.{self.param}" if self.module_name else self.param

    @property
    def parameter(self) -> torch.Tensor:
        return tensor_attr(self.module, self.param)

    def _orient(self, t: torch.Tensor) -> torch.Tensor:
        t = t[self.expert] if self.expert is not None else t
        return t.t() if self.transposed else t

    def view(self) -> torch.Tensor:
        """The matrix as [out, in], sharing storage with the parameter."""
        return self._orient(self.parameter.data)

    def write(self, w_out_in: torch.Tensor) -> None:
        """Write an [out, in] tensor into the parameter, in place, in its own layout and dtype."""
        target = self.view()
        target.copy_(w_out_in.to(target.dtype))

    def grad_view(self) -> torch.Tensor:
        """The parameter's gradient for this matrix as fp32 [out, in]."""
        grad = self.parameter.grad
        if grad is None:
            raise RuntimeError(f"{self.param_name} has no gradient: the backward pass did not reach it")
        return self._orient(grad).float()

    @property
    def shape(self) -> tuple[int, int]:
        out_f, in_f = self.view().shape
        return out_f, in_f

    @property
    def numel(self) -> int:
        out_f, in_f = self.shape
        return out_f * in_f

    @property
    def role(self) -> str | None:
        """For an expert matrix: "first" (reads the experts' input) or "second" (reads the gated activation)."""
        if self.kind != "expert":
            return None
        return "first" if self.param in FIRST_PROJECTIONS else "second"

    @property
    def stage(self) -> tuple[int, str] | None:
        """Expert matrices of one parameter read disjoint tokens of one input: one calibration stage for them all."""
        return (id(self.module), self.param) if self.kind == "expert" else None


def linear_target(
    name: str,
    module: nn.Module,
    *,
    kind: str = "linear",
    block: int | None = None,
    block_module: nn.Module | None = None,
) -> WeightTarget:
    """The target of a Linear / Conv1D (or of a router module with an F.linear-style [out, in] `weight`)."""
    return WeightTarget(
        name=name,
        module=module,
        module_name=name,
        param="weight",
        kind=kind,
        transposed=isinstance(module, Conv1D),
        block=block,
        block_module=block_module,
    )


def as_targets(modules: Mapping[str, nn.Module | WeightTarget]) -> dict[str, WeightTarget]:
    """Name -> target, for callers that still pass Linear / Conv1D modules by name."""
    return {n: m if isinstance(m, WeightTarget) else linear_target(n, m) for n, m in modules.items()}


# ----------------------------------------------------------------------------------------------------------------
# Fused experts and routers.
# ----------------------------------------------------------------------------------------------------------------


def is_experts(module: nn.Module) -> bool:
    """A module decorated by transformers' `use_experts_implementation` (it sets these flags on every instance)."""
    return all(hasattr(module, a) for a in ("has_gate", "is_transposed", "num_experts")) and any(
        p.dim() == 3 for p in module.parameters(recurse=False)
    )


def holds_experts(module: nn.Module) -> bool:
    """Decorated experts, or a module with `num_experts` and a 3-D parameter (Llama 4's and JetMoE's own
    layouts): what the router next to it routes to."""
    return is_experts(module) or (
        hasattr(module, "num_experts") and any(p.dim() == 3 for p in module.parameters(recurse=False))
    )


def experts_matrices(module: nn.Module) -> list[str]:
    """The names of an experts module's stacked [E, ., .] weight parameters whose role is known."""
    known = (*FIRST_PROJECTIONS, SECOND_PROJECTION)
    return [n for n, p in module.named_parameters(recurse=False) if p.dim() == 3 and n in known]


def _logical_dim(owner: nn.Module, param: torch.Tensor) -> int:
    """A stacked experts parameter holds one tensor per expert: [E, out] is a bias per expert, not a matrix."""
    return param.dim() - 1 if is_experts(owner) else param.dim()


def _router_modules(block: nn.Module) -> set[int]:
    """ids of every module inside the routers of the block's MoE layers (children of an experts module's parent,
    or grandparent, named `gate` / `router` / `shared_expert_gate` or of a *Router class)."""
    parents: dict[int, nn.Module] = {}
    for module in block.modules():
        for child in module.children():
            parents[id(child)] = module
    routers: set[int] = set()
    for module in block.modules():
        if not holds_experts(module):
            continue
        owner = parents.get(id(module))
        for candidate in (owner, parents.get(id(owner)) if owner is not None else None):
            if candidate is None:
                continue
            for name, child in candidate.named_children():
                if child is module or any(holds_experts(m) for m in child.modules()):
                    continue
                if name in ROUTER_NAMES or _ROUTER_CLASS.search(type(child).__name__):
                    routers.update(id(m) for m in child.modules())
    return routers


# ----------------------------------------------------------------------------------------------------------------
# The plan of one modification.
# ----------------------------------------------------------------------------------------------------------------

Supports = Callable[[WeightTarget], str | None]  # target -> None if the handler modifies it, else why not


@dataclass
class Plan:
    """What one modification touches: its targets, and the block weight matrices it leaves alone.

    `excluded` / `unhandled`: module name -> reason. Excluded matrices are documented exclusions (the router by
    default) and leave the coverage denominator; unhandled ones stay in it and make the run partial.
    `block_weights`: weight-matrix parameters inside the blocks; `excluded_weights`: how many of them are excluded.
    """

    targets: list[WeightTarget]
    block_weights: int = 0
    excluded_weights: int = 0
    excluded: dict[str, str] = field(default_factory=dict)
    unhandled: dict[str, str] = field(default_factory=dict)
    unhandled_weights: int = 0

    def by_name(self) -> dict[str, WeightTarget]:
        return {t.name: t for t in self.targets}


def _block_matrices(model: PreTrainedModel) -> Iterator[tuple[int, str, nn.Module, str, nn.Parameter]]:
    """(block index, module name, module, parameter attribute, parameter) of every weight matrix in the blocks."""
    blocks = find_blocks(model)
    names = {id(m): n for n, m in model.named_modules()}
    seen: set[int] = set()  # a module shared by several blocks is one set of weights, counted once
    for i, block in enumerate(blocks):
        for module in block.modules():
            for pname, p in module.named_parameters(recurse=False):
                if _logical_dim(module, p) >= 2 and id(p) not in seen:
                    seen.add(id(p))
                    yield i, names[id(module)], module, pname, p


def _classify(
    block: int, block_module: nn.Module, module_name: str, module: nn.Module, pname: str, routers: set[int]
) -> tuple[list[WeightTarget], str | None]:
    """The targets of one block parameter, or why no target kind describes it."""
    kind = "router" if id(module) in routers else None
    where: dict[str, Any] = dict(block=block, block_module=block_module)
    if isinstance(module, LINEAR_TYPES) and pname == "weight":
        return [linear_target(module_name, module, kind=kind or "linear", **where)], None
    if is_experts(module):
        p = getattr(module, pname)
        if p.dim() != 3 or pname not in experts_matrices(module):
            return (
                [],
                f"{type(module).__name__}.{pname} {tuple(p.shape)}: an experts parameter of unknown role",
            )
        return [
            WeightTarget(
                name=f"{module_name}.{pname}.{e}",
                module=module,
                module_name=module_name,
                param=pname,
                kind="expert",
                expert=e,
                transposed=bool(module.is_transposed),
                **where,
            )
            for e in range(p.shape[0])
        ], None
    p = getattr(module, pname)
    if kind == "router" and pname == "weight" and p.dim() == 2:  # TopKRouter: F.linear(x, weight)
        return [linear_target(module_name, module, kind="router", **where)], None
    if holds_experts(module):
        return (
            [],
            f"{type(module).__name__}.{pname} {tuple(p.shape)}: fused experts outside transformers' experts "
            "integration (layout and inputs unknown)",
        )
    return (
        [],
        f"{type(module).__name__}.{pname} {tuple(p.shape)}: not a Linear, Conv1D or fused-experts weight",
    )


# State-space layers (Mamba, Jamba, hybrids): the discretised state matrix A (stored as A_log) and the depthwise
# temporal convolution are not weight matrices of the compression literature; Mamba quantizers (Quamba,
# MambaQuant) keep them in full precision and quantize the projections around them. A documented exclusion, like
# the router.
STATE_SPACE_EXCLUSION = (
    "state-space parameter (A_log, depthwise conv1d): kept in full precision, as Mamba quantizers do"
)


def _state_space(module: nn.Module, pname: str) -> bool:
    return pname == "A_log" or isinstance(module, nn.Conv1d)


def plan_targets(model: PreTrainedModel, mod, *, supports: Supports | None = None) -> Plan:
    """Every weight matrix `mod` should touch, and the block matrices it leaves out (with reasons).

    Reads `include_lm_head` and `include_router` off `mod` when its spec has them. `supports(target)` says which
    targets this handler can modify (None: all); the others become unhandled with its reason. Linear layers
    outside the blocks (not the head) stay targets, as before MoE support; the coverage counts the blocks only.
    """
    include_head = bool(getattr(mod, "include_lm_head", False))
    include_router = bool(getattr(mod, "include_router", False))
    plan = Plan(targets=[])
    blocks = find_blocks(model)
    in_blocks = {id(m) for block in blocks for m in block.modules()}
    routers = {i: _router_modules(block) for i, block in enumerate(blocks)}
    names = {id(m): n for n, m in model.named_modules()}
    for i, module_name, module, pname, p in _block_matrices(model):
        numel = p.numel()
        plan.block_weights += numel
        if _state_space(module, pname):
            plan.excluded_weights += numel
            plan.excluded[module_name] = STATE_SPACE_EXCLUSION
            continue
        if id(module) in routers[i] and not include_router:
            plan.excluded_weights += numel
            plan.excluded[module_name] = "router: excluded by default (include_router=True modifies it)"
            continue
        targets, reason = _classify(i, blocks[i], module_name, module, pname, routers[i])
        if reason is None and supports is not None:
            why = {w for t in targets if (w := supports(t)) is not None}
            if why:
                reason = "; ".join(sorted(why))
        if reason is not None:
            known = plan.unhandled.get(module_name)
            plan.unhandled[module_name] = reason if known is None or reason in known else f"{known}; {reason}"
            plan.unhandled_weights += numel
            continue
        plan.targets.extend(targets)
    # Outside the blocks: Linear layers as before (lm_head only when asked for).
    if include_head:
        untie_lm_head(model)
    head = model.get_output_embeddings()
    for module in model.modules():
        if id(module) in in_blocks or not isinstance(module, LINEAR_TYPES):
            continue
        if module is head and not include_head:
            continue
        target = linear_target(names[id(module)], module)
        if supports is None or supports(target) is None:
            plan.targets.append(target)
    return plan


def slice_layer(module: nn.Module, side: str, keep: torch.Tensor) -> None:
    """Keep only the outputs (`side="out"`) or inputs (`"in"`) listed in `keep` (LongTensor, in the new order), in
    place. New parameters replace the old (nothing outside the module may hold them: the runner works on a copy).
    """
    conv = isinstance(module, Conv1D)
    weight = tensor_attr(module, "weight")
    w = weight.data  # Linear: [out, in]; Conv1D: [in, out]
    dim = (1 if conv else 0) if side == "out" else (0 if conv else 1)
    requires_grad = weight.requires_grad
    keep = keep.to(w.device)
    module.weight = nn.Parameter(w.index_select(dim, keep).contiguous(), requires_grad=requires_grad)
    if side == "out" and getattr(module, "bias", None) is not None:
        bias = tensor_attr(module, "bias").data[keep].contiguous()
        module.bias = nn.Parameter(bias, requires_grad=requires_grad)
    # The size attribute forward reads: Conv1D(nf=out, nx=in), Linear(out_features, in_features).
    size = {
        ("out", True): "nf",
        ("in", True): "nx",
        ("out", False): "out_features",
        ("in", False): "in_features",
    }
    setattr(module, size[side, conv], len(keep))
