"""Decoding changes act on the logits the user samples from, not on weights.

Pure functions first (logits [rows, V] -> [rows, V], float32, removed tokens set to -inf as Hugging Face's
`filter_value` does); the handlers append them to `state.logit_transforms` in the order the spec gives.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from ..specs import Temperature
from ..specs.decode import MinP, RepetitionPenalty, Sampler, TopK, TopP
from .base import ModContext, ModifiedModel, context_transform, handles, linear_transform

NEG_INF = float("-inf")


def scale_temperature(logits: torch.Tensor, t: float) -> torch.Tensor:
    return logits / t


def temperature_transform(t: float) -> Callable:
    """logits / t, marked as the linear scaling 1 / t (the exact KL's cheap path, probes/exact_kl.py)."""
    return linear_transform(partial(scale_temperature, t=t), 1.0 / t)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (and any tied with the k-th, as Hugging Face does); -inf elsewhere."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [rows, 1]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the smallest most-likely set whose probability reaches p (at least one token); -inf elsewhere.

    A token is dropped when the mass strictly before it in descending order already reaches p.
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # [rows, V]
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Drop tokens whose probability is below p * max probability (in log space: lp < log p + max lp)."""
    if p <= 0.0:
        return logits
    lp = torch.log_softmax(logits, dim=-1)
    threshold = lp.max(dim=-1, keepdim=True).values + torch.log(torch.tensor(p, dtype=lp.dtype))
    return logits.masked_fill(lp < threshold, NEG_INF)


def repetition_penalty(
    logits: torch.Tensor, context: torch.Tensor, penalty: float, last_n: int = 0
) -> torch.Tensor:
    """CTRL-style penalty on tokens present in `context` [rows, C] (-1 = padding): positive logits are divided
    by `penalty`, negative ones multiplied, so a seen token always loses probability (Hugging Face semantics).
    `last_n` > 0 looks at the last n context tokens only."""
    if last_n:
        context = context[:, -last_n:]
    vocab = logits.shape[-1]
    # Padding scatters into a spare column V that is dropped, so it can never mark token 0 as seen.
    index = torch.where(context >= 0, context, vocab).long()
    seen = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, index, True)
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen[:, :vocab], penalised, logits)


def _penalty_transform(penalty: float, last_n: int) -> Callable:
    return context_transform(lambda logits, context: repetition_penalty(logits, context, penalty, last_n))


def sampler_transforms(mod: Sampler) -> list[Callable]:
    """The sampler's non-neutral knobs as transforms, in Hugging Face's order (neutral knobs add nothing, so
    the all-neutral sampler is exactly the original distribution)."""
    transforms: list[Callable] = []
    if mod.repetition_penalty != 1.0:
        transforms.append(_penalty_transform(mod.repetition_penalty, mod.repetition_last_n))
    if mod.temperature != 1.0:
        transforms.append(temperature_transform(mod.temperature))
    if mod.top_k:
        transforms.append(partial(top_k_filter, k=mod.top_k))
    if mod.top_p < 1.0:
        transforms.append(partial(top_p_filter, p=mod.top_p))
    if mod.min_p > 0.0:
        transforms.append(partial(min_p_filter, p=mod.min_p))
    return transforms


@handles(Temperature)
def apply_temperature(state: ModifiedModel, mod: Temperature, ctx: ModContext) -> None:
    state.logit_transforms.append(temperature_transform(mod.value))
    state.report["temperature"] = mod.value


@handles(TopK)
def apply_top_k(state: ModifiedModel, mod: TopK, ctx: ModContext) -> None:
    state.logit_transforms.append(partial(top_k_filter, k=mod.k))
    state.report["top_k"] = float(mod.k)


@handles(TopP)
def apply_top_p(state: ModifiedModel, mod: TopP, ctx: ModContext) -> None:
    state.logit_transforms.append(partial(top_p_filter, p=mod.p))
    state.report["top_p"] = mod.p


@handles(MinP)
def apply_min_p(state: ModifiedModel, mod: MinP, ctx: ModContext) -> None:
    state.logit_transforms.append(partial(min_p_filter, p=mod.p))
    state.report["min_p"] = mod.p


@handles(RepetitionPenalty)
def apply_repetition_penalty(state: ModifiedModel, mod: RepetitionPenalty, ctx: ModContext) -> None:
    state.logit_transforms.append(_penalty_transform(mod.penalty, mod.last_n))
    state.report["repetition_penalty"] = mod.penalty


@handles(Sampler)
def apply_sampler(state: ModifiedModel, mod: Sampler, ctx: ModContext) -> None:
    state.logit_transforms.extend(sampler_transforms(mod))
    state.report.update(
        {
            "temperature": mod.temperature,
            "top_k": float(mod.top_k),
            "top_p": mod.top_p,
            "min_p": mod.min_p,
            "repetition_penalty": mod.repetition_penalty,
        }
    )
