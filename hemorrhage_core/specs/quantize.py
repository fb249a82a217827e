"""Round-to-nearest weight quantization (`quant_rtn`); its handler is modify/quantize.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import ModelFacts, Modification, check, check_group_size, modification, scope_label


@modification("quant_rtn")
@dataclass(frozen=True)
class QuantizeRTN(Modification):
    """Weight-only round-to-nearest quantization of every Linear / Conv1D (lm_head and embeddings excluded)."""

    family: ClassVar[str] = "quant"

    bits: int = 8
    scheme: str = "sym"  # "sym": zero-centred grid; "asym": min/max grid with a zero point
    granularity: str = "channel"  # one scale per "tensor", per output "channel", or per "group" of inputs
    group_size: int = 128
    include_lm_head: bool = False
    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        check(2 <= self.bits <= 8, f"quantization bits must be between 2 and 8, got {self.bits}")
        check(
            self.scheme in ("sym", "asym"),
            f"quantization scheme must be 'sym' or 'asym', got {self.scheme!r}",
        )
        check(
            self.granularity in ("tensor", "channel", "group"),
            f"quantization granularity must be tensor, channel or group, got {self.granularity!r}",
        )
        check(self.group_size >= 2, f"group size must be at least 2, got {self.group_size}")

    def check_model(self, facts: ModelFacts) -> None:
        super().check_model(facts)
        if self.granularity == "group":
            check_group_size(self.kind, self.group_size, facts)

    def label(self) -> str:
        gran = f"g{self.group_size}" if self.granularity == "group" else self.granularity
        return f"RTN w{self.bits} {self.scheme} {gran}{scope_label(self)}"
