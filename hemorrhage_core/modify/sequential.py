"""Block-by-block calibration: feed each transformer block the outputs of the blocks before it *as modified*.

GPTQ (and SparseGPT, AWQ) correct a block's error for the inputs it will really see. Calibrating every block on
the original model's activations ignores the error the earlier, already-quantized blocks add, and in practice
erases GPTQ's advantage over round-to-nearest. So:

1. `capture_block_calls` runs the decoder once with every block replaced by the identity and records, for every
   block and batch, the positional and keyword arguments the model passes it (attention mask, rotary position
   embeddings, ...), and block 0's hidden-state input. Recording every block's call rather than block 0's is what
   makes models with per-layer arguments work (Gemma 3 alternates sliding and global attention masks and rotary
   tables); the identity blocks make that capture cost one embedding lookup instead of a forward pass.
2. `walk_blocks` yields one `BlockStep` per block; the caller installs hooks, runs `step.forward()` to collect
   statistics (optionally stopping right after a given sub-module), modifies the block, and when the caller
   asks for the next step the walker runs the *modified* block to produce the next block's inputs.

Memory: the hidden states of the calibration set are held once ([n, T, d] float, e.g. 32 x 512 x 576 x 4 B =
38 MB on SmolLM2), plus the per-call arguments, which transformers shares between blocks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..progress import Progress
from ..structure import block_hidden, decoder, find_blocks, like_block_output
from .taps import target_inputs
from .targets import LINEAR_TYPES, WeightTarget, linear_target

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


@dataclass
class BlockCall:
    """The arguments a block receives besides its hidden states, for one batch."""

    args: tuple
    kwargs: dict


def _split_hidden(args: tuple, kwargs: dict) -> tuple[torch.Tensor, tuple, dict]:
    if args:
        return args[0], args[1:], kwargs
    kwargs = dict(kwargs)
    return kwargs.pop("hidden_states"), (), kwargs


@contextmanager
def _identity_blocks(blocks: nn.ModuleList, calls: list[list[BlockCall]], first_inputs: list[torch.Tensor]):
    """Replace every block's forward by a recorder that returns its hidden states unchanged."""

    # A block may return a tensor, a tuple or a list, and its decoder reads it as such: the recorders return the
    # form block 0 really returns (one real call of block 0, on the first batch).
    template: list = []

    def recorder(i: int):
        def forward(*args, **kwargs):
            hidden, rest, kw = _split_hidden(args, kwargs)
            calls[i].append(BlockCall(rest, kw))
            if i == 0:
                first_inputs.append(hidden.detach())
                if not template:
                    template.append(type(blocks[0]).forward(blocks[0], *args, **kwargs))
            return like_block_output(template[0], hidden)

        return forward

    for i, block in enumerate(blocks):
        block.forward = recorder(i)  # instance attribute shadows the class method; removed below
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


@torch.no_grad()
def capture_block_calls(
    model: PreTrainedModel, windows: torch.Tensor, *, batch_size: int
) -> tuple[list[torch.Tensor], list[list[BlockCall]]]:
    """Block 0's inputs per batch ([b, T, d] each) and every block's call arguments per batch.

    `windows`: LongTensor [n, T] of calibration token ids (moved to the model's device here).
    """
    blocks = find_blocks(model)
    device = next(model.parameters()).device
    calls: list[list[BlockCall]] = [[] for _ in blocks]
    first_inputs: list[torch.Tensor] = []
    stack = decoder(model)
    with _identity_blocks(blocks, calls, first_inputs):
        for start in range(0, windows.shape[0], batch_size):
            stack(input_ids=windows[start : start + batch_size].to(device), use_cache=False)
    return first_inputs, calls


class _StopForward(Exception):
    """Raised by a hook to end a block's forward once the statistics it needs are collected."""


@dataclass
class BlockStep:
    """One block of the walk with its current calibration inputs (outputs of the modified blocks before it)."""

    index: int
    block: nn.Module
    inputs: list[torch.Tensor]  # per batch: [b, T, d]
    calls: list[BlockCall]

    @torch.no_grad()
    def forward(self, *, stop_after: nn.Module | None = None) -> None:
        """Run the block on every calibration batch for the caller's hooks; discard the outputs.

        `stop_after`: end each batch's forward right after this sub-module has run (saves the rest of the block
        when only earlier sub-modules are being calibrated).
        """
        handle = None
        if stop_after is not None:

            def stop(_module, _inputs, _output):
                raise _StopForward

            handle = stop_after.register_forward_hook(stop)
        try:
            for hidden, call in zip(self.inputs, self.calls, strict=True):
                with suppress(_StopForward):
                    self.block(hidden, *call.args, **call.kwargs)
        finally:
            if handle is not None:
                handle.remove()

    @torch.no_grad()
    def outputs(self) -> list[torch.Tensor]:
        """The block's outputs per batch, [b, T, d] each, with the block as it is now."""
        outs = []
        for hidden, call in zip(self.inputs, self.calls, strict=True):
            out = self.block(hidden, *call.args, **call.kwargs)
            outs.append(block_hidden(out))
        return outs


