"""Scale migration remedies SmoothQuant and AWQ (`smoothquant`, `awq`); handler: modify/scaling.py. No torch.

Composition is by order in the run spec: `smoothquant` migrates activation outliers into the weights and must
come before the `act_quant` (or `quant_rtn`) it prepares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import (
    Calibrated,
    GroupChecked,
    check,
    check_bits,
    check_group,
    group_label,
    modification,
    scope_label,
)


@modification("smoothquant")
@dataclass(frozen=True)
class SmoothQuant(Calibrated):
    """SmoothQuant scale migration s_j = max|X_j|^α / max|W_j|^(1−α): exact in float, eases activation quantization."""

    family: ClassVar[str] = "mitigation"

    alpha: float = (
        0.5  # migration strength: 0 leaves activations alone, 1 moves all of their range into weights
    )
    calib_samples: int = 16

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be smoothed (coverage reported)

    def __post_init__(self):
        super().__post_init__()
        check(0.0 <= self.alpha <= 1.0, f"SmoothQuant alpha must be in [0, 1], got {self.alpha}")

    def label(self) -> str:
        return f"SmoothQuant α={self.alpha:g}{scope_label(self)}"


@modification("awq")
@dataclass(frozen=True)
class AWQ(GroupChecked, Calibrated):
    """AWQ-style weight-only quantization: per-channel scales s = mean|X|^α, α searched per layer, then RTN."""

    family: ClassVar[str] = "mitigation"

    bits: int = 4
    group_size: int = 128  # -1: one scale per output channel
    scheme: str = "asym"  # AWQ's usual zero-point grid
    grid: int = 20  # α in {0, 1/grid, ..., (grid-1)/grid}
    calib_samples: int = 16

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        super().__post_init__()
        check_bits(self.bits)
        check_group(self.group_size)
        check(self.scheme in ("sym", "asym"), f"AWQ scheme must be 'sym' or 'asym', got {self.scheme!r}")
        check(self.grid >= 1, f"AWQ grid must be at least 1, got {self.grid}")

    def label(self) -> str:
        return f"AWQ w{self.bits} {self.scheme} {group_label(self.group_size)}{scope_label(self)}"
