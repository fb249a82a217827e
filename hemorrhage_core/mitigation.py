"""The paper's three remedies as rewrites of a modification chain, and the recovery they buy. Pure: no torch, no
Streamlit.

A remedy is a pure function from a chain of modifications to the mitigated chain *at the same compression*
(same sparsity, same bits, same decoding), or None when it does not apply to that chain. The mitigated chain
is an ordinary `RunSpec` chain, so it is measured, cached and stored like any other run, and the comparison
with the unmitigated chain is made on the same tokens:

    recovered = (damage_before − damage_after) / damage_before

with damage = perplexity ratio − 1 (the original scores 0) or KL(original ‖ modified) (the original scores 0).
A chain that was not damaged has nothing to recover: its recovered fraction is NaN (reported as "n/a"), never a
division error.

Remedies (REMEDIES, applied by `mitigate` in this order, whatever order they are asked for in):

1. gradient-aware pruning: magnitude / Wanda pruning → GBLM scores (|W|·‖X‖ + α·|W|·‖G‖); structured head /
   channel pruning → group Taylor importance (LLM-Pruner).
2. SmoothQuant migration: a `smoothquant` scale migration before every `act_quant`.
3. dynamic quantization scaling: static per-tensor activation scales → per-token dynamic ones; weight-only RTN →
   AWQ-style searched per-channel scales at the same bits, group and grid.
4. KL distillation (norms): `kl_distill` training only norm weights and biases toward the original, after the
   last modification that changes weights (it trains on raw logits).
5. decoding calibration: a temperature fitted to minimise KL to the original (`calibrate_decoding`), last.

The order is the order a deployment would apply them: choose the weights to keep, prepare the activations,
quantize, repair the weights, then calibrate the logits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import SpecError
from .metric_names import METRICS
from .specs import (
    AWQ,
    ActQuant,
    CalibrateDecoding,
    KLDistill,
    Modification,
    Prune,
    PruneChannels,
    PruneHeads,
    QuantizeRTN,
    SmoothQuant,
)

if TYPE_CHECKING:  # the runner imports torch and, through the handlers, this module
    from .runner import RunResult

Chain = tuple[Modification, ...]

# A mitigated model still this far from the original's perplexity (the collapse threshold of docs/metrics.md §4) is
# beyond repair, whatever share of the KL the remedy recovered: a temperature that flattens a collapsed model's
# distribution halves its KL without making it usable (smollm2-135m RTN w2: T = 10.1, KL 14.5 -> 7.3, still 1,343x).
BEYOND_REPAIR_PPL_RATIO = 10.0

# Samplers that give tokens the original can emit probability 0: KL(original ‖ modified) is infinite through
# them, so no temperature can be fitted (calibrate_decoding refuses) and no KL damage can be "recovered".
TRUNCATING_KINDS = frozenset({"top_k", "top_p", "min_p", "sampler"})
# Pruning scores the gradient-aware remedy replaces. SparseGPT already compensates its error with second-order
# information and is left alone; gblm and taylor are already gradient-aware.
UNINFORMED_PRUNE_METHODS = frozenset({"magnitude", "wanda"})


# -- recovery ------------------------------------------------------------------------------------------------


def recovered_fraction(damage_before: float, damage_after: float) -> float:
    """(damage_before − damage_after) / damage_before; NaN when there was no (finite) damage to recover.

    1 = back to the original, 0 = no better, negative = worse than unmitigated, above 1 = better than the
    original (possible for perplexity on a small sample).
    """
    if not (math.isfinite(damage_before) and math.isfinite(damage_after)) or damage_before <= 0:
        return math.nan
    return (damage_before - damage_after) / damage_before


def damage(metrics: dict[str, float], metric: str) -> float:
    """How far a run is from the original on `metric`: ppl_ratio − 1 for perplexity, the KL itself for KL."""
    return metrics["ppl_ratio"] - 1.0 if metric == "ppl_ratio" else metrics[metric]


def is_beyond_repair(ppl_ratio_after: float) -> bool:
    """The mitigated model is still collapsed: its perplexity is over 10x the original's."""
    return ppl_ratio_after > BEYOND_REPAIR_PPL_RATIO


