"""bitsandbytes LLM.int8() and NF4/FP4 (`bnb_int8`, `bnb_4bit`); handler: modify/bnb.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import Modification, modification, option, partial_field, router_field, scope_label


@modification("bnb_int8")
@dataclass(frozen=True)
class BnbInt8(Modification):
    """bitsandbytes LLM.int8(): int8 weights (row absmax), per-token int8 activations, fp outlier columns."""

    family: ClassVar[str] = "quant"

    threshold: float = option(
        6.0,
        ge=0.0,
        what="LLM.int8() outlier threshold",
        help="|activation| at or above which a whole input column is computed in float (0: never)",
    )

    include_router: bool = router_field()
    partial: bool = partial_field()

    def label(self) -> str:
        return f"LLM.int8() t={self.threshold:g}{scope_label(self)}"


@modification("bnb_4bit")
@dataclass(frozen=True)
class Bnb4bit(Modification):
    """bitsandbytes 4-bit weights (NF4 or FP4 code book, absmax per block), computed in `compute_dtype`."""

    family: ClassVar[str] = "quant"

    quant_type: Literal["nf4", "fp4"] = option("nf4", help="nf4 (normal-float code book) or fp4")
    blocksize: Literal[64, 128, 256, 512, 1024, 2048, 4096] = option(64, help="weights per absmax")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = option(
        "float32", help="dtype of the matmul after dequantization"
    )
    double_quant: bool = option(False, help="quantize the absmax values themselves (8-bit, blocks of 256)")

    include_router: bool = router_field()
    partial: bool = partial_field()

    def label(self) -> str:
        dq = " dq" if self.double_quant else ""
        return f"bnb {self.quant_type.upper()} b{self.blocksize}{dq}{scope_label(self)}"
