"""Calibration statistics of MoE experts: what to do with an expert that the calibration text barely routes to.

Each expert's statistics come from the tokens routed to it (taps.py). With top-2 of 8 experts and 32 x 512
calibration tokens an expert sees about 4,000 rows, but routing is uneven and an expert may see a handful or
none. Statistics from a few rows are noise (an input Hessian of rank 3; a Wanda norm of 3 tokens), and from none
they are zero, which GPTQ and SparseGPT read as "every input is dead" and would zero the whole matrix.

Rule: an expert matrix that received fewer than `MIN_EXPERT_TOKENS` calibration rows uses the *pooled*
statistics of its parameter: the mean over all experts of that parameter in the same layer (the inputs a typical
expert of that layer sees). The number of matrices pooled and the fewest rows any expert matrix received are
reported (`experts_pooled`, `expert_rows_min`). If even the pool is empty (the layer was never reached), the
matrices are left unmodified and the coverage check refuses the run unless the scope is partial.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .targets import WeightTarget

log = logging.getLogger(__name__)

MIN_EXPERT_TOKENS = 16  # calibration rows below which an expert matrix takes its layer's pooled statistics

S = TypeVar("S")


@dataclass
class ExpertTally:
    """What the pooling did over a whole modification (all blocks)."""

    matrices: int = 0
    pooled: int = 0
    min_rows: int | None = None

    def report(self) -> dict[str, float]:
        if not self.matrices:
            return {}
        return {"experts_pooled": float(self.pooled), "expert_rows_min": float(self.min_rows or 0)}


def pool_starved_experts(
    stats: dict[WeightTarget, S],
    *,
    rows: Callable[[S], int],
    pool: Callable[[list[S]], S],
    tally: ExpertTally,
) -> set[WeightTarget]:
    """Replace, in place, the statistics of expert matrices with fewer than MIN_EXPERT_TOKENS rows by their
    parameter's pooled statistics. Returns the targets left without usable statistics (empty pool)."""
    by_stage: dict[tuple, list[WeightTarget]] = defaultdict(list)
    for t in stats:
        if t.stage is not None:
            by_stage[t.stage].append(t)
    unusable: set[WeightTarget] = set()
    for members in by_stage.values():
        counts = {t: rows(stats[t]) for t in members}
        tally.matrices += len(members)
        low = min(counts.values())
        tally.min_rows = low if tally.min_rows is None else min(tally.min_rows, low)
        starved = [t for t in members if counts[t] < MIN_EXPERT_TOKENS]
        if not starved:
            continue
        pooled = pool([stats[t] for t in members])
        if sum(counts.values()) < MIN_EXPERT_TOKENS:
            unusable.update(starved)
            log.warning("%s: no expert of this layer received calibration tokens", members[0].param_name)
            continue
        for t in starved:
            stats[t] = pooled
            log.info("%s: %d calibration rows, using the layer's pooled statistics", t.name, counts[t])
        tally.pooled += len(starved)
    return unusable
