"""bitsandbytes LLM.int8() and NF4/FP4 (`bnb_int8`, `bnb_4bit`); handler: modify/bnb.py. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Modification, check, modification, scope_label

BNB_4BIT_BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


@modification("bnb_int8")
@dataclass(frozen=True)
class BnbInt8(Modification):
    """bitsandbytes LLM.int8(): int8 weights (row absmax), per-token int8 activations, fp outlier columns."""

    family: ClassVar[str] = "quant"

    threshold: float = (
        6.0  # |activation| at or above which a whole input column is computed in float (0: never)
    )

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        check(
            self.threshold >= 0.0,
            f"LLM.int8() threshold must be >= 0 (0 disables outliers), got {self.threshold}",
        )

    def label(self) -> str:
        return f"LLM.int8() t={self.threshold:g}{scope_label(self)}"


@modification("bnb_4bit")
@dataclass(frozen=True)
class Bnb4bit(Modification):
    """bitsandbytes 4-bit weights (NF4 or FP4 code book, absmax per block), computed in `compute_dtype`."""

    family: ClassVar[str] = "quant"

    quant_type: str = "nf4"  # "nf4" (normal-float code book) or "fp4"
    blocksize: int = 64  # weights per absmax
    compute_dtype: str = "float32"  # dtype of the matmul after dequantization
    double_quant: bool = False  # quantize the absmax values themselves (8-bit, blocks of 256)

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        check(
            self.quant_type in ("nf4", "fp4"),
            f"4-bit quant_type must be 'nf4' or 'fp4', got {self.quant_type!r}",
        )
        check(
            self.blocksize in BNB_4BIT_BLOCKSIZES,
            f"4-bit blocksize must be one of {', '.join(map(str, BNB_4BIT_BLOCKSIZES))}, got {self.blocksize}",
        )
        check(
            self.compute_dtype in COMPUTE_DTYPES,
            f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}",
        )

    def label(self) -> str:
        dq = " dq" if self.double_quant else ""
        return f"bnb {self.quant_type.upper()} b{self.blocksize}{dq}{scope_label(self)}"
