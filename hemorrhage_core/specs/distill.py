"""Short KL distillation toward the original (`kl_distill`); handler: modify/distill.py. No torch.

It reads calibration text from the end of `calib_corpus` and goes after the modifications it repairs:
`--mod prune:sparsity=0.5 --mod kl_distill:steps=100`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Modification, check, check_calibration, modification

DISTILL_PARAMS = ("norm", "lora")


@modification("kl_distill")
@dataclass(frozen=True)
class KLDistill(Modification):
    """Short distillation toward the original: minimise KL(original || modified) on calibration text, training
    only norm weights and biases ("norm") or rank-r LoRA adapters merged back into the weights ("lora")."""

    family: ClassVar[str] = "mitigation"

    steps: int = 100
    params: str = "norm"
    lr: float = 1e-3
    lora_rank: int = 4
    batch_size: int = 2
    calib_corpus: str = "news"
    calib_samples: int = 16
    calib_len: int = 256
    seed: int = 0

    def __post_init__(self):
        check(1 <= self.steps <= 100_000, f"kl_distill: steps must be in [1, 100000], got {self.steps}")
        check(
            self.params in DISTILL_PARAMS,
            f"kl_distill: params must be one of {', '.join(DISTILL_PARAMS)}, got {self.params!r}",
        )
        check(0.0 < self.lr <= 1.0, f"kl_distill: learning rate must be in (0, 1], got {self.lr}")
        check(1 <= self.lora_rank <= 256, f"kl_distill: lora_rank must be in [1, 256], got {self.lora_rank}")
        check(self.batch_size >= 1, f"kl_distill: batch_size must be >= 1, got {self.batch_size}")
        check_calibration(self.calib_corpus, self.calib_samples, self.calib_len)

    def label(self) -> str:
        what = f"LoRA r{self.lora_rank}" if self.params == "lora" else "norms"
        return f"KL distill {what} {self.steps} steps"
