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
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from .errors import SpecError
from .modify.base import ModifiedModel
from .probes.metrics import kl_full
from .probes.reference import context_rows
from .progress import Progress, scaled

if TYPE_CHECKING:
    from transformers import PreTrainedModel

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
    batch_size: int = 16  # rollouts generated together (left-padded)

    def __post_init__(self):
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        if self.batch_size < 1:
            raise SpecError(f"generation batch_size must be >= 1, got {self.batch_size}")
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


@dataclass(frozen=True)
class PromptBatch:
    """Prompts left-padded to one width: ids [B, P] and attention mask [B, P] (1 = token, 0 = padding).

    Left padding keeps every prompt's last token in the last column, so all rows generate in lockstep; position
    ids are counted over real tokens only, so a padded prompt sees the positions it would see alone.
    """

    ids: torch.Tensor
    mask: torch.Tensor

    @classmethod
    def encode(cls, tokenizer, prompts: list[str], device: torch.device) -> PromptBatch:
        encoded = [_encode_prompt(tokenizer, p)[0] for p in prompts]
        width = max(len(e) for e in encoded)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked: any id will do
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, width - len(e) :] = e
            mask[i, width - len(e) :] = 1
        return cls(ids.to(device), mask.to(device))


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids [B, T] that skip left padding (padding positions get 0; they are masked anyway)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _context(seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """seq [B, T] with padding replaced by -1, the context convention of logit transforms."""
    return torch.where(mask > 0, seq, -1)


def rollout(
    model: PreTrainedModel,
    prompts: PromptBatch,
    steps: int,
    transform: ModifiedModel | None,
    noise: torch.Tensor | None,
) -> torch.Tensor:
    """Generate `steps` tokens after each prompt of the batch with the KV cache: LongTensor [B, steps].

    `transform` supplies the modified model's logit transforms (None: the reference setting); `noise`
    [B, steps, V] makes each step a Gumbel-max sample, None makes it greedy.
    """
    seq, mask, past = prompts.ids, prompts.mask, None
    step_input, step_pos = prompts.ids, _positions(prompts.mask)
    tokens = []
    with torch.inference_mode():
        for t in range(steps):
            out = model(
                input_ids=step_input,
                attention_mask=mask,
                position_ids=step_pos,
                cache=past,
                use_cache=True,
                logits_to_keep=1,
            )
            past = out.cache
            logits = out.logits[:, -1].float()  # [B, V]
            if transform is not None:
                logits = transform.transform_logits(
                    logits, _context(seq, mask) if transform.needs_context else None
                )
            score = torch.log_softmax(logits, dim=-1)
            if noise is not None:
                score = score + noise[:, t].to(score.device)
            nxt = score.argmax(dim=-1)  # [B]
            tokens.append(nxt)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(nxt)[:, None]], dim=1)
            step_input, step_pos = nxt[:, None], step_pos[:, -1:] + 1
    return torch.stack(tokens, dim=1)


