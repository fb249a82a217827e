"""Coverage: the share of the blocks' weight matrices a modification really changed, as a stored number.

Definition. The *block weight matrices* are the parameters of the modules inside `structure.find_blocks(model)`
that are matrices: >= 2-D parameters, where a fused experts parameter [E, out, in] counts as E matrices and its
stacked biases [E, out] as vectors, not matrices. Documented exclusions (the MoE router unless `include_router`;
state-space parameters A_log and depthwise conv1d, `targets.STATE_SPACE_EXCLUSION`) leave the denominator;
everything else stays in it. So

    coverage = weights of the block matrices the handler modified / (block matrix weights - excluded weights)

Matrices outside the blocks (lm_head when included, OPT's project_in/out) are modified as before but are not
part of the figure. `state.report["coverage"]` and `["skipped_modules"]` reach the run's metrics (DuckDB, --json);
`state.skipped` maps each module left alone to why.

A run that would modify less than it claims, i.e. anything unhandled rather than excluded, is refused with a
SpecError unless its spec sets `partial=True`: a 4-bit figure over 11 % of Mixtral's weights is a wrong number.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable

from ..errors import SpecError
from .base import ModifiedModel
from .targets import Plan, WeightTarget

log = logging.getLogger(__name__)

SHOWN_REASONS = 3  # distinct reasons quoted in a refusal; the rest are counted


def _claimed(plan: Plan) -> int:
    return plan.block_weights - plan.excluded_weights


def _refusal(mod, share: float, unhandled: dict[str, str]) -> SpecError:
    by_reason: dict[str, list[str]] = defaultdict(list)
    for module, reason in unhandled.items():
        by_reason[reason].append(module)
    parts = [
        f"{mods[0]}{f' (+{len(mods) - 1} more)' if len(mods) > 1 else ''}: {reason}"
        for reason, mods in list(by_reason.items())[:SHOWN_REASONS]
    ]
    more = len(by_reason) - SHOWN_REASONS
    listed = "; ".join(parts) + (f"; and {more} other reasons" if more > 0 else "")
    return SpecError(
        f"{mod.label()} would modify only {share:.1%} of the blocks' weight matrices; it cannot modify "
        f"{len(unhandled)} module(s): {listed}. Set partial=True to run on the rest (coverage is reported)."
    )


def check_scope(plan: Plan, mod) -> None:
    """Refuse before any work when the plan leaves block matrices unhandled and `mod` did not ask for partial."""
    if plan.unhandled and not getattr(mod, "partial", False):
        claimed = _claimed(plan)
        share = (claimed - plan.unhandled_weights) / claimed if claimed else 0.0
        raise _refusal(mod, share, plan.unhandled)


def record_coverage(
    state: ModifiedModel,
    mod,
    plan: Plan,
    modified: Iterable[WeightTarget],
    *,
    missing_reason: str = "not modified by the handler",
) -> float:
    """Store coverage and the skipped modules of `mod` in `state`; return the coverage.

    `modified`: the targets the handler really changed. Planned block targets missing from it (e.g. a layer the
    calibration forward never reached) become unhandled with `missing_reason`, which refuses the run unless
    `mod.partial`.
    """
    done_ids = {id(t) for t in modified}
    unhandled = dict(plan.unhandled)
    done = 0
    for t in plan.targets:
        if t.block is None:
            continue
        if id(t) in done_ids:
            done += t.numel
        else:
            unhandled.setdefault(t.module_name, missing_reason)
    claimed = _claimed(plan)
    coverage = done / claimed if claimed else 0.0
    if len(unhandled) > len(plan.unhandled) and not getattr(mod, "partial", False):
        raise _refusal(mod, coverage, unhandled)
    skipped = {**plan.excluded, **unhandled}
    state.skipped.update(skipped)
    state.report["coverage"] = coverage
    state.report["skipped_modules"] = float(len(skipped))
    if unhandled:
        log.warning(
            "%s modified %.1f%% of the block weight matrices (partial scope)", mod.label(), 100 * coverage
        )
    return coverage
