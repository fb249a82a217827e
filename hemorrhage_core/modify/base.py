"""The handler registry and the state a chain of modifications builds up.

A handler is `handler(state, mod, ctx) -> None`: it changes `state.model` in place (the runner hands it a deep
copy whenever any modification touches weights), may replace `state.model` (depth changes; another checkpoint,
which comes first and is loaded instead of a copy of the base), extends `state.logit_transforms` (decoding
changes), rewrites `state.layer_map`, and records what it achieved in `state.report` (achieved sparsity, bits per
weight, parameters left, coverage, ...).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..progress import CancelCheck, Progress, check, scaled
from ..specs import Modification, check_chain

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

# fn(logits [rows, V]) -> [rows, V]; a transform marked with `context_transform` is called as
# fn(logits, context) with context = LongTensor [rows, C] of the tokens each row has seen (its own last),
# left-padded with -1 (what a repetition penalty needs).
LogitTransform = Callable[..., torch.Tensor]


def context_transform(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LogitTransform:
    """Mark a logit transform as needing the context token ids of each row (see `LogitTransform`)."""
    fn.needs_context = True  # type: ignore[attr-defined]  # the marker is a function attribute, read by getattr
    return fn


# The attribute of a LogitTransform that is exactly `logits * scale` (a temperature): the profile's exact KL stays
# on its cheap path for such transforms (probes/exact_kl.py); any other transform is treated as non-linear.
LINEAR_SCALE = "logit_scale"


def linear_transform(fn: LogitTransform, scale: float) -> LogitTransform:
    """Mark `fn` as computing `logits * scale` (see `LINEAR_SCALE`)."""
    setattr(fn, LINEAR_SCALE, float(scale))
    return fn


CalibrationSource = Callable[[str, int, int], torch.Tensor]  # (corpus, n, length) -> LongTensor [n, length]


@dataclass
class ModContext:
    """What a handler may need besides the model: the tokenizer and calibration token windows (lazy)."""

    tokenizer: Any = None
    calibration: Callable[[], torch.Tensor] | None = None  # -> LongTensor [n, T]: the evaluation windows
    calibration_source: CalibrationSource | None = None  # the runner's cached `calibration_windows`
    # The unmodified model, read-only (never mutate it): targets for decoding calibration and distillation.
    base_model: PreTrainedModel | None = None
    # The runner's loading policy, for handlers that load another model (a checkpoint): remote code is allowed
    # only when the runner allows it, and with `allowed_dirs` set (the web UI) paths must lie inside them.
    trust_remote_code: bool = False
    allow_pickle: bool = False  # a checkpoint's pickled weights (pytorch_model.bin) may be read
    allowed_dirs: list[Path] | None = None
    # Who listens to the handler's progress (the runner: the dashboard's bar, the CLI's log) and whether the user
    # cancelled; handlers call `progress`, never these.
    on_progress: Progress | None = None
    cancelled: CancelCheck | None = None

    def progress(self, fraction: float, message: str) -> None:
        """Report `fraction` (0..1) of this modification done, e.g. `ctx.progress(12 / 30, "GPTQ block 13/30")`.

        Raises Cancelled when the user cancelled: call it between blocks or layers, where stopping leaves
        nothing half written that anyone will read (the modified copy is thrown away).
        """
        check(self.cancelled, "modification")
        if self.on_progress is not None:
            self.on_progress(fraction, message)

    def calibration_windows(self, corpus: str, n: int, length: int) -> torch.Tensor:
        """`n` calibration sequences of `length` tokens from `corpus` (a built-in name or a text file path).

        LongTensor [n, length] on the CPU. The runner takes them from the end of the corpus, so they never
        overlap the evaluation windows (see modify/evidence.py).
        """
        if self.calibration_source is None:
            raise RuntimeError(
                "this ModContext has no calibration source: run the modification through the Runner"
            )
        return self.calibration_source(corpus, n, length)


@dataclass
class ModifiedModel:
    model: PreTrainedModel
    layer_map: list[int | None]  # original block i -> block index in `model` (None: removed)
    logit_transforms: list[LogitTransform] = field(default_factory=list)
    report: dict[str, float] = field(default_factory=dict)
    # original block i -> the original head index of each head its block still has, for blocks whose heads were
    # pruned (structured pruning): the profile then compares every surviving head with the head it was.
    head_map: dict[int, list[int]] = field(default_factory=dict)
    # Module name -> why a weight-touching modification left its weight matrices alone (the router by default, or
    # what a partial scope skipped); `report["coverage"]` is the share it did modify (see modify/coverage.py).
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def needs_context(self) -> bool:
        """Whether some logit transform reads the preceding tokens (callers then pass `context`)."""
        return any(getattr(fn, "needs_context", False) for fn in self.logit_transforms)

    def transform_logits(self, logits: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """logits [rows, V] -> [rows, V]; `context` [rows, C] (see `LogitTransform`) when `needs_context`."""
        for fn in self.logit_transforms:
            if getattr(fn, "needs_context", False):
                if context is None:
                    raise ValueError("a logit transform of this chain needs each row's context token ids")
                logits = fn(logits, context)
            else:
                logits = fn(logits)
        return logits


Handler = Callable[[ModifiedModel, Modification, ModContext], None]
HANDLERS: dict[type[Modification], Handler] = {}


def handles(mod_type: type[Modification]):
    """Decorator: register `fn` as the handler of one modification dataclass."""

    def register(fn: Handler) -> Handler:
        HANDLERS[mod_type] = fn
        return fn

    return register


def apply_modifications(
    base_model: PreTrainedModel,
    num_layers: int,
    mods: tuple[Modification, ...],
    ctx: ModContext | None = None,
) -> ModifiedModel:
    """Apply `mods` in order to a copy of `base_model` (never to the base itself) and return the result.

    Decoding-only chains share the base weights read-only: copying 0.5-1 GB for a temperature would be waste.
    """
    ctx = ctx or ModContext()
    check_chain(mods)
    # A chain that starts with another checkpoint works on that freshly loaded model: copying the base is waste.
    needs_copy = not (mods and mods[0].replaces_model) and any(m.touches_weights for m in mods)
    if needs_copy:
        ctx.progress(0.0, "copying the base model")
    model = copy.deepcopy(base_model) if needs_copy else base_model
    state = ModifiedModel(model=model, layer_map=list(range(num_layers)))
    for k, mod in enumerate(mods):
        handler = HANDLERS.get(type(mod))
        if handler is None:
            raise TypeError(f"no handler registered for {type(mod).__name__}")
        log.info("applying %s", mod.label())
        # Each modification of the chain reports within its share of the step; the report also checks cancel.
        part = dataclasses.replace(
            ctx, on_progress=scaled(ctx.on_progress, k / len(mods), (k + 1) / len(mods))
        )
        part.progress(0.0, f"applying {mod.label()}" + (f" ({k + 1}/{len(mods)})" if len(mods) > 1 else ""))
        handler(state, mod, part)
    if mods:
        ctx.progress(1.0, "modification done")
    return state
