"""Running estimates of the headline numbers while a profile is still measuring, with 95 % confidence intervals.

The interval is a percentile bootstrap over *position blocks*: the predicted positions of every window are cut
into 8 blocks of consecutive positions (at most BLOCK: 64 at the default window of 512; a block never straddles
two windows) and whole blocks are resampled, so the correlation between neighbouring positions of a text is kept
inside a block (a bootstrap over single positions would give intervals too narrow by far). Blocks rather than
whole windows, because the first numbers come from one window (the preview) and the default budget has only 8
windows. With fewer than MIN_BLOCKS blocks there is no interval (NaN bounds: "not known yet").

The estimates use exactly the expressions of the final metrics (`headline`), so the last snapshot of a profile
equals the stored numbers bit for bit; only the intervals are new.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BLOCK = 64  # most predicted positions per bootstrap block
BLOCKS_PER_WINDOW = 8  # shorter windows get shorter blocks, so one window still gives an interval
MIN_BLOCKS = 4
RESAMPLES = 400
SEED = 0  # fixed: the same data gives the same interval
METHOD = (
    f"95 % percentile bootstrap over blocks of consecutive predicted positions ({BLOCKS_PER_WINDOW} per window, "
    f"at most {BLOCK} positions each; {RESAMPLES} resamples)"
)
HEADLINES = ("ppl_ratio", "kl_mean", "top1_agreement")


def headline(kl: torch.Tensor, base_lp: torch.Tensor, mod_lp: torch.Tensor, agree: torch.Tensor) -> dict:
    """The three headline numbers from per-position tensors, with the final metrics' own expressions
    (profile.py: float64 means of the concatenated positions)."""
    ppl_base, ppl = math.exp(-float(base_lp.double().mean())), math.exp(-float(mod_lp.double().mean()))
    return {
        "ppl_ratio": ppl / ppl_base,
        "kl_mean": float(kl.flatten().double().mean()),
        "top1_agreement": float(agree.double().mean()),
    }


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float

    @property
    def known(self) -> bool:
        """False while too few blocks are measured for an interval (NaN bounds)."""
        return self.lo == self.lo and self.hi == self.hi

    @property
    def width(self) -> float:
        return self.hi - self.lo if self.known else math.inf

    def covers(self, x: float) -> bool:
        return not self.known or self.lo <= x <= self.hi


@dataclass(frozen=True)
class PartialMetrics:
    """The headline numbers measured so far. `final`: the profile is complete and these are the stored numbers."""

    ppl_ratio: Interval
    kl_mean: Interval
    top1_agreement: Interval
    positions: int  # predicted positions measured so far
    windows: int  # evaluation windows measured so far
    total_windows: int
    source: str  # "preview" (the first window(s), before the profile) or "profile"
    final: bool = False
    method: str = METHOD

    def values(self) -> dict[str, float]:
        return {name: getattr(self, name).value for name in HEADLINES}


def block_length(width: int) -> int:
    """Positions per bootstrap block for windows of `width` predicted positions."""
    return max(1, min(BLOCK, math.ceil(width / BLOCKS_PER_WINDOW)))


def position_blocks(first_window: int, windows: int, width: int) -> torch.Tensor:
    """Block id of every predicted position of `windows` consecutive windows (flattened like
    `reference.position_logits`: window-major, `width` = T - 1 positions each)."""
    length = block_length(width)
    per_window = math.ceil(width / length)
    r = torch.arange(windows * width)
    return (first_window + r // width) * per_window + (r % width) // length


def _bootstrap(sums: dict[str, torch.Tensor], counts: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(lo, hi) of each statistic from block sums [G] and block sizes [G]."""
    g = counts.numel()
    gen = torch.Generator().manual_seed(SEED)
    idx = torch.randint(0, g, (RESAMPLES, g), generator=gen)
    n = counts[idx].sum(1)
    # Order statistics, no interpolation: an infinite KL (a truncating sampler) stays inf, never NaN.
    lo_k, hi_k = int(0.025 * RESAMPLES), math.ceil(0.975 * RESAMPLES) - 1

    def bounds(stat: torch.Tensor) -> tuple[float, float]:
        s = stat.sort().values
        return float(s[lo_k]), float(s[hi_k])

    return {
        # exp(mean(base) - mean(mod)) = ppl / ppl_base over the resampled positions
        "ppl_ratio": bounds(torch.exp(sums["lp_gap"][idx].sum(1) / n)),
        "kl_mean": bounds(sums["kl"][idx].sum(1) / n),
        "top1_agreement": bounds(sums["agree"][idx].sum(1) / n),
    }


def estimate(
    kl: torch.Tensor,
    base_lp: torch.Tensor,
    mod_lp: torch.Tensor,
    agree: torch.Tensor,
    blocks: torch.Tensor,
    *,
    windows: int,
    total_windows: int,
    source: str,
    final: bool = False,
) -> PartialMetrics:
    """Estimates and intervals from per-position tensors of equal length and their block ids."""
    values = headline(kl, base_lp, mod_lp, agree)
    _, dense = torch.unique(blocks, return_inverse=True)  # block ids -> 0..G-1
    g = int(dense.max()) + 1 if dense.numel() else 0
    per_position = {
        "lp_gap": base_lp.double() - mod_lp.double(),
        "kl": kl.flatten().double(),
        "agree": agree.double(),
    }
    sums = {k: torch.zeros(g, dtype=torch.float64).index_add_(0, dense, v) for k, v in per_position.items()}
    counts = torch.zeros(g, dtype=torch.float64).index_add_(0, dense, torch.ones_like(per_position["kl"]))
    if g >= MIN_BLOCKS:
        bounds = _bootstrap(sums, counts)
        # The point estimate is the final metric's expression; keep it inside its interval even where float
        # rounding (ppl / ppl_base against exp of a mean difference) puts it a hair outside.
        intervals = {
            k: Interval(values[k], min(bounds[k][0], values[k]), max(bounds[k][1], values[k]))
            for k in HEADLINES
        }
    else:
        intervals = {k: Interval(values[k], math.nan, math.nan) for k in HEADLINES}
    return PartialMetrics(
        ppl_ratio=intervals["ppl_ratio"],
        kl_mean=intervals["kl_mean"],
        top1_agreement=intervals["top1_agreement"],
        positions=int(kl.numel()),
        windows=windows,
        total_windows=total_windows,
        source=source,
        final=final,
    )