def recovery(
    unmitigated: dict[str, float], mitigated: dict[str, float], metric: str = "kl_mean"
) -> dict[str, float]:
    """Held-out recovery of two stored runs at the same compression, on the same tokens.

    recovered = (damage_before - damage_after) / damage_before (NaN without damage before), where the damage is
    `metric` (KL, 0 for the original) or, for perplexity, ppl_ratio - 1. Also says whether the model is beyond
    repair.
    """
    recovered = recovered_fraction(damage(unmitigated, metric), damage(mitigated, metric))
    return {
        f"{metric}_before": unmitigated[metric],
        f"{metric}_after": mitigated[metric],
        "recovered": recovered,
        "beyond_repair": float(is_beyond_repair(mitigated["ppl_ratio"])),
    }


# -- remedies ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration text for the modifications a remedy adds (or switches from an uncalibrated score).

    `samples` / `length` None: each method's own default. Modifications that were already calibrated keep
    their own calibration fields, so a remedy never changes what the unmitigated run was calibrated on.
    """

    corpus: str = "news"
    samples: int | None = None
    length: int | None = None

    def apply(self, mod: Modification) -> Modification:
        """`mod` with its calib_* fields set from this set (fields it does not have are left alone)."""
        wanted = {"calib_corpus": self.corpus, "calib_samples": self.samples, "calib_len": self.length}
        names = {f.name for f in dataclasses.fields(mod)}
        changes = {k: v for k, v in wanted.items() if v is not None and k in names}
        return dataclasses.replace(mod, **changes) if changes else mod


@dataclass(frozen=True)
class Remedy:
    """A named rewrite of a chain: `rewrite(mods, calibration)` -> the mitigated chain, or None if it does not
    apply. `family` is the paper's remedy it realises (for grouping on the page)."""

    name: str
    description: str
    family: str
    rewrite: Callable[[Chain, CalibrationSet], Chain | None]

    def __call__(
        self, mods: Sequence[Modification], calibration: CalibrationSet | None = None
    ) -> Chain | None:
        return self.rewrite(tuple(mods), calibration or CalibrationSet())


def _has(mods: Chain, kind: str) -> bool:
    return any(m.kind == kind for m in mods)


def _gradient_aware(mods: Chain, calib: CalibrationSet) -> Chain | None:
    """Magnitude / Wanda → GBLM at the same sparsity and pattern; structured importance → Taylor."""
    out: list[Modification] = []
    changed = False
    for m in mods:
        if isinstance(m, Prune) and m.method in UNINFORMED_PRUNE_METHODS:
            new = dataclasses.replace(m, method="gblm")
            # Magnitude read no calibration text (its calib_* are unused defaults); Wanda's set is kept as is.
            out.append(calib.apply(new) if m.method == "magnitude" else new)
            changed = True
        elif isinstance(m, (PruneHeads, PruneChannels)) and m.importance != "taylor":
            structured = dataclasses.replace(m, importance="taylor")
            out.append(calib.apply(structured) if not m.calibrated else structured)
            changed = True
        else:
            out.append(m)
    return tuple(out) if changed else None


def _smoothquant(mods: Chain, calib: CalibrationSet) -> Chain | None:
    """A SmoothQuant migration right before every act_quant not already prepared by one."""
    out, changed = [], False
    for i, m in enumerate(mods):
        if isinstance(m, ActQuant) and not (i > 0 and isinstance(mods[i - 1], SmoothQuant)):
            out.append(calib.apply(SmoothQuant()))
            changed = True
        out.append(m)
    return tuple(out) if changed else None


def _dynamic_scaling(mods: Chain, calib: CalibrationSet) -> Chain | None:
    """Static activation scales → per-token dynamic ones (same bits); weight-only RTN → AWQ at the same grid.

    AWQ *replaces* the RTN rather than preparing it: its handler writes back Q(W·diag(s))·diag(s)⁻¹, which is on a
    per-column-scaled grid, and a second RTN of W's own grid would round those weights again and undo the
    scaling. RTN per tensor (AWQ has no per-tensor grid) or with lm_head quantized (AWQ leaves it alone) cannot
    be matched at the same compression and is left as it is.
    """
    out: list[Modification] = []
    changed = False
    for m in mods:
        if isinstance(m, ActQuant) and m.a_mode == "static":
            out.append(dataclasses.replace(m, a_mode="dynamic"))
            changed = True
        elif isinstance(m, QuantizeRTN) and m.granularity != "tensor" and not m.include_lm_head:
            group = m.group_size if m.granularity == "group" else -1
            out.append(calib.apply(AWQ(bits=m.bits, group_size=group, scheme=m.scheme)))
            changed = True
        else:
            out.append(m)
    return tuple(out) if changed else None


