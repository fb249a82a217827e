"""Quantization catalogue beyond round-to-nearest (which lives in spec.py): GPTQ, bitsandbytes LLM.int8() and
NF4/FP4, weight+activation quantization (W8A8, W4A8), and the scale-migration remedies SmoothQuant and AWQ.
No torch here.

Calibrated methods share `calib_corpus` / `calib_samples` / `calib_len`: the handler asks
`ModContext.calibration_windows(corpus, n, length)` for `n` sequences of `length` tokens taken from the *end* of
the corpus, so calibrating on the evaluation corpus never calibrates on evaluation tokens.

Composition is by order in the run spec: `smoothquant` migrates activation outliers into the weights and must
come before the `act_quant` (or `quant_rtn`) it prepares; `act_quant` quantizes its own weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import SpecError
from ..spec import ModelFacts, Modification, check_group_size, modification, scope_label

BNB_4BIT_BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise SpecError(message)


def _check_bits(bits: int, what: str = "weight bits") -> None:
    _check(
        isinstance(bits, int) and 2 <= bits <= 8, f"{what} must be an integer between 2 and 8, got {bits!r}"
    )


def _check_group(group_size: int) -> None:
    _check(
        isinstance(group_size, int) and (group_size == -1 or group_size >= 2),
        f"group_size must be -1 (one scale per output channel) or at least 2, got {group_size!r}",
    )


class GroupChecked:
    """Mixin: the kind's group size (the field `group_field`; -1 = per channel) is checked against the model's
    layer widths before any work (`Modification.check_model`)."""

    group_field: ClassVar[str] = "group_size"

    def check_model(self, facts: ModelFacts) -> None:
        super().check_model(facts)  # type: ignore[misc]
        size = getattr(self, self.group_field)
        if size != -1:
            check_group_size(self.kind, size, facts)  # type: ignore[attr-defined]


def _group_label(group_size: int) -> str:
    return "channel" if group_size == -1 else f"g{group_size}"


@dataclass(frozen=True)
class Calibrated(Modification):
    """Base of every modification that reads calibration text (fields shared so every method spells them alike)."""

    calib_corpus: str = "news"  # built-in corpus name or a text file; sequences come from its end
    calib_samples: int = 32  # number of calibration sequences
    calib_len: int = 512  # tokens per sequence

    def __post_init__(self):
        _check(bool(self.calib_corpus), "calib_corpus must name a corpus (news, wiki, bible) or a text file")
        _check(self.calib_samples >= 1, f"calib_samples must be at least 1, got {self.calib_samples}")
        _check(self.calib_len >= 8, f"calib_len must be at least 8 tokens, got {self.calib_len}")


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
        _check_bits(self.bits)
        _check_group(self.group_size)
        _check(self.scheme in ("sym", "asym"), f"GPTQ scheme must be 'sym' or 'asym', got {self.scheme!r}")
        _check(0.0 < self.damp <= 1.0, f"GPTQ damp must be in (0, 1], got {self.damp}")
        _check(self.block_size >= 1, f"GPTQ block_size must be at least 1, got {self.block_size}")

    def label(self) -> str:
        act = " act" if self.act_order else ""
        return f"GPTQ w{self.bits} {self.scheme} {_group_label(self.group_size)}{act}{scope_label(self)}"


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
        _check(
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
        _check(
            self.quant_type in ("nf4", "fp4"),
            f"4-bit quant_type must be 'nf4' or 'fp4', got {self.quant_type!r}",
        )
        _check(
            self.blocksize in BNB_4BIT_BLOCKSIZES,
            f"4-bit blocksize must be one of {', '.join(map(str, BNB_4BIT_BLOCKSIZES))}, got {self.blocksize}",
        )
        _check(
            self.compute_dtype in COMPUTE_DTYPES,
            f"compute_dtype must be one of {', '.join(COMPUTE_DTYPES)}, got {self.compute_dtype!r}",
        )

    def label(self) -> str:
        dq = " dq" if self.double_quant else ""
        return f"bnb {self.quant_type.upper()} b{self.blocksize}{dq}{scope_label(self)}"


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
        _check_bits(self.w_bits, "w_bits")
        _check_bits(self.a_bits, "a_bits")
        _check_group(self.w_group_size)
        _check(
            self.a_mode in ("static", "dynamic"), f"a_mode must be 'static' or 'dynamic', got {self.a_mode!r}"
        )
        _check(
            self.a_static_stat in ("max", "percentile"),
            f"a_static_stat must be 'max' or 'percentile', got {self.a_static_stat!r}",
        )
        _check(
            50.0 <= self.a_percentile < 100.0, f"a_percentile must be in [50, 100), got {self.a_percentile}"
        )
        _check(
            self.outlier_threshold >= 0.0,
            f"outlier_threshold must be >= 0 (0: off), got {self.outlier_threshold}",
        )

    def label(self) -> str:
        mode = "dynamic/token" if self.a_mode == "dynamic" else f"static/tensor {self.a_static_stat}"
        outliers = f" +outliers>{self.outlier_threshold:g}" if self.outlier_threshold else ""
        group = "" if self.w_group_size == -1 else f" g{self.w_group_size}"
        return f"W{self.w_bits}A{self.a_bits}{group} {mode}{outliers}{scope_label(self)}"


@modification("smoothquant")
@dataclass(frozen=True)
class SmoothQuant(Calibrated):
    """SmoothQuant scale migration s_j = max|X_j|^α / max|W_j|^(1−α): exact in float, eases activation quantization."""

    family: ClassVar[str] = "mitigation"

    alpha: float = (
        0.5  # migration strength: 0 leaves activations alone, 1 moves all of their range into weights
    )
    calib_samples: int = 16

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be smoothed (coverage reported)

    def __post_init__(self):
        super().__post_init__()
        _check(0.0 <= self.alpha <= 1.0, f"SmoothQuant alpha must be in [0, 1], got {self.alpha}")

    def label(self) -> str:
        return f"SmoothQuant α={self.alpha:g}{scope_label(self)}"


@modification("awq")
@dataclass(frozen=True)
class AWQ(GroupChecked, Calibrated):
    """AWQ-style weight-only quantization: per-channel scales s = mean|X|^α, α searched per layer, then RTN."""

    family: ClassVar[str] = "mitigation"

    bits: int = 4
    group_size: int = 128  # -1: one scale per output channel
    scheme: str = "asym"  # AWQ's usual zero-point grid
    grid: int = 20  # α in {0, 1/grid, ..., (grid-1)/grid}
    calib_samples: int = 16

    include_router: bool = False  # MoE routers too (excluded by default)
    partial: bool = False  # run even if some block weight matrices cannot be quantized (coverage reported)

    def __post_init__(self):
        super().__post_init__()
        _check_bits(self.bits)
        _check_group(self.group_size)
        _check(self.scheme in ("sym", "asym"), f"AWQ scheme must be 'sym' or 'asym', got {self.scheme!r}")
        _check(self.grid >= 1, f"AWQ grid must be at least 1, got {self.grid}")

    def label(self) -> str:
        return f"AWQ w{self.bits} {self.scheme} {_group_label(self.group_size)}{scope_label(self)}"
