"""Weight + activation quantization W8A8 / W4A8 (`act_quant`); handler: modify/actquant.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Calibrated, GroupChecked, check, check_bits, check_group, modification, scope_label


@modification("act_quant")
@dataclass(frozen=True)
class ActQuant(GroupChecked, Calibrated):
    """Weight + activation quantization (W8A8, W4A8): RTN weights, symmetric activations at every Linear input.

    `a_mode` "static": one scale per tensor from calibration (max or a percentile of |x|); "dynamic": one scale per
    token computed at run time. `outlier_threshold` > 0 keeps input columns holding any |x| >= threshold in float
    (LLM.int8()'s decomposition); their weights stay quantized, as in bitsandbytes.
    """

    family: ClassVar[str] = "quant"
    group_field: ClassVar[str] = "w_group_size"

    w_bits: int = 8
    a_bits: int = 8
    w_group_size: int = -1  # -1: one weight scale per output channel
    a_mode: str = "dynamic"  # "static" (per tensor, calibrated) or "dynamic" (per token, at run time)
    a_static_stat: str = "max"  # static scale from the calibration "max" or a "percentile" of |x|
    a_percentile: float = 99.99
    outlier_threshold: float = 0.0  # 0: off; e.g. 6.0 as LLM.int8()
    calib_samples: int = 16  # static scales only need a range: fewer sequences than GPTQ

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        super().__post_init__()
        check_bits(self.w_bits, "w_bits")
        check_bits(self.a_bits, "a_bits")
        check_group(self.w_group_size)
        check(
            self.a_mode in ("static", "dynamic"), f"a_mode must be 'static' or 'dynamic', got {self.a_mode!r}"
        )
        check(
            self.a_static_stat in ("max", "percentile"),
            f"a_static_stat must be 'max' or 'percentile', got {self.a_static_stat!r}",
        )
        check(
            50.0 <= self.a_percentile < 100.0, f"a_percentile must be in [50, 100), got {self.a_percentile}"
        )
        check(
            self.outlier_threshold >= 0.0,
            f"outlier_threshold must be >= 0 (0: off), got {self.outlier_threshold}",
        )

    def label(self) -> str:
        mode = "dynamic/token" if self.a_mode == "dynamic" else f"static/tensor {self.a_static_stat}"
        outliers = f" +outliers>{self.outlier_threshold:g}" if self.outlier_threshold else ""
        group = "" if self.w_group_size == -1 else f" g{self.w_group_size}"
        return f"W{self.w_bits}A{self.a_bits}{group} {mode}{outliers}{scope_label(self)}"