def _kl_distill(mods: Chain, calib: CalibrationSet) -> Chain | None:
    """kl_distill (norms) right after the last modification that changes weights (it trains on raw logits)."""
    last = max((i for i, m in enumerate(mods) if m.touches_weights), default=None)
    if last is None or _has(mods, "kl_distill"):
        return None
    return (*mods[: last + 1], calib.apply(KLDistill(params="norm")), *mods[last + 1 :])


def _calibrate_decoding(mods: Chain, calib: CalibrationSet) -> Chain | None:
    """calibrate_decoding (a fitted temperature) at the end of the chain."""
    if not mods or _has(mods, "calibrate_decoding") or any(m.kind in TRUNCATING_KINDS for m in mods):
        return None
    return (*mods, calib.apply(CalibrateDecoding()))


# name -> remedy, in the order `mitigate` applies them (see the module docstring).
REMEDIES: dict[str, Remedy] = {
    r.name: r
    for r in (
        Remedy(
            "gradient-aware pruning",
            "Score weights with the loss gradient on calibration text: GBLM for magnitude/Wanda, Taylor importance "
            "for heads and channels, at the same sparsity.",
            "gradient-aware pruning",
            _gradient_aware,
        ),
        Remedy(
            "SmoothQuant migration",
            "Move activation outliers into the weights (s = max|X|^α / max|W|^(1−α)) before activation "
            "quantization.",
            "dynamic quantization scaling",
            _smoothquant,
        ),
        Remedy(
            "dynamic quantization scaling",
            "Per-token activation scales instead of one static scale; AWQ-style searched scales instead of plain "
            "RTN at the same bits and group.",
            "dynamic quantization scaling",
            _dynamic_scaling,
        ),
        Remedy(
            "KL distillation (norms)",
            "Train only norm weights and biases for a few steps to minimise KL to the original on calibration "
            "text.",
            "decoding calibration",
            _kl_distill,
        ),
        Remedy(
            "decoding calibration",
            "Fit a temperature that minimises KL to the original on calibration text; weights untouched.",
            "decoding calibration",
            _calibrate_decoding,
        ),
    )
}


def applicable(mods: Sequence[Modification]) -> list[Remedy]:
    """The remedies that change this chain, in REMEDIES order."""
    return [r for r in REMEDIES.values() if r(mods) is not None]


def what_runs(remedy: str, mods: Sequence[Modification], calibration: CalibrationSet | None = None) -> str:
    """The methods a remedy runs on this chain, by their labels ("AWQ w4 g128", "T fit"): the steps of the
    mitigated chain that the chain did not have. Empty when the remedy does not apply. A picker says it, so
    "dynamic quantization scaling" is seen to run AWQ."""
    mitigated = REMEDIES[remedy](mods, calibration)
    if mitigated is None:
        return ""
    before = set(mods)
    return ", ".join(m.label() for m in mitigated if m not in before)


def mitigate(
    mods: Sequence[Modification], remedy_names: Sequence[str], calibration: CalibrationSet | None = None
) -> Chain:
    """Apply the named remedies to `mods` in REMEDIES order (the order of `remedy_names` does not matter).

    Raises SpecError for an unknown name, an empty choice, or a remedy that does not apply to the chain.
    """
    unknown = [n for n in remedy_names if n not in REMEDIES]
    if unknown:
        raise SpecError(f"unknown remedy {', '.join(map(repr, unknown))}; available: {', '.join(REMEDIES)}")
    if not remedy_names:
        raise SpecError("choose at least one remedy")
    chain = tuple(mods)
    wanted = set(remedy_names)
    for name, remedy in REMEDIES.items():
        if name not in wanted:
            continue
        mitigated = remedy(chain, calibration)
        if mitigated is None:
            label = " → ".join(m.label() for m in chain) or "the original model"
            raise SpecError(f"{name!r} does not apply to {label}: {remedy.description}")
        chain = mitigated
    return chain