def trajectory_logprobs(
    model: PreTrainedModel, prompts: PromptBatch, continuation: torch.Tensor, transform: ModifiedModel | None
) -> torch.Tensor:
    """Teacher-forced log-probs [B, N, V] of the continuation [B, N] after each prompt (one forward pass)."""
    steps = continuation.shape[1]
    seq = torch.cat([prompts.ids, continuation], dim=1)  # [B, P + N]
    mask = torch.cat([prompts.mask, torch.ones_like(continuation)], dim=1)
    with torch.inference_mode():
        logits = model(
            input_ids=seq[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=_positions(mask[:, :-1]),
            use_cache=False,
            logits_to_keep=steps,
        ).logits.float()  # [B, N, V]: the positions predicting the continuation
    if transform is not None and transform.logit_transforms:
        context = None
        if transform.needs_context:
            # context_rows gives every position of seq its prefix; keep the N predicting positions.
            width = seq.shape[1] - 1
            rows = context_rows(_context(seq, mask), slice(0, seq.shape[0] * width))
            context = rows.view(seq.shape[0], width, width)[:, width - steps :].reshape(-1, width)
        logits = transform.transform_logits(logits.reshape(-1, logits.shape[-1]), context).view_as(logits)
    return torch.log_softmax(logits, dim=-1)


def _first_divergence(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per row of a, b [B, N]: the index of the first differing token, or N if none ([B] long)."""
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
    base_model: PreTrainedModel,
    modified: ModifiedModel,
    tokenizer,
    prompts: tuple[str, ...] | list[str] = BUILTIN_PROMPTS,
    settings: GenerationSettings | None = None,
) -> GenerationComparison:
    """Original (reference setting) vs modified continuations of every prompt under the same seeds.

    Rollouts (prompt, seed) run `settings.batch_size` at a time, left-padded (small batches are dominated by
    per-call overhead on CPU).
    """
    settings = settings or GenerationSettings()
    if not prompts:
        raise SpecError("generation divergence needs at least one prompt")
    device = next(base_model.parameters()).device
    n = settings.max_new_tokens
    vocab = base_model.get_output_embeddings().weight.shape[0]
    todo = [(pi, seed) for pi in range(len(prompts)) for seed in settings.rollout_seeds]
    rollout_rows, step_rows = [], []
    for start in range(0, len(todo), settings.batch_size):
        chunk = todo[start : start + settings.batch_size]
        batch = PromptBatch.encode(tokenizer, [prompts[pi] for pi, _ in chunk], device)
        noise = (
            torch.stack([gumbel_noise(seed, pi, n, vocab) for pi, seed in chunk]) if settings.sample else None
        )
        base_tokens = rollout(base_model, batch, n, None, noise)  # [B, N]
        mod_tokens = rollout(modified.model, batch, n, modified, noise)
        first = _first_divergence(base_tokens, mod_tokens)

        p_lp = trajectory_logprobs(base_model, batch, base_tokens, None)  # [B, N, V]
        q_lp = trajectory_logprobs(modified.model, batch, base_tokens, modified)
        kl = kl_full(p_lp, q_lp)  # [B, N]; inf where the modified sampler cuts a token the original can emit
        kl_rev = kl_full(q_lp, p_lp)
        cut = torch.where(torch.isneginf(q_lp), p_lp.exp(), torch.zeros_like(p_lp)).sum(-1)
        del p_lp, q_lp

        for i, (pi, seed) in enumerate(chunk):
            rollout_rows.append(
                {
                    "prompt_index": pi,
                    "prompt": prompts[pi],
                    "seed": seed,
                    "matching_prefix": int(first[i]),
                    "diverged": bool(first[i] < n),
                    "base_text": tokenizer.decode(base_tokens[i].tolist()),
                    "mod_text": tokenizer.decode(mod_tokens[i].tolist()),
                }
            )
            step_rows += [
                {
                    "prompt_index": pi,
                    "seed": seed,
                    "step": t,
                    "kl": float(kl[i, t]),
                    "kl_reverse": float(kl_rev[i, t]),
                    "mass_cut": float(cut[i, t]),
                    "same_token": bool(base_tokens[i, t] == mod_tokens[i, t]),
                }
                for t in range(n)
            ]
        log.info("generation divergence: %d/%d rollouts done", start + len(chunk), len(todo))

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
            "seeds": list(settings.rollout_seeds),
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
    base_model: PreTrainedModel, modified: ModifiedModel, tokenizer, prompt: str, max_new_tokens: int = 32
) -> SideBySide:
    """Greedy continuations of `prompt` by the original and the modified model, with the first divergence."""
    batch = PromptBatch.encode(tokenizer, [prompt], next(base_model.parameters()).device)
    base = rollout(base_model, batch, max_new_tokens, None, None)[0].tolist()
    mod = rollout(modified.model, batch, max_new_tokens, modified, None)[0].tolist()
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


# -- one prompt, one seed, for the dashboard's Divergence page ---------------------------------------------


@dataclass
class PromptGenerations:
    """What the page draws: the two continuations token by token, and the per-step rows of the rollout."""

    side: SideBySide
    steps: pd.DataFrame  # step, kl, kl_reverse, mass_cut, same_token
    summary: dict[str, float]


# Share of the progress bar for building the modified model: a calibrated method takes minutes, the two short
# rollouts seconds.
GENERATION_MODIFY_SHARE = 0.8


def prompt_generations(
    runner,
    spec,
    prompt: str,
    *,
    seed: int,
    sample: bool,
    max_new_tokens: int,
    progress: Progress | None = None,
) -> PromptGenerations:
    """Original (reference setting) vs `spec` on one prompt. Side effect: builds a modified copy of the model.

    Sampled rollouts use gumbel_noise(seed, 0, ...), exactly what compare_generations draws for a
    single prompt with that seed, so the side-by-side tokens and the step rows describe the same rollout.
    `progress` hears the modification block by block (the minutes of a calibrated method), then each stage.
    """
    loaded = runner.base(spec.model)
    modified = runner.modify(spec, progress=scaled(progress, 0.0, GENERATION_MODIFY_SHARE))
    report = scaled(progress, GENERATION_MODIFY_SHARE, 1.0) or (lambda f, m: None)
    report(0.0, f"generating {max_new_tokens} tokens with both models")
    tokenizer = loaded.tokenizer
    if sample:
        batch = PromptBatch.encode(tokenizer, [prompt], next(loaded.model.parameters()).device)
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        noise = gumbel_noise(seed, 0, max_new_tokens, vocab)[None]  # [1, N, V]
        base = rollout(loaded.model, batch, max_new_tokens, None, noise)[0].tolist()
        mod = rollout(modified.model, batch, max_new_tokens, modified, noise)[0].tolist()
        first = next((i for i, (a, b) in enumerate(zip(base, mod, strict=True)) if a != b), None)
        side = SideBySide(
            prompt=prompt,
            base_ids=base,
            mod_ids=mod,
            base_tokens=[tokenizer.decode([t]) for t in base],
            mod_tokens=[tokenizer.decode([t]) for t in mod],
            first_divergence=first,
        )
    else:
        side = side_by_side(loaded.model, modified, tokenizer, prompt, max_new_tokens)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, sample=sample, seeds=(seed,))
    report(0.5, "scoring every step against the original")
    with torch.inference_mode():
        comparison = compare_generations(loaded.model, modified, tokenizer, [prompt], settings)
    del modified
    report(1.0, "done")
    return PromptGenerations(side=side, steps=comparison.steps, summary=comparison.summary)
