"""The first page of a report, for someone who will read only that: what was changed, how much damage it did, how
much a remedy recovered, where the thresholds lie, and one sentence of verdict. Pure: numbers and words, no
plotting and no HTML.

Damage is read against the paper's robustness levels (docs/metrics.md §4): a perplexity ratio up to 1.1× is
robust, up to 2× noticeable, up to 10× serious, beyond that collapse. A pair of runs is a mitigation when some
set of the remedies that apply to one chain turns it into the other (mitigation.mitigate), on the same model
and tokens. A sweep is three or more runs of one method that differ in one numeric field only.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from . import mitigation
from .analysis import sweep_points
from .errors import HemlabError
from .runner import RunResult
from .specs import MODIFICATIONS
from .specs.families import family as family_info

# (upper bound of the perplexity ratio, word, what it means), mildest first.
LEVELS: tuple[tuple[float, str, str], ...] = (
    (1.1, "robust", "within 10 % of the original's perplexity"),
    (2.0, "noticeable damage", "up to twice the original's perplexity"),
    (10.0, "serious damage", "up to ten times the original's perplexity"),
    (math.inf, "collapse", "more than ten times the original's perplexity"),
)


def level(ppl_ratio: float) -> tuple[str, str]:
    """(word, meaning) of a perplexity ratio; a ratio that is not a number (∞ from a sampler that cuts the next
    token) has no level of its own."""
    if ppl_ratio is None or not math.isfinite(ppl_ratio):
        return (
            "∞ by definition",
            "the change gives some actual next tokens probability 0 (a truncating sampler)",
        )
    return next((word, meaning) for top, word, meaning in LEVELS if ppl_ratio <= top)


@dataclass(frozen=True)
class Change:
    name: str  # the run's display name
    families: str  # "Quantize", "Prune + Decode"
    model: str
    ppl_ratio: float
    kl_mean: float
    top1_agreement: float
    level: str


@dataclass(frozen=True)
class Recovery:
    before: str
    after: str
    remedies: tuple[str, ...]
    ppl_recovered: float
    kl_recovered: float
    beyond_repair: bool


@dataclass
class Summary:
    changes: list[Change] = field(default_factory=list)
    recoveries: list[Recovery] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)  # one sentence per sweep (markdown bold **…**)
    verdict: str = ""


def _families(result: RunResult) -> str:
    names = dict.fromkeys(getattr(MODIFICATIONS.get(m.kind), "family", "other") for m in result.spec.mods)
    return " + ".join(family_info(n).title for n in names) or "Original"


def _recovery(before: RunResult, after: RunResult, names: dict[int, str]) -> Recovery | None:
    """The remedies that turn `before`'s chain into `after`'s, if some set of them does, and what they bought."""
    if before.spec.model != after.spec.model or not before.spec.mods:
        return None
    remedies = [r.name for r in mitigation.applicable(before.spec.mods)]
    for n in range(1, len(remedies) + 1):
        for chosen in itertools.combinations(remedies, n):
            try:
                rewritten = mitigation.mitigate(before.spec.mods, chosen)
            except HemlabError:
                continue
            if [m.label() for m in rewritten] != [m.label() for m in after.spec.mods]:
                continue
            try:
                c = mitigation.Comparison(before, after)
            except HemlabError:
                return None  # other tokens: not a comparison
            return Recovery(
                names[id(before)],
                names[id(after)],
                chosen,
                c.recovered("ppl_ratio"),
                c.recovered("kl_mean"),
                c.beyond_repair,
            )
    return None


def _sweep_sentences(results: list[RunResult]) -> list[str]:
    """A headline per sweep among the runs: one method, every other field and the tokens fixed, one numeric
    field varied over three or more settings."""
    by_kind: dict[tuple, list[tuple[dict, RunResult]]] = {}
    for r in results:
        if len(r.spec.mods) != 1:
            continue
        mod = json.loads(r.spec.to_json())["mods"][0]
        key = (r.spec.model, mod["kind"], r.settings.get("corpus_sha256"), r.settings.get("tokens"))
        by_kind.setdefault(key, []).append((mod, r))
    out = []
    for (model, kind, _, _), members in by_kind.items():
        if len(members) < 3:
            continue
        fields = [k for k in members[0][0] if k != "kind"]
        varied = [f for f in fields if len({json.dumps(m.get(f)) for m, _ in members}) > 1]
        if len(varied) != 1 or not all(isinstance(m[varied[0]], (int, float)) for m, _ in members):
            continue
        knob = varied[0]
        points = pd.DataFrame(
            {
                "series": kind,
                "x": [m[knob] for m, _ in members],
                "ppl_ratio": [r.metrics["ppl_ratio"] for _, r in members],
            }
        )
        found = sweep_points.series_thresholds(points, sweep_points.severity_direction(knob), knob=knob)
        out += [f"{sweep_points.short_model(model)} · {kind}: {s}" for s in found.headlines.values()]
    return out


def _verdict(changes: list[Change], recoveries: list[Recovery]) -> str:
    finite = [c for c in changes if math.isfinite(c.ppl_ratio)]
    if not changes:
        return ""
    if len(changes) == 1:
        c = changes[0]
        word, meaning = level(c.ppl_ratio)
        ratio = f"×{c.ppl_ratio:.3g}" if math.isfinite(c.ppl_ratio) else "∞"
        text = (
            f"{c.name} is **{word}**: perplexity {ratio} of the original's ({meaning}), and the two models pick "
            f"the same next token at {c.top1_agreement:.0%} of positions."
        )
    else:
        robust = [c for c in finite if c.ppl_ratio <= LEVELS[0][0]]
        text = f"Of {len(changes)} runs, {len(robust)} stay robust (perplexity within 1.1× of the original's)"
        if finite:
            best, worst = min(finite, key=lambda c: c.ppl_ratio), max(finite, key=lambda c: c.ppl_ratio)
            text += (
                f"; the mildest is {best.name} (×{best.ppl_ratio:.3g}), the harshest {worst.name} "
                f"(×{worst.ppl_ratio:.3g}, {level(worst.ppl_ratio)[0]})"
            )
        text += "."
    for rec in recoveries:
        share = "n/a" if not math.isfinite(rec.ppl_recovered) else f"{rec.ppl_recovered:.0%}"
        text += f" {', '.join(rec.remedies)} recovered {share} of the perplexity damage of {rec.before}" + (
            ", but the model stays beyond repair." if rec.beyond_repair else "."
        )
    return text


def summarise(results: list[RunResult], names: list[str]) -> Summary:
    """The summary of these runs (`names`: their display names, in order)."""
    by_id = {id(r): n for r, n in zip(results, names, strict=True)}
    s = Summary()
    for r, n in zip(results, names, strict=True):
        m = r.metrics
        s.changes.append(
            Change(
                n,
                _families(r),
                r.spec.model,
                m.get("ppl_ratio", math.nan),
                m.get("kl_mean", math.nan),
                m.get("top1_agreement", math.nan),
                level(m.get("ppl_ratio", math.nan))[0],
            )
        )
    for before, after in itertools.permutations(results, 2):
        if (rec := _recovery(before, after, by_id)) is not None:
            s.recoveries.append(rec)
    s.thresholds = _sweep_sentences(results)
    s.verdict = _verdict(s.changes, s.recoveries)
    return s
