"""Weight + activation quantization W8A8 / W4A8 (`act_quant`); handler: modify/actquant.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import (
    Calibrated,
    GroupChecked,
    bits_field,
    calib_samples_field,
    modification,
    option,
    partial_field,
    router_field,
    scope_label,
)


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

    w_bits: int = bits_field(8)
    a_bits: int = bits_field(8)
    w_group_size: int = option(
        -1, ge=2, special={-1: "one scale per output channel"}, help="input weights per weight scale"
    )
    a_mode: Literal["dynamic", "static"] = option(
        "dynamic", help="static (per tensor, calibrated) or dynamic (per token, at run time)"
    )
    a_static_stat: Literal["max", "percentile"] = option(
        "max", help="static scale from the calibration max or a percentile of |x|"
    )
    a_percentile: float = option(99.99, ge=50.0, lt=100.0, help="with a_static_stat=percentile")
    outlier_threshold: float = option(0.0, ge=0.0, help="0: off; e.g. 6.0 as LLM.int8()")
    calib_samples: int = calib_samples_field(16)  # static scales only need a range: fewer sequences than GPTQ

    include_router: bool = router_field()
    partial: bool = partial_field()

    def label(self) -> str:
        mode = "dynamic/token" if self.a_mode == "dynamic" else f"static/tensor {self.a_static_stat}"
        outliers = f" +outliers>{self.outlier_threshold:g}" if self.outlier_threshold else ""
        group = "" if self.w_group_size == -1 else f" g{self.w_group_size}"
        return f"W{self.w_bits}A{self.a_bits}{group} {mode}{outliers}{scope_label(self)}"
