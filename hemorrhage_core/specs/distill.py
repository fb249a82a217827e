"""Short KL distillation toward the original (`kl_distill`); handler: modify/distill.py. No torch.

It reads calibration text from the end of `calib_corpus` and goes after the modifications it repairs:
`--mod prune:sparsity=0.5 --mod kl_distill:steps=100`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from .base import Modification, calib_corpus_field, calib_len_field, calib_samples_field, modification, option


@modification("kl_distill")
@dataclass(frozen=True)
class KLDistill(Modification):
    """Short distillation toward the original: minimise KL(original || modified) on calibration text, training
    only norm weights and biases ("norm") or rank-r LoRA adapters merged back into the weights ("lora")."""

    family: ClassVar[str] = "mitigation"

    steps: int = option(100, ge=1, le=100_000, help="optimiser steps")
    params: Literal["norm", "lora"] = option(
        "norm", help="norm: norm weights and biases; lora: rank-r adapters merged back"
    )
    lr: float = option(1e-3, gt=0.0, le=1.0, what="learning rate")
    lora_rank: int = option(4, ge=1, le=256, help="with params=lora")
    batch_size: int = option(2, ge=1, help="calibration sequences per step")
    calib_corpus: str = calib_corpus_field()
    calib_samples: int = calib_samples_field(16)
    calib_len: int = calib_len_field(256)
    seed: int = 0

    def label(self) -> str:
        what = f"LoRA r{self.lora_rank}" if self.params == "lora" else "norms"
        return f"KL distill {what} {self.steps} steps"
