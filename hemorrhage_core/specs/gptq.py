"""GPTQ (`gptq`): weight-only quantization calibrated block by block; handler: modify/gptq.py. No torch."""

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


@modification("gptq")
@dataclass(frozen=True)
class GPTQ(GroupChecked, Calibrated):
    """GPTQ weight-only quantization, block by block on the outputs of the already-quantized blocks."""

    family: ClassVar[str] = "quant"

    bits: int = 4
    group_size: int = 128  # -1: one scale per output channel
    scheme: str = "sym"  # "sym" or "asym" (zero point per group)
    damp: float = 0.01  # dampening added to the Hessian diagonal, as a share of its mean (GPTQ's percdamp)
    block_size: int = 128  # columns updated together before the lazy batch update
    act_order: bool = False  # quantize columns in order of decreasing Hessian diagonal
    true_sequential: bool = True  # calibrate each sub-layer (qkv, o, gate/up, down) on quantized inputs

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        super().__post_init__()
        check_bits(self.bits)
        check_group(self.group_size)
        check(self.scheme in ("sym", "asym"), f"GPTQ scheme must be 'sym' or 'asym', got {self.scheme!r}")
        check(0.0 < self.damp <= 1.0, f"GPTQ damp must be in (0, 1], got {self.damp}")
        check(self.block_size >= 1, f"GPTQ block_size must be at least 1, got {self.block_size}")

    def label(self) -> str:
        act = " act" if self.act_order else ""
        return f"GPTQ w{self.bits} {self.scheme} {group_label(self.group_size)}{act}{scope_label(self)}"
