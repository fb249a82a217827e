"""The inputs each weight matrix multiplies, for the calibrated modifications (Wanda, SparseGPT, GPTQ, AWQ, ...).

A Linear's input is its forward argument (a forward pre-hook). A fused experts module multiplies all of its
experts' matrices inside one kernel call, so their inputs are recomputed from what the module receives,
`forward(hidden_states [N, d], top_k_index [N, k], top_k_weights [N, k])` (the experts integration's contract):

* expert e's first projection (`gate_up_proj`, or `up_proj` for experts without a gate) reads the tokens routed
  to it, hidden_states[(top_k_index == e).any(-1)];
* its `down_proj` reads the gated activation of those rows, computed with the module's own (current, possibly
  already modified) weights, bias and `_apply_gate` (`act_fn` without a gate), as the batched and grouped
  kernels compute it.

Every expert is reported on every call, with zero rows when no token was routed to it, so a never-routed expert
is visible as such and groups can be read off one batch.

`sequences`: how many calibration sequences the call covered (Wanda's ‖X_j‖ is a mean over sequences). A Linear
usually sees [B, T, in]; experts, routers and Qwen2-MoE's shared expert see flattened tokens [N, in], so their B
is read off the input of the block that holds them.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .targets import FIRST_PROJECTIONS, SECOND_PROJECTION, WeightTarget

InputFn = Callable[[WeightTarget, torch.Tensor, int], None]  # (target, x [..., in], sequences of the call)


def routing_args(module: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden_states [N, d], top_k_index [N, k]) from an experts module's call, whatever the names (GPT-OSS
    calls them router_indices / routing_weights)."""
    if len(args) >= 2:
        return args[0], args[1]
    original = inspect.unwrap(type(module).forward)
    values = list(inspect.signature(original).bind(module, *args, **kwargs).arguments.values())[1:]
    return values[0], values[1]


def first_projection(module: nn.Module) -> str:
    return FIRST_PROJECTIONS[0] if module.has_gate else FIRST_PROJECTIONS[1]


@torch.no_grad()
def gated_activation(module: nn.Module, expert: int, x: torch.Tensor) -> torch.Tensor:
    """Expert `expert`'s down_proj input for its routed rows x [n, d]: the gated (or activated) first projection."""
    first = first_projection(module)
    w = getattr(module, first)[expert]
    h = x @ w if module.is_transposed else F.linear(x, w)
    if module.has_bias:
        h = h + getattr(module, f"{first}_bias")[expert]
    activate = module._apply_gate if module.has_gate else module.act_fn
    if not callable(activate):  # nn.Module's attribute lookup is typed Tensor | Module; these are methods
        raise TypeError(f"{type(module).__name__}: its activation is not callable")
    return activate(h)


@torch.no_grad()
def expert_inputs(
    module: nn.Module, hidden: torch.Tensor, top_k_index: torch.Tensor, params: set[str]
) -> Iterator[tuple[str, int, torch.Tensor]]:
    """(parameter, expert, x [n_e, in]) for every expert and each requested parameter, n_e >= 0."""
    first = first_projection(module)
    # All first projections before all second ones: the call order of a kernel that runs them as two batched
    # products, and what lets a caller treat each parameter's experts as one consecutive stage.
    num_experts = module.num_experts
    if not isinstance(num_experts, int):  # nn.Module's attribute lookup is typed Tensor | Module
        raise TypeError(f"{type(module).__name__}.num_experts is not an int")
    routed = [hidden[(top_k_index == e).any(dim=-1)] for e in range(num_experts)]
    if first in params:
        for e, x in enumerate(routed):
            yield first, e, x
    if SECOND_PROJECTION in params:
        for e, x in enumerate(routed):
            yield SECOND_PROJECTION, e, gated_activation(module, e, x)


def _leading(args: tuple, kwargs: dict) -> int:
    """Sequences in a block call: the leading size of its hidden states [B, T, d]."""
    x = args[0] if args else kwargs.get("hidden_states")
    return x.shape[0] if isinstance(x, torch.Tensor) and x.dim() > 2 else 1


@contextmanager
def target_inputs(targets: Iterable[WeightTarget], fn: InputFn) -> Iterator[None]:
    """Call `fn(target, x, sequences)` with the input of every target while the body runs forwards; hooks are
    removed on exit."""
    targets = list(targets)
    linear: dict[int, list[WeightTarget]] = defaultdict(list)
    experts: dict[int, dict[tuple[str, int | None], WeightTarget]] = defaultdict(dict)
    modules: dict[int, nn.Module] = {}
    blocks: dict[int, nn.Module] = {}
    batch: dict[int, int] = {}  # id(block) -> sequences of its current call
    for t in targets:
        modules[id(t.module)] = t.module
        if t.block_module is not None:
            blocks[id(t.block_module)] = t.block_module
        if t.kind == "expert":
            experts[id(t.module)][(t.param, t.expert)] = t
        else:
            linear[id(t.module)].append(t)

    def sequences(t: WeightTarget, x: torch.Tensor) -> int:
        if x.dim() > 2:
            return x.shape[0]
        return batch.get(id(t.block_module), 1)

    def on_block(_module, args, kwargs):
        batch[id(_module)] = _leading(args, kwargs)

    def on_linear(members: list[WeightTarget]):
        def hook(_module, args):
            x = args[0]  # the tensor itself, not a detached copy: callers group layers by input identity
            for t in members:
                fn(t, x, sequences(t, x))

        return hook

    def on_experts(members: dict[tuple[str, int | None], WeightTarget]):
        params = {p for p, _ in members}

        def hook(module, args, kwargs):
            hidden, index = routing_args(module, args, kwargs)
            for param, e, x in expert_inputs(module, hidden, index, params):
                t = members.get((param, e))
                if t is not None:
                    fn(t, x, sequences(t, x))

        return hook

    handles = []
    try:
        for block in blocks.values():
            handles.append(block.register_forward_pre_hook(on_block, with_kwargs=True))
        for key, members in linear.items():
            handles.append(modules[key].register_forward_pre_hook(on_linear(members)))
        for key, by_expert in experts.items():
            handles.append(modules[key].register_forward_pre_hook(on_experts(by_expert), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
