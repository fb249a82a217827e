"""The heavier analyses a page runs on demand (they rebuild the modified model): the module ranking and the
attention maps for a prompt. Each holds the process's compute lock and reports progress; results are stored
(module ranking, in the store's analysis table) or kept (attention maps, per spec / prompt / layer / head:
memo.py) so a revisit is instant.
"""

from __future__ import annotations

import json

import pandas as pd

from hemorrhage_core.analysis import attention, flips, modules
from hemorrhage_core.generation import PromptGenerations, prompt_generations
from hemorrhage_core.progress import Progress
from hemorrhage_core.runner import Runner, RunResult
from hemorrhage_core.specs import RunSpec

from .memo import memo
from .state import compute_lock

MODULE_ANALYSIS = "module_errors"  # the name analysis.modules' rows are stored under


def stored_module_ranking(runner: Runner, run_key: str) -> pd.DataFrame:
    """The stored ranking of a run's modules (empty when it was never computed)."""
    return modules.from_rows(runner.store.analysis(run_key, MODULE_ANALYSIS))


def compute_module_ranking(
    runner: Runner, result: RunResult, *, n: int = 8, length: int = 256, progress: Progress | None = None
) -> pd.DataFrame:
    """Rank the modules of a run on n x length calibration tokens of its corpus, and store the ranking."""
    with compute_lock():
        ranked = modules.rank_modules(runner, result.spec, n=n, length=length, progress=progress)
    runner.store.save_analysis(result.run_key, MODULE_ANALYSIS, modules.to_rows(ranked))
    return ranked


def attention_view(
    runner: Runner,
    spec_json: str,
    prompt: str,
    layer: int,
    head: int | None,
    max_tokens: int,
    progress: Progress | None = None,
):
    """analysis.attention's view of one layer (one head, or all with None) on a prompt; kept per spec, prompt,
    layer, head and length (memo.py; `progress` hears the work when it is computed)."""

    def compute():
        with compute_lock():
            return attention.attention_view(
                runner,
                RunSpec.from_dict(json.loads(spec_json)),
                prompt,
                layer,
                head,
                max_tokens=max_tokens,
                progress=progress,
            )

    return memo("attention", (spec_json, prompt, layer, head, max_tokens), compute)


FLIPS_ANALYSIS = "flips"


def flip_report(
    runner: Runner,
    spec_json: str,
    run_key: str,
    n_items: int,
    corpus: str | None,
    progress: Progress | None = None,
):
    """analysis.flips on a cloze set of `corpus` (default: the run's evaluation corpus); the metrics are stored
    under the run, as `hemlab flips` stores them. Kept per spec, size and corpus (memo.py)."""

    def compute():
        with compute_lock():
            report = flips.flip_report(
                runner,
                RunSpec.from_dict(json.loads(spec_json)),
                corpus=corpus,
                n_items=n_items,
                progress=progress,
            )
        runner.store.save_analysis(
            run_key, FLIPS_ANALYSIS, [(report.set_id, k, v) for k, v in report.metrics().items()]
        )
        return report

    return memo("flips", (spec_json, run_key, n_items, corpus), compute)


def generations(
    runner_: Runner, spec_json: str, prompt: str, *, seed: int, sample: bool, n: int, progress=None
) -> PromptGenerations:
    """Kept per (spec, prompt, seed, mode, length) for the process (memo.py)."""

    def compute():
        with compute_lock():
            return prompt_generations(
                runner_,
                RunSpec.from_dict(json.loads(spec_json)),
                prompt,
                seed=seed,
                sample=sample,
                max_new_tokens=n,
                progress=progress,
            )

    return memo("generations", (spec_json, prompt, seed, sample, n), compute, max_entries=32)
