"""GPTQ (`gptq`): weight-only quantization calibrated block by block; handler: modify/gptq.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import (
    Calibrated,
    GroupChecked,
    bits_field,
    group_field,
    group_label,
    modification,
    option,
    partial_field,
    router_field,
    scope_label,
)


@modification("gptq")
@dataclass(frozen=True)
class GPTQ(GroupChecked, Calibrated):
    """GPTQ weight-only quantization, block by block on the outputs of the already-quantized blocks."""

    family: ClassVar[str] = "quant"

    bits: int = bits_field(4)
    group_size: int = group_field(128)
    scheme: Literal["sym", "asym"] = option("sym", help="sym, or asym (a zero point per group)")
    damp: float = option(
        0.01,
        gt=0.0,
        le=1.0,
        help="dampening added to the Hessian diagonal, as a share of its mean (GPTQ's percdamp)",
    )
    block_size: int = option(128, ge=1, help="columns updated together before the lazy batch update")
    act_order: bool = option(False, help="quantize columns in order of decreasing Hessian diagonal")
    true_sequential: bool = option(
        True, help="calibrate each sub-layer (qkv, o, gate/up, down) on quantized inputs"
    )

    include_router: bool = router_field()
    partial: bool = partial_field()

    def label(self) -> str:
        act = " act" if self.act_order else ""
        return f"GPTQ w{self.bits} {self.scheme} {group_label(self.group_size)}{act}{scope_label(self)}"
