"""Generation divergence: how soon, and how far, the modified model's continuations leave the original's.

From the same prompts, the original model (at its reference setting: T = 1, no truncation) and the modified
model (its weights and its own decoding changes) each generate `max_new_tokens` tokens:

- greedy: both take the argmax;
- sampled: both sample with the *same random numbers*. Step t of rollout (prompt, seed) draws Gumbel noise
  g [V] from a generator seeded by (seed, prompt index) and picks argmax(log p + g), which is an exact sample
  of p (the Gumbel-max trick). Identical distributions therefore give identical tokens, and a small change of
  distribution changes the token only where it changes the winner: the coupling that makes "same seed"
  meaningful. Tokens are reproducible for given settings.

Measured per rollout: the first step at which the tokens differ (= the matching prefix length; a rollout that
never diverges is censored at max_new_tokens), the share of rollouts still identical after n tokens (n = 1..N),
and, teacher-forced along the original model's own continuation, the exact per-step KL(original || modified),
KL(modified || original) and the original's probability mass the modified sampler cuts away (full vocabulary:
truncation makes the forward KL infinite, and it is reported as inf). Generation runs exactly max_new_tokens
steps: EOS does not stop it, so every rollout has the same length.

`side_by_side` gives the greedy continuations of one prompt as token strings with the first divergence marked,
ready for a dashboard. Results are returned as tidy DataFrames plus a flat summary; the caller stores them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from .errors import SpecError
from .modify.base import ModifiedModel
from .probes.metrics import kl_full
from .probes.reference import context_rows

log = logging.getLogger(__name__)

# Short, varied openings (fact, story, code, instructions, letter, list) so divergence is not one genre's.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The three most important things to remember when learning a new language are",
    "Water boils at a temperature of",
    "In 1969, the first humans to walk on the Moon",
    "To bake a simple loaf of bread, you need",
    "Dear hiring manager, I am writing to apply for",
)


@dataclass(frozen=True)
class GenerationSettings:
    """How continuations are produced. CPU-friendly defaults: 8 prompts x 2 seeds x 32 tokens."""

    max_new_tokens: int = 32
    sample: bool = True  # False: greedy (seeds then do not matter and one rollout per prompt is made)
    seeds: tuple[int, ...] = (0, 1)

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if not 1 <= self.max_new_tokens <= 2048:
            raise SpecError(f"max_new_tokens must be in [1, 2048], got {self.max_new_tokens}")
        if not self.seeds:
            raise SpecError("generation needs at least one seed")

    @property
    def rollout_seeds(self) -> tuple[int, ...]:
        return self.seeds if self.sample else (0,)


@dataclass
class GenerationComparison:
    """Tidy results: one row per rollout, one per (rollout, step), the survival curve, and a flat summary."""

    rollouts: pd.DataFrame  # prompt_index, prompt, seed, matching_prefix, diverged, base_text, mod_text
    steps: pd.DataFrame  # prompt_index, seed, step, kl, kl_reverse, mass_cut, same_token
    survival: pd.DataFrame  # length, identical_share
    summary: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """Settings, summary (inf and NaN become null: JSON has neither), survival curve and rollouts."""
        return {
            "settings": self.settings,
            "summary": {k: v if math.isfinite(v) else None for k, v in self.summary.items()},
            "survival": self.survival.to_dict("records"),
            "rollouts": self.rollouts.to_dict("records"),
        }


@dataclass
class SideBySide:
    """Greedy continuations of one prompt, token by token; `first_divergence` indexes both token lists."""

    prompt: str
    base_ids: list[int]
    mod_ids: list[int]
    base_tokens: list[str]
    mod_tokens: list[str]
    first_divergence: int | None  # None: identical over all generated tokens

    @property
    def base_text(self) -> str:
        return "".join(self.base_tokens)

    @property
    def mod_text(self) -> str:
        return "".join(self.mod_tokens)


# -- generation -------------------------------------------------------------------------------------------


def gumbel_noise(seed: int, prompt_index: int, steps: int, vocab: int) -> torch.Tensor:
    """[steps, vocab] standard Gumbel noise, a pure function of (seed, prompt index)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + prompt_index)
    u = torch.rand(steps, vocab, generator=generator, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)
    return (-torch.log(-torch.log(u))).float()