# -- before / after ------------------------------------------------------------------------------------------

# What must be equal for two runs to be compared "on the same tokens" (RunResult.settings keys).
_SAME_TOKENS = ("corpus_sha256", "window", "stride", "tokens")
# The table's metrics, headed by their names in the metric registry (metric_names.py).
TABLE_METRICS = {k: METRICS[k].header for k in ("ppl", "ppl_ratio", "kl_mean", "top1_agreement")}


@dataclass(frozen=True)
class Comparison:
    """The unmitigated run (`before`) and the mitigated one (`after`) of one model on the same tokens, with the
    original model as the base: its perplexity is `ppl_base`, its KL to itself 0 and its top-1 agreement 1."""

    before: RunResult
    after: RunResult

    def __post_init__(self):
        if self.before.spec.model != self.after.spec.model:
            raise SpecError(
                f"before and after must be runs of one model, got {self.before.spec.model!r} and "
                f"{self.after.spec.model!r}"
            )
        for key in _SAME_TOKENS:
            a, b = self.before.settings.get(key), self.after.settings.get(key)
            if a is not None and b is not None and a != b:
                raise SpecError(f"before and after were measured on different tokens ({key}: {a} vs {b})")

    @property
    def original(self) -> dict[str, float]:
        """The original model's row: the base every damage is measured from."""
        m = self.before.metrics
        return {"ppl": m["ppl_base"], "ppl_ratio": 1.0, "kl_mean": 0.0, "top1_agreement": 1.0}

    def recovered(self, metric: str = "ppl_ratio") -> float:
        """Share of the `metric` damage ("ppl_ratio" or "kl_mean") the remedies recovered; NaN without damage."""
        if metric not in ("ppl_ratio", "kl_mean"):
            raise SpecError(f"recovery is measured on ppl_ratio or kl_mean, got {metric!r}")
        return recovered_fraction(damage(self.before.metrics, metric), damage(self.after.metrics, metric))

    @property
    def beyond_repair(self) -> bool:
        """The mitigated model is still above BEYOND_REPAIR_PPL_RATIO (10x) the original perplexity, whatever share
        of the damage was recovered (docs/metrics.md §5)."""
        return is_beyond_repair(self.after.metrics["ppl_ratio"])

    def table(self) -> pd.DataFrame:
        """One row each for original / before / after: chain, the TABLE_METRICS and the recovered fractions."""
        rows: list[dict[str, Any]] = []
        for name, chain, metrics in (
            ("original", "original", self.original),
            ("before", self.before.spec.label(), self.before.metrics),
            ("after", self.after.spec.label(), self.after.metrics),
        ):
            row: dict[str, Any] = {"model": name, "chain": chain}
            row.update({label: float(metrics.get(k, math.nan)) for k, label in TABLE_METRICS.items()})
            after = name == "after"
            row["recovered (perplexity)"] = self.recovered("ppl_ratio") if after else math.nan
            row["recovered (KL)"] = self.recovered("kl_mean") if after else math.nan
            rows.append(row)
        return pd.DataFrame(rows)

    # Tidy rows of both runs for the overlay charts: `run` names the side, `family` picks its colour
    # (charts.FAMILY_COLORS: "modified" red, "mitigation" teal).
    SIDES = (("before (unmitigated)", "modified"), ("after (mitigated)", "mitigation"))

    def _both(self, frame: Callable[[RunResult], pd.DataFrame]) -> pd.DataFrame:
        parts = [
            frame(result).assign(run=run, family=family)
            for result, (run, family) in zip((self.before, self.after), self.SIDES, strict=True)
        ]
        return pd.concat(parts, ignore_index=True)

    def layers(self) -> pd.DataFrame:
        """Per-layer rows of both runs, tidy: run, family, layer, metric, value (before first)."""
        return self._both(lambda r: r.layers)

    def heads(self) -> pd.DataFrame:
        """Per-head attention rows of both runs, tidy: run, family, layer, head, metric, value."""
        return self._both(lambda r: r.heads)

    def kl_hist(self) -> pd.DataFrame:
        """The log-binned per-token KL histograms of both runs: run, family, bin_lo, bin_hi, count."""
        return self._both(lambda r: r.kl_hist)
