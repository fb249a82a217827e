"""llama.cpp's GGUF quantization types as a modification (`gguf`); handler: modify/gguf.py. No torch.

The model (as modified so far in the chain) is exported to a float GGUF file, quantized to `qtype` by
`llama-quantize` (optionally with an importance matrix from `llama-imatrix` on calibration text), read back through
transformers' GGUF loader and profiled like any other setting. `GGUF_TYPES` is the table of the types offered, in
order of their main block format's bits, so sweeps over types have a direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import (
    Calibrated,
    calib_corpus_field,
    calib_len_field,
    calib_samples_field,
    calibration_label,
    check,
    modification,
    option,
)
from .families import Family, register_family

register_family(
    Family(
        "gguf",
        "GGUF",
        "inventory_2",
        "#EECA3B",
        1,
        True,
        "llama.cpp's quantization types (Q2_K … Q8_0, IQ types), through real GGUF files: the model is "
        "exported, quantized by llama-quantize (optionally with an importance matrix), read back and "
        "measured. Bits per weight are what the file stores: llama.cpp keeps some tensors wider and falls "
        "back to another type for rows that do not fill its 256-value K-quant blocks.",
        "pages/gguf.py",
    )
)


@dataclass(frozen=True)
class GGUFType:
    """One llama-quantize target. `block_bits`: bits per weight of its main block format (codes and scales, from
    ggml's block layout). Unless `pure`, llama.cpp stores some tensors in a wider format (the output matrix, and in
    the _S/_M/_L mixes attn_v and ffn_down), and rows that do not fill its blocks in a fallback type: files measure
    more, which is why runs report the bits per weight the file stores."""

    name: str
    block_bits: float
    python: bool = False  # the `gguf` Python package quantizes it by itself (gguf.quants)
    needs_imatrix: bool = False  # llama-quantize refuses it without an importance matrix


# llama-quantize's names (tools/quantize/quantize.cpp). Which need an importance matrix: llama-quant.cpp's
# tensor_requires_imatrix (IQ1_*, IQ2_XXS/XS/S, IQ3_XXS targets, and Q2_K inside a Q2_K_S file).
GGUF_TYPES: dict[str, GGUFType] = {
    t.name: t
    for t in (
        GGUFType("IQ1_S", 1.5625, needs_imatrix=True),
        GGUFType("IQ1_M", 1.75, needs_imatrix=True),
        GGUFType("IQ2_XXS", 2.0625, needs_imatrix=True),
        GGUFType("IQ2_XS", 2.3125, needs_imatrix=True),
        GGUFType("IQ2_S", 2.5625, needs_imatrix=True),
        GGUFType("IQ2_M", 2.5625, needs_imatrix=True),
        GGUFType("Q2_K_S", 2.625, needs_imatrix=True),
        GGUFType("Q2_K", 2.625),
        GGUFType("IQ3_XXS", 3.0625, needs_imatrix=True),
        GGUFType("IQ3_XS", 3.4375, needs_imatrix=True),
        GGUFType("IQ3_S", 3.4375),
        GGUFType("IQ3_M", 3.4375),
        GGUFType("Q3_K_S", 3.4375),
        GGUFType("Q3_K_M", 3.4375),
        GGUFType("Q3_K_L", 3.4375),
        GGUFType("IQ4_XS", 4.25),
        GGUFType("IQ4_NL", 4.5),
        GGUFType("Q4_0", 4.5, python=True),
        GGUFType("Q4_K_S", 4.5),
        GGUFType("Q4_K_M", 4.5),
        GGUFType("Q4_1", 5.0, python=True),
        GGUFType("Q5_0", 5.5, python=True),
        GGUFType("Q5_K_S", 5.5),
        GGUFType("Q5_K_M", 5.5),
        GGUFType("Q5_1", 6.0, python=True),
        GGUFType("Q6_K", 6.5625),
        GGUFType("Q8_0", 8.5, python=True),
        GGUFType("F16", 16.0, python=True),
    )
}


# The Literal of the qtype field is built from the table (Literal[("a", "b")] is Literal["a", "b"]), so the table
# stays the one list of types.
GGUF_TYPE_NAMES = tuple(GGUF_TYPES)


@modification("gguf")
@dataclass(frozen=True)
class GGUFQuant(Calibrated):
    """A llama.cpp GGUF quantization type (Q2_K … Q8_0, IQ types), through a real GGUF file read back.

    `pure`: every matrix in `qtype` (llama-quantize --pure), instead of llama.cpp's mix. Pure legacy types (Q4_0,
    Q4_1, Q5_0, Q5_1, Q8_0) and F16 also work without the llama.cpp tools: the `gguf` Python package writes them.
    `imatrix`: quantize with an importance matrix computed by llama-imatrix on `calib_samples` x `calib_len`
    tokens of `calib_corpus` (the IQ types marked so in GGUF_TYPES need it).
    """

    family: ClassVar[str] = "gguf"

    # The calibration text is read only for an importance matrix.
    calib_corpus: str = calib_corpus_field("news", enabled_when=("imatrix", True))
    calib_samples: int = calib_samples_field(32, enabled_when=("imatrix", True))
    calib_len: int = calib_len_field(512, enabled_when=("imatrix", True))

    # A Literal built from the type table at import (read by the generic field check); checkers need literals.
    qtype: Literal[GGUF_TYPE_NAMES] = option(  # type: ignore[valid-type]
        "Q4_K_M", help="llama-quantize type, in order of bits (IQ1_S … Q8_0, F16)"
    )
    pure: bool = option(
        False, help="llama-quantize --pure: no mix, every matrix (embedding and output too) in qtype"
    )
    imatrix: bool = option(False, help="importance matrix from llama-imatrix on the calibration text")
    export: Literal["F32", "F16"] = option(
        "F32", help="float type of the exported file that llama-quantize reads"
    )

    def validate(self) -> None:
        check(
            self.imatrix or not GGUF_TYPES[self.qtype].needs_imatrix,
            f"gguf: {self.qtype} needs an importance matrix (llama-quantize refuses it without one): set "
            "imatrix=true",
        )
        check(
            not (self.imatrix and self.qtype == "F16"),
            "gguf: F16 is not quantized, so an importance matrix does nothing: set imatrix=false",
        )

    @property
    def gguf_type(self) -> GGUFType:
        return GGUF_TYPES[self.qtype]

    @property
    def python_writes(self) -> bool:
        """Whether the gguf Python package writes exactly this file (no llama.cpp tool needed)."""
        return not self.imatrix and (self.qtype == "F16" or (self.pure and self.gguf_type.python))

    def label(self) -> str:
        extra = (" pure" if self.pure else "") + (" imatrix" if self.imatrix else "")
        cal = calibration_label(self.calib_corpus, self.calib_samples, self.calib_len) if self.imatrix else ""
        base = "" if self.export == "F32" else f" from {self.export}"
        return f"GGUF {self.qtype}{extra}{cal}{base}"
