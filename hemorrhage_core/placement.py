"""Where a model's weights go when one device cannot hold them (`--device-map auto`), decided before loading.

`plan_placement` fills the GPUs in order, each up to a share of its free memory, then the CPU (weights there are
offloaded: accelerate moves each block to the GPU for its forward, which is slow but runs). The plan becomes
accelerate's `max_memory`, so what is loaded is what the plan said; a model that does not fit in all of them
together is refused before a byte is read, with the numbers. Pure arithmetic on byte counts; the free memory
comes from `free_memory()`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from .errors import ModelError

GiB = 2**30


@dataclass(frozen=True)
class Placement:
    """The planned bytes of weights per device ("cuda:0", ..., "cpu"), in filling order."""

    need: int
    shares: dict[str, int]
    budgets: dict[str, int]  # what each device may take (a share of its free memory)

    @property
    def offloaded(self) -> int:
        return self.shares.get("cpu", 0) if any(d != "cpu" for d in self.shares) else 0

    def max_memory(self) -> dict[int | str, int]:
        """accelerate's `max_memory`: each device's budget (GPUs by index)."""
        return {(int(d.split(":")[1]) if d.startswith("cuda:") else d): b for d, b in self.budgets.items()}

    def describe(self) -> str:
        parts = ", ".join(f"{b / GiB:.2f} GiB on {d}" for d, b in self.shares.items() if b)
        text = f"weights {self.need / GiB:.2f} GiB: {parts}"
        if self.offloaded:
            text += " (offloaded to CPU: each block is moved to the GPU for its forward, slowly)"
        return text


def plan_placement(need: int, free: dict[str, int], *, fraction: float = 0.8) -> Placement:
    """Fill the devices of `free` (bytes free per device, GPUs first, "cpu" last) in order, each up to
    `fraction` of its free memory. ModelError when `need` exceeds all budgets together."""
    budgets = {d: int(fraction * f) for d, f in free.items()}
    shares, left = {}, need
    for device, budget in budgets.items():
        take = min(left, budget)
        shares[device] = take
        left -= take
    if left > 0:
        have = ", ".join(f"{d} {b / GiB:.2f} GiB" for d, b in budgets.items())
        raise ModelError(
            f"the weights need about {need / GiB:.2f} GiB but all devices together may take {sum(budgets.values()) / GiB:.2f} "
            f"GiB ({have}; {fraction:.0%} of each one's free memory). Use a half-precision --dtype, more GPUs, or a "
            "smaller model."
        )
    return Placement(need, {d: b for d, b in shares.items() if b}, budgets)


def free_memory() -> dict[str, int]:
    """Free bytes per device: every visible GPU in index order, then the CPU's available memory."""
    free = {f"cuda:{i}": torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())}
    free["cpu"] = psutil.virtual_memory().available
    return free
