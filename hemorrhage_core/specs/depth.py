"""Depth changes (architecture): duplicate blocks, insert identity blocks, remove blocks. No torch here.

Block lists are tuples of ints. On the command line a value holds no comma (commas separate options), so lists
are written with `+`: `--mod remove_layers:layers=20+21+22` (`;` and spaces are read too, for old scripts). Indices refer to the model as it is
when the modification runs (after earlier depth changes in the chain); the handler checks them against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import SpecError
from .base import Modification, check, modification, option
from .families import Family, register_family

register_family(
    Family(
        "depth",
        "Depth",
        "layers",
        "#9D755D",
        2,
        True,
        "Change the stack of blocks. Each original layer is compared with the layer it maps to in the changed "
        "model; an identity block (zero output projections) must leave everything unchanged.",
        "pages/depth.py",
    )
)

# How a list of blocks is written in `--mod` (a value holds no comma: commas separate options).
LAYER_LIST_HELP = "block indices joined by + (e.g. 3+7+12)"

_SEPARATORS = re.compile(r"[+;\s]+")


def layer_list(value, what: str) -> tuple[int, ...]:
    """Normalise an int, a '3+7+12' / '3;7' / '3 7' string, or a sequence of ints to a sorted tuple of ints."""
    if isinstance(value, bool):
        raise SpecError(f"{what}: expected block indices, got {value!r}")
    items: list[Any]
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        items = [v for v in _SEPARATORS.split(value.strip()) if v]
    else:
        items = list(value)
    try:
        layers = tuple(sorted({int(v) for v in items}))
    except (TypeError, ValueError):
        raise SpecError(f"{what}: block indices must be integers separated by '+', got {value!r}") from None
    check(all(i >= 0 for i in layers), f"{what}: block indices must be >= 0, got {value!r}")
    return layers


@dataclass(frozen=True)
class DepthChange(Modification):
    family: ClassVar[str] = "depth"
    touches_weights: ClassVar[bool] = True  # the block list changes: the runner hands the handler a copy


@modification("duplicate_layers")
@dataclass(frozen=True)
class DuplicateLayers(DepthChange):
    """Repeat blocks [start, end) `times` more times, the copies inserted right after block end-1."""

    start: int = option(0, ge=0, layers_top=-1, help="first block repeated")
    end: int = option(1, ge=1, layers_top=0, help="one past the last block repeated")
    times: int = option(1, ge=1, le=8, slider=(1, 8, 1), help="extra copies of the range")

    def validate(self) -> None:
        check(
            0 <= self.start < self.end,
            f"duplicate_layers needs 0 <= start < end, got [{self.start}, {self.end})",
        )

    def label(self) -> str:
        times = f" x{self.times + 1}" if self.times > 1 else ""
        return f"duplicate [{self.start},{self.end}){times}"


@modification("depth_upscale")
@dataclass(frozen=True)
class DepthUpscale(DepthChange):
    """SOLAR depth up-scaling: two copies of the model, the last `overlap` blocks cut from the first and the first
    `overlap` blocks cut from the second, concatenated (L blocks -> 2L - 2*overlap; SOLAR: 32 -> 48, overlap 8)."""

    overlap: int = option(8, ge=0, layers_top=-1, help="blocks cut from each copy at the seam")

    def label(self) -> str:
        return f"SOLAR upscale overlap {self.overlap}"


@modification("insert_identity")
@dataclass(frozen=True)
class InsertIdentity(DepthChange):
    """LLaMA-Pro block expansion: after each chosen block insert a copy of it whose output projections (what its
    attention and MLP write to the residual stream, with biases) are zero, so the new block is exactly the identity
    (checked; architectures where it is not, such as post-norm blocks, are refused).

    Choose the blocks with `after` (indices) or `every` (after blocks every-1, 2*every-1, ...; LLaMA-Pro: 32
    blocks, every=4 -> 40 blocks); exactly one of the two.
    """

    after: tuple[int, ...] = option((), help="blocks to copy as identity blocks: " + LAYER_LIST_HELP)
    every: int = option(0, ge=0, help="or an identity block after every this many blocks (0: use after)")

    def validate(self) -> None:
        object.__setattr__(self, "after", layer_list(self.after, "insert_identity.after"))
        check(
            bool(self.after) != bool(self.every),
            "insert_identity needs exactly one of: the blocks to copy (after) or an interval (every)",
        )

    def label(self) -> str:
        if self.every:
            return f"identity every {self.every}"
        return "identity after " + "+".join(map(str, self.after))


@modification("remove_layers")
@dataclass(frozen=True)
class RemoveLayers(DepthChange):
    """Remove the listed blocks (the residual stream skips them)."""

    layers: tuple[int, ...] = option((), help="blocks to remove: " + LAYER_LIST_HELP)

    def validate(self) -> None:
        object.__setattr__(self, "layers", layer_list(self.layers, "remove_layers.layers"))
        check(bool(self.layers), "remove_layers needs at least one block index to remove")

    def label(self) -> str:
        return "remove " + "+".join(map(str, self.layers))
