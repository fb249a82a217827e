"""Scale migration remedies SmoothQuant and AWQ (`smoothquant`, `awq`); handler: modify/scaling.py. No torch.

Composition is by order in the run spec: `smoothquant` migrates activation outliers into the weights and must
come before the `act_quant` (or `quant_rtn`) it prepares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import (
    Calibrated,
    GroupChecked,
    bits_field,
    calib_samples_field,
    group_field,
    group_label,
    modification,
    option,
    partial_field,
    router_field,
    scope_label,
)


@modification("smoothquant")
@dataclass(frozen=True)
class SmoothQuant(Calibrated):
    """SmoothQuant scale migration s_j = max|X_j|^α / max|W_j|^(1−α): exact in float, eases activation quantization."""

    family: ClassVar[str] = "mitigation"

    alpha: float = option(
        0.5,
        ge=0.0,
        le=1.0,
        slider=(0.0, 1.0, 0.05),
        help="migration strength: 0 leaves activations alone, 1 moves all of their range into weights",
    )
    calib_samples: int = calib_samples_field(16)

    include_router: bool = router_field()
    partial: bool = partial_field("smoothed")

    def label(self) -> str:
        return f"SmoothQuant α={self.alpha:g}{scope_label(self)}"


@modification("awq")
@dataclass(frozen=True)
class AWQ(GroupChecked, Calibrated):
    """AWQ-style weight-only quantization: per-channel scales s = mean|X|^α, α searched per layer, then RTN."""

    family: ClassVar[str] = "mitigation"

    bits: int = bits_field(4)
    group_size: int = group_field(128)
    scheme: Literal["sym", "asym"] = option("asym", help="asym: AWQ's usual zero-point grid")
    grid: int = option(20, ge=1, help="α in {0, 1/grid, ..., (grid-1)/grid}")
    calib_samples: int = calib_samples_field(16)

    include_router: bool = router_field()
    partial: bool = partial_field()

    def label(self) -> str:
        return f"AWQ w{self.bits} {self.scheme} {group_label(self.group_size)}{scope_label(self)}"
