"""Memory footprint of every weight format, so charts can put quality against size.

`bits_per_weight` counts everything a real file of that format stores per quantized weight: the codes plus their
scales, zero points, code-book absmax values and permutation indices, as each library lays them out. Tensors a
scheme leaves alone (embeddings, norms, biases, a tied or excluded lm_head) are counted at 16 bits, the precision
every deployed checkpoint keeps them in, so a model's `weight_bytes` does not depend on whether it was measured
in fp32 on a CPU or in bf16 on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

SCALE_BITS = 16  # GPTQ/AWQ/RTN files store scales (and float zero points) as fp16
UNQUANTIZED_BITS = 16
BNB_ABSMAX_BITS = 32  # bitsandbytes keeps row/block absmax values in fp32
BNB_NESTED_BLOCK = 256  # double quantization: absmax values quantized to 8 bits in blocks of 256
INDEX_BITS = 32  # GPTQ act-order stores a group index (int32) per input column


def uniform_bits_per_weight(
    bits: int,
    in_features: int,
    out_features: int,
    *,
    granularity: str,
    group_size: int = 128,
    asym: bool = False,
) -> float:
    """Uniform integer grid: `bits` per code plus one fp16 scale (and a `bits`-wide zero point when asymmetric)
    per group. `granularity` is "tensor" (one group), "channel" (one per output row) or "group" (per output row
    and `group_size` inputs; a shorter last group counts as one)."""
    if granularity == "tensor":
        groups = 1
    elif granularity == "channel":
        groups = out_features
    elif granularity == "group":
        groups = out_features * -(-in_features // group_size)
    else:
        raise ValueError(f"unknown granularity {granularity!r}")
    per_group = SCALE_BITS + (bits if asym else 0)
    return bits + groups * per_group / (in_features * out_features)


def grouped_bits_per_weight(
    bits: int, in_features: int, out_features: int, group_size: int, *, asym: bool, act_order: bool = False
) -> float:
    """GPTQ/AWQ/act-quant convention: `group_size` -1 means one scale per output channel. With act-order the
    groups follow the permuted columns, so the file also stores a group index per input column."""
    gran = "channel" if group_size == -1 else "group"
    base = uniform_bits_per_weight(
        bits, in_features, out_features, granularity=gran, group_size=group_size, asym=asym
    )
    return base + (INDEX_BITS * in_features / (in_features * out_features) if act_order else 0.0)


def bnb_int8_bits_per_weight(in_features: int) -> float:
    """LLM.int8(): int8 codes and one fp32 absmax per output row."""
    return 8 + BNB_ABSMAX_BITS / in_features


def bnb_4bit_bits_per_weight(blocksize: int, double_quant: bool) -> float:
    """NF4/FP4: 4-bit codes and one absmax per block of `blocksize` weights; with double quantization the absmax is
    8-bit, plus one fp32 absmax per 256 blocks (the per-tensor offset is negligible and left out)."""
    if double_quant:
        return 4 + 8 / blocksize + BNB_ABSMAX_BITS / (blocksize * BNB_NESTED_BLOCK)
    return 4 + BNB_ABSMAX_BITS / blocksize


@dataclass
class Footprint:
    """Tally of quantized weights: parameter name -> (number of weights, their mean bits per weight).

    A parameter may be tallied in parts (one entry per expert of a fused [E, out, in] experts parameter, each
    with its own shape and so its own scale overhead); its weights not tallied count at 16 bits."""

    entries: dict[str, tuple[int, float]] = field(default_factory=dict)

    def add_param(self, param_name: str, numel: int, bits_per_weight: float) -> None:
        n0, b0 = self.entries.get(param_name, (0, 0.0))
        total = n0 + numel
        self.entries[param_name] = (total, (n0 * b0 + numel * bits_per_weight) / total if total else 0.0)

    def add(self, module_name: str, numel: int, bits_per_weight: float) -> None:
        """Tally a Linear / Conv1D weight by its module's name."""
        self.add_param(f"{module_name}.weight" if module_name else "weight", numel, bits_per_weight)

    def add_target(self, target, bits_per_weight: float) -> None:
        """Tally one `modify.targets.WeightTarget` (a Linear weight or one expert matrix)."""
        self.add_param(target.param_name, target.numel, bits_per_weight)

    @property
    def quantized_weights(self) -> int:
        return sum(n for n, _ in self.entries.values())

    @property
    def bits_per_weight(self) -> float:
        """Mean bits per quantized weight, weighted by matrix size."""
        total = self.quantized_weights
        return sum(n * b for n, b in self.entries.values()) / total if total else 0.0

    def weight_bytes(self, model: nn.Module) -> float:
        """Bytes of all weights of `model`: tallied weights at their format's cost, every other weight at 16
        bits. Tied parameters count once. Call it while the tallied modules still hold their original shapes
        (before a library swaps in packed parameters)."""
        total_bits = 0.0
        for name, p in model.named_parameters():  # remove_duplicate=True: a tied embedding counts once
            n, bits = self.entries.get(name, (0, UNQUANTIZED_BITS))
            total_bits += n * bits + (p.numel() - n) * UNQUANTIZED_BITS
        return total_bits / 8

    def report(self, model: nn.Module) -> dict[str, float]:
        """The footprint metrics every quantization handler records in `state.report`."""
        return {
            "quantized_weights": float(self.quantized_weights),
            "bits_per_weight": self.bits_per_weight,
            "weight_bytes": self.weight_bytes(model),
        }


def model_weight_bytes(model: nn.Module) -> float:
    """Bytes of an unmodified model's weights at 16 bits: the reference a footprint is compared with."""
    return Footprint().weight_bytes(model)
