"""Round-to-nearest weight quantization (`quant_rtn`) and the quant family; its handler is modify/quantize.py.
No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import (
    ModelFacts,
    Modification,
    bits_field,
    check_group_size,
    modification,
    option,
    partial_field,
    router_field,
    scope_label,
)
from .families import Family, register_family

register_family(
    Family(
        "quant",
        "Quantize",
        "grid_on",
        "#F58518",
        1,
        True,
        "Store the weights on a coarser grid. Fewer bits save memory; watch where the perplexity ratio and "
        "the KL start to climb. The embedded baselines already sit on a 4-bit GGUF grid (see the Model page).",
        "pages/quantize.py",
    )
)


@modification("quant_rtn")
@dataclass(frozen=True)
class QuantizeRTN(Modification):
    """Weight-only round-to-nearest quantization of every Linear / Conv1D (lm_head and embeddings excluded)."""

    family: ClassVar[str] = "quant"

    bits: int = bits_field(8)
    scheme: Literal["sym", "asym"] = option(
        "sym", help="sym: zero-centred grid; asym: min/max grid with a zero point"
    )
    granularity: Literal["channel", "group", "tensor"] = option(
        "channel", help="one scale per tensor, per output channel, or per group of inputs"
    )
    group_size: int = option(
        128,
        ge=2,
        what="group size",
        suggest=(16, 32, 64, 128, 256),
        enabled_when=("granularity", "group"),
        help="input weights sharing one scale (with granularity=group)",
    )
    include_lm_head: bool = False
    include_router: bool = router_field()
    partial: bool = partial_field()

    def check_model(self, facts: ModelFacts) -> None:
        super().check_model(facts)
        if self.granularity == "group":
            check_group_size(self.kind, self.group_size, facts)

    def label(self) -> str:
        gran = f"g{self.group_size}" if self.granularity == "group" else self.granularity
        return f"RTN w{self.bits} {self.scheme} {gran}{scope_label(self)}"