def rollout(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    steps: int,
    transform: ModifiedModel | None,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """Generate `steps` tokens after prompt_ids [S, P] with the KV cache: LongTensor [S, steps].

    `transform` supplies the modified model's logit transforms (None: the reference setting); `noise`
    [S, steps, V] makes each step a Gumbel-max sample, None makes it greedy.
    """
    seq, past, step_input = prompt_ids, None, prompt_ids
    tokens = []
    with torch.inference_mode():
        for t in range(steps):
            out = model(input_ids=step_input, cache=past, use_cache=True, logits_to_keep=1)
            past = out.cache
            logits = out.logits[:, -1].float()  # [S, V]
            if transform is not None:
                logits = transform.transform_logits(logits, seq if transform.needs_context else None)
            score = torch.log_softmax(logits, dim=-1)
            if noise is not None:
                score = score + noise[:, t].to(score.device)
            nxt = score.argmax(dim=-1)  # [S]
            tokens.append(nxt)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            step_input = nxt[:, None]
    return torch.stack(tokens, dim=1)


def trajectory_logprobs(
    model: nn.Module, seq: torch.Tensor, prompt_len: int, transform: ModifiedModel | None
) -> torch.Tensor:
    """Teacher-forced log-probs [S, N, V] of the N = len - prompt_len tokens of seq [S, len] after the prompt."""
    steps = seq.shape[1] - prompt_len
    inputs = seq[:, :-1]
    with torch.inference_mode():
        logits = model(input_ids=inputs, use_cache=False, logits_to_keep=steps).logits.float()  # [S, N, V]
    if transform is not None and transform.logit_transforms:
        context = None
        if transform.needs_context:
            # context_rows gives every position of seq its prefix; keep the N predicting positions.
            width = seq.shape[1] - 1
            all_rows = context_rows(seq, slice(0, seq.shape[0] * width)).view(seq.shape[0], width, width)
            context = all_rows[:, prompt_len - 1 :].reshape(-1, width)
        flat = transform.transform_logits(logits.reshape(-1, logits.shape[-1]), context)
        logits = flat.view_as(logits)
    return torch.log_softmax(logits, dim=-1)


def _first_divergence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row of a, b [S, N]: the index of the first differing token, or N if none ([S] long)."""
    differ = a != b
    first = differ.float().argmax(dim=1)
    return torch.where(differ.any(dim=1), first, torch.full_like(first, a.shape[1]))


def _encode_prompt(tokenizer, prompt: str) -> torch.Tensor:
    # add_special_tokens follows the model's convention (Gemma needs its BOS, SmolLM2 adds none).
    ids = tokenizer(prompt, add_special_tokens=True, return_tensors="pt")["input_ids"]
    if ids.shape[1] == 0:
        raise SpecError(f"prompt {prompt!r} encodes to no tokens")
    return ids


def compare_generations(
    base_model: nn.Module,
    modified: ModifiedModel,
    tokenizer,
    prompts: tuple[str, ...] | list[str] = BUILTIN_PROMPTS,
    settings: GenerationSettings | None = None,
) -> GenerationComparison:
    """Original (reference setting) vs modified continuations of every prompt under the same seeds."""
    settings = settings or GenerationSettings()
    if not prompts:
        raise SpecError("generation divergence needs at least one prompt")
    device = next(base_model.parameters()).device
    n = settings.max_new_tokens
    seeds = settings.rollout_seeds
    vocab = base_model.get_output_embeddings().weight.shape[0]
    rollout_rows, step_rows = [], []
    for pi, prompt in enumerate(prompts):
        ids = _encode_prompt(tokenizer, prompt).to(device).repeat(len(seeds), 1)  # [S, P]
        noise = torch.stack([gumbel_noise(s, pi, n, vocab) for s in seeds]) if settings.sample else None
        base_tokens = rollout(base_model, ids, n, None, noise)
        mod_tokens = rollout(modified.model, ids, n, modified, noise)
        first = _first_divergence(base_tokens, mod_tokens)

        seq = torch.cat([ids, base_tokens], dim=1)
        p_lp = trajectory_logprobs(base_model, seq, ids.shape[1], None)  # [S, N, V]
        q_lp = trajectory_logprobs(modified.model, seq, ids.shape[1], modified)
        kl = kl_full(p_lp, q_lp)  # [S, N]; inf where the modified sampler cuts a token the original can emit
        kl_rev = kl_full(q_lp, p_lp)
        cut = torch.where(torch.isneginf(q_lp), p_lp.exp(), torch.zeros_like(p_lp)).sum(-1)

        for si, seed in enumerate(seeds):
            rollout_rows.append(
                {
                    "prompt_index": pi,
                    "prompt": prompt,
                    "seed": seed,
                    "matching_prefix": int(first[si]),
                    "diverged": bool(first[si] < n),
                    "base_text": tokenizer.decode(base_tokens[si].tolist()),
                    "mod_text": tokenizer.decode(mod_tokens[si].tolist()),
                }
            )
            for t in range(n):
                step_rows.append(
                    {
                        "prompt_index": pi,
                        "seed": seed,
                        "step": t,
                        "kl": float(kl[si, t]),
                        "kl_reverse": float(kl_rev[si, t]),
                        "mass_cut": float(cut[si, t]),
                        "same_token": bool(base_tokens[si, t] == mod_tokens[si, t]),
                    }
                )
        log.info("generation divergence: prompt %d/%d done", pi + 1, len(prompts))

    rollouts, steps = pd.DataFrame(rollout_rows), pd.DataFrame(step_rows)
    prefix = torch.tensor(rollouts["matching_prefix"].to_numpy())
    survival = pd.DataFrame(
        {
            "length": range(1, n + 1),
            "identical_share": [float((prefix >= k).double().mean()) for k in range(1, n + 1)],
        }
    )
    return GenerationComparison(
        rollouts=rollouts,
        steps=steps,
        survival=survival,
        summary=summarise(rollouts, steps, n),
        settings={
            "max_new_tokens": n,
            "sample": settings.sample,
            "seeds": list(seeds),
            "prompts": len(prompts),
        },
    )


def summarise(rollouts: pd.DataFrame, steps: pd.DataFrame, n: int) -> dict[str, float]:
    """Flat numbers for tables and charts (`gen_` prefix, so they can sit next to a run's metrics)."""
    prefix = rollouts["matching_prefix"].astype(float)
    diverged = rollouts["diverged"]
    return {
        # Censored at n: a rollout that never diverges counts as n.
        "gen_matching_prefix_mean": float(prefix.mean()),
        "gen_matching_prefix_median": float(prefix.median()),
        # Among the rollouts that diverged: the step at which they did (NaN when none did).
        "gen_first_divergence_mean": float(prefix[diverged].mean()) if diverged.any() else math.nan,
        "gen_diverged_share": float(diverged.mean()),
        "gen_identical_share": float((~diverged).mean()),
        "gen_traj_kl_mean": float(steps["kl"].mean()),
        "gen_traj_kl_median": float(steps["kl"].median()),
        "gen_traj_kl_reverse_mean": float(steps["kl_reverse"].mean()),
        "gen_traj_mass_cut_mean": float(steps["mass_cut"].mean()),
        "gen_rollouts": float(len(rollouts)),
        "gen_max_new_tokens": float(n),
    }


def side_by_side(
    base_model: nn.Module, modified: ModifiedModel, tokenizer, prompt: str, max_new_tokens: int = 32
) -> SideBySide:
    """Greedy continuations of `prompt` by the original and the modified model, with the first divergence."""
    device = next(base_model.parameters()).device
    ids = _encode_prompt(tokenizer, prompt).to(device)
    base = rollout(base_model, ids, max_new_tokens, None, None)[0].tolist()
    mod = rollout(modified.model, ids, max_new_tokens, modified, None)[0].tolist()
    first = next((i for i, (a, b) in enumerate(zip(base, mod, strict=True)) if a != b), None)
    return SideBySide(
        prompt=prompt,
        base_ids=base,
        mod_ids=mod,
        base_tokens=[tokenizer.decode([t]) for t in base],
        mod_tokens=[tokenizer.decode([t]) for t in mod],
        first_divergence=first,
    )


# -- from a RunSpec -----------------------------------------------------------------------------------------


def generation_divergence(
    runner, spec, prompts=None, settings: GenerationSettings | None = None
) -> GenerationComparison:
    """Generation divergence of any spec (weights and/or decoding changed) against its original model.

    `runner` provides the shared base model and the calibration text the spec's handlers may need; the base
    model is never mutated (the runner builds the modified model on a copy).
    """
    loaded = runner.base(spec.model)
    modified = runner.modify(spec)
    result = compare_generations(
        loaded.model, modified, loaded.tokenizer, tuple(prompts or BUILTIN_PROMPTS), settings
    )
    result.settings.update({"model": spec.model, "label": spec.label(), "spec": spec.to_dict()})
    return result


def side_by_side_for_spec(runner, spec, prompt: str, max_new_tokens: int = 32) -> SideBySide:
    loaded = runner.base(spec.model)
    return side_by_side(loaded.model, runner.modify(spec), loaded.tokenizer, prompt, max_new_tokens)
