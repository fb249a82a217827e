"""Short KL distillation toward the original, for when a temperature is not enough (spec: specs/distill.py).

`kl_distill` runs a few hundred Adam steps of KL(P_orig || Q) on calibration text through the model, training
only norm weights and biases, or rank-r LoRA adapters that are merged back into the weights. The objective and
the original's distributions are decoding calibration's (`decoding_calibration.calibration_logits`, `mean_kl`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError
from ..specs import KLDistill
from .base import ModContext, ModifiedModel, handles
from .decoding_calibration import _base_model
from .targets import linear_targets, set_weight, weight_view

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def norm_parameters(model: PreTrainedModel) -> list[nn.Parameter]:
    """Weights and biases of every normalisation layer, and the biases of every Linear / Conv1D (BitFit-style)."""
    params: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("Norm"):
            params.update({id(p): p for p in module.parameters(recurse=False)})
    for _, module in linear_targets(model):
        bias = getattr(module, "bias", None)
        if bias is not None:  # a registered bias is always a Parameter (nn.Module.__setattr__)
            params[id(bias)] = bias
    return list(params.values())


class LoRA:
    """A rank-r update B @ A [out, in] added to one Linear / Conv1D's output by a forward hook (B starts at 0,
    so training starts from the unchanged model); `merge` folds it into the weight."""

    def __init__(self, module: nn.Module, rank: int, generator: torch.Generator):
        w = weight_view(module)
        out_features, in_features = w.shape
        self.module = module
        self.A = (torch.randn(rank, in_features, generator=generator) / math.sqrt(in_features)).to(w)
        self.B = torch.zeros(out_features, rank, dtype=w.dtype, device=w.device)
        self.A.requires_grad_(True)
        self.B.requires_grad_(True)

    def hook(self, _module, inputs, output):
        return output + (inputs[0] @ self.A.t()) @ self.B.t()

    def merge(self) -> None:
        with torch.no_grad():
            set_weight(self.module, weight_view(self.module) + self.B @ self.A)


@contextlib.contextmanager
def lora_adapters(model: PreTrainedModel, rank: int, seed: int) -> Iterator[list[LoRA]]:
    """Attach LoRA adapters to every Linear / Conv1D but lm_head; hooks are always removed on exit."""
    generator = torch.Generator().manual_seed(seed)
    adapters = [LoRA(module, rank, generator) for _, module in linear_targets(model)]
    handles_ = [a.module.register_forward_hook(a.hook) for a in adapters]
    try:
        yield adapters
    finally:
        for h in handles_:
            h.remove()


def distill(
    student: nn.Module,
    teacher: nn.Module,
    windows: torch.Tensor,
    params: list[torch.Tensor],
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> list[float]:
    """Adam on mean KL(teacher || student) over every position of random batches of windows [n, T].

    Only `params` get gradients (the student's own parameters are frozen by the loader). Returns the loss of
    each step.
    """
    device = next(student.parameters()).device
    opt = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    order = torch.empty(0, dtype=torch.long)
    for step in range(steps):
        if order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(windows.shape[0], generator=generator)])
        idx, order = order[:batch_size], order[batch_size:]
        ids = windows[idx].to(device)
        with torch.no_grad():  # not inference_mode: the targets take part in the autograd graph
            target = torch.log_softmax(teacher(input_ids=ids, use_cache=False).logits.float(), dim=-1)
        with torch.enable_grad():
            logits = student(input_ids=ids, use_cache=False).logits.float()
            q_lp = torch.log_softmax(logits, dim=-1).flatten(0, 1)
            loss = F.kl_div(q_lp, target.flatten(0, 1), log_target=True, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == steps - 1:
            log.info("KL distillation step %d/%d: KL %.4f", step + 1, steps, losses[-1])
    return losses


@handles(KLDistill)
def apply_kl_distill(state: ModifiedModel, mod: KLDistill, ctx: ModContext) -> None:
    teacher = _base_model(ctx, "kl_distill")
    if state.logit_transforms:
        raise SpecError("kl_distill trains the weights on raw logits: put it before decoding changes")
    windows = ctx.calibration_windows(mod.calib_corpus, mod.calib_samples, mod.calib_len)
    student = state.model
    t0 = time.perf_counter()
    train = functools.partial(distill, steps=mod.steps, lr=mod.lr, batch_size=mod.batch_size, seed=mod.seed)
    params: list[torch.Tensor]
    if mod.params == "lora":
        with lora_adapters(student, mod.lora_rank, mod.seed) as adapters:
            params = [t for a in adapters for t in (a.A, a.B)]
            losses = train(student, teacher, windows, params)
            for a in adapters:
                a.merge()
    else:
        params = [*norm_parameters(student)]
        for p in params:
            p.requires_grad_(True)
        try:
            losses = train(student, teacher, windows, params)
        finally:
            for p in params:
                p.requires_grad_(False)
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10) :]
    state.report.update(
        {
            "distill_kl_start": sum(head) / len(head),
            "distill_kl_end": sum(tail) / len(tail),
            "distill_trained_params": float(sum(p.numel() for p in params)),
            "distill_s": time.perf_counter() - t0,
        }
    )