def walk_blocks(
    model: PreTrainedModel,
    windows: torch.Tensor,
    *,
    batch_size: int = 8,
    progress: Progress | None = None,
    label: str = "calibration",
) -> Iterator[BlockStep]:
    """Yield a `BlockStep` per block in order. After the caller is done with a step (modified its block), the
    next step's inputs are that block's outputs. The model's blocks are restored before the first step.

    `progress` (a handler passes `ctx.progress`) hears "<label> block i/n" before each block, with the share of
    blocks done: blocks cost about the same, so the caller's ETA can extrapolate the time per block. It is also
    where a cancel is noticed (ModContext.progress raises Cancelled), so a cancel waits for one block at most.
    """
    blocks = find_blocks(model)
    if progress is not None:
        progress(0.0, f"{label}: capturing the calibration inputs")
    inputs, calls = capture_block_calls(model, windows, batch_size=batch_size)
    for i, block in enumerate(blocks):
        if progress is not None:
            progress(i / len(blocks), f"{label} block {i + 1}/{len(blocks)}")
        step = BlockStep(i, block, inputs, calls[i])
        yield step
        inputs = step.outputs()
        log.debug("block %d done", i)
    if progress is not None:
        progress(1.0, f"{label}: {len(blocks)} blocks done")


def linear_modules(block: nn.Module) -> dict[str, nn.Module]:
    """Every Linear / Conv1D inside a block, by name relative to the block."""
    return {name: m for name, m in block.named_modules() if isinstance(m, LINEAR_TYPES)}


@torch.no_grad()
def target_groups(step: BlockStep, targets: list[WeightTarget]) -> list[list[WeightTarget]]:
    """The block's targets grouped by shared input, in the order the block calls them.

    Layers fed the very same tensor (Llama's q/k/v after the input norm, gate/up after the post-attention norm)
    form one group: they share a Hessian in GPTQ and a smoothing scale in SmoothQuant/AWQ. Found by running the
    first calibration batch and comparing the input tensors by identity, so no architecture table is needed.
    Each expert matrix reads its own routed rows and is a group of its own (listed even with no rows routed).
    Targets the block never calls are absent.
    """
    # (input tensor, members): holding the tensors keeps their memory from being reused by a later, different
    # input, so identity is a safe test (a freed address can come back for the next norm's output).
    groups: list[tuple[torch.Tensor, list[WeightTarget]]] = []

    def seen(target: WeightTarget, x: torch.Tensor, _sequences: int) -> None:
        for tensor, members in groups:
            if tensor is x:
                if all(m is not target for m in members):
                    members.append(target)
                return
        groups.append((x, [target]))

    with target_inputs(targets, seen):
        call = step.calls[0]
        step.block(step.inputs[0], *call.args, **call.kwargs)
    return [members for _, members in groups]  # in the order of the first call


# Experts calibrated in one pass each hold an [in, in] float32 matrix (GPTQ's Hessian, AWQ's Gram matrix): a stage
# of experts is split where they would hold more than this (Mixtral's 8 down_proj Hessians are 6.6 GB together).
STAGE_BYTES = 2 * 1024**3


def calibration_stages(
    groups: list[list[WeightTarget]], *, max_bytes: int = STAGE_BYTES
) -> list[list[list[WeightTarget]]]:
    """One stage per group (true-sequential calibration), except that the experts of one parameter, which read
    disjoint rows of one input and do not feed each other, share a stage (one pass for all of them) up to
    `max_bytes` of [in, in] float32 statistics."""
    stages: list[list[list[WeightTarget]]] = []
    held = 0
    for group in groups:
        key, cost = group[0].stage, 4 * group[0].shape[1] ** 2
        if stages and key is not None and stages[-1][-1][0].stage == key and held + cost <= max_bytes:
            stages[-1].append(group)
            held += cost
        else:
            stages.append([group])
            held = cost
    return stages


def input_groups(step: BlockStep) -> list[list[tuple[str, nn.Module]]]:
    """The block's Linear / Conv1D layers grouped by shared input (see `target_groups`), by block-relative name."""
    targets = [linear_target(name, m) for name, m in linear_modules(step.block).items()]
    return [[(t.name, t.module) for t in group] for group in target_groups(step, targets)]
