"""Decoding changes act on the logits the metrics see, not on weights."""

from __future__ import annotations

from ..spec import Temperature
from .base import ModContext, ModifiedModel, handles


@handles(Temperature)
def apply_temperature(state: ModifiedModel, mod: Temperature, ctx: ModContext) -> None:
    t = mod.value
    state.logit_transforms.append(lambda logits: logits / t)
    state.report["temperature"] = t
