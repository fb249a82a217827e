"""Generations for the Divergence page: one prompt, one seed, the original against any spec.

Glue over hemorrhage_core.generation: the modified model is built once and used for both the token-by-token
side-by-side (greedy, or sampled with the same Gumbel noise for both models: the coupling that makes "same
seed" meaningful) and the per-step measurements (KL along the original's own continuation, survival).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from hemorrhage_core import generation
from hemorrhage_core.runner import Runner
from hemorrhage_core.specs import RunSpec


@dataclass
class PromptGenerations:
    """What the page draws: the two continuations token by token, and the per-step rows of the rollout."""

    side: generation.SideBySide
    steps: pd.DataFrame  # step, kl, kl_reverse, mass_cut, same_token
    summary: dict[str, float]


def prompt_generations(
    runner: Runner, spec: RunSpec, prompt: str, *, seed: int, sample: bool, max_new_tokens: int
) -> PromptGenerations:
    """Original (reference setting) vs `spec` on one prompt. Side effect: builds a modified copy of the model.

    Sampled rollouts use generation.gumbel_noise(seed, 0, ...), exactly what compare_generations draws for a
    single prompt with that seed, so the side-by-side tokens and the step rows describe the same rollout.
    """
    loaded = runner.base(spec.model)
    modified = runner.modify(spec)
    tokenizer = loaded.tokenizer
    if sample:
        batch = generation.PromptBatch.encode(tokenizer, [prompt], next(loaded.model.parameters()).device)
        vocab = loaded.model.get_output_embeddings().weight.shape[0]
        noise = generation.gumbel_noise(seed, 0, max_new_tokens, vocab)[None]  # [1, N, V]
        base = generation.rollout(loaded.model, batch, max_new_tokens, None, noise)[0].tolist()
        mod = generation.rollout(modified.model, batch, max_new_tokens, modified, noise)[0].tolist()
        first = next((i for i, (a, b) in enumerate(zip(base, mod, strict=True)) if a != b), None)
        side = generation.SideBySide(
            prompt=prompt,
            base_ids=base,
            mod_ids=mod,
            base_tokens=[tokenizer.decode([t]) for t in base],
            mod_tokens=[tokenizer.decode([t]) for t in mod],
            first_divergence=first,
        )
    else:
        side = generation.side_by_side(loaded.model, modified, tokenizer, prompt, max_new_tokens)
    settings = generation.GenerationSettings(max_new_tokens=max_new_tokens, sample=sample, seeds=(seed,))
    with torch.inference_mode():
        comparison = generation.compare_generations(loaded.model, modified, tokenizer, [prompt], settings)
    del modified
    return PromptGenerations(side=side, steps=comparison.steps, summary=comparison.summary)
