"""The self-check at load: what the profile computes itself must equal what the model computes.

The profile is fast because it does not call the model's forward the way users do: it runs the decoder on the
"hemlab" attention kernel (sdpa for the corpus pass, kernels.py) and unembeds position chunks itself
(capture.unembed, with the output scalings it knows). Either shortcut can be wrong for an architecture that does
something unusual (attention sinks, soft-capped attention, a logit scale written in forward). So once per loaded
model, on a short probe, `self_check`:

1. takes `model(ids).logits` on the model's own attention (the eager code of its modeling file) as the truth;
2. checks the output path: the profile's unembedding of the decoder's output against that truth. If it
   disagrees, it tries the model's own output path (`capture.own_logits`: the model's forward after the decoder);
   if that disagrees too, the model is refused (a number from an unverified path is never stored);
3. checks the kernel: the fast pass's logits against the truth. If they disagree (or the fast kernel fails), the
   model goes back to eager attention, which is its own;
4. checks the logit lens's final path (`structure.apply_final` on the last block's output equals the decoder's
   output); if not, the lens is switched off for this model (no lens numbers rather than wrong ones).

Every fallback is logged. The outcome (`SelfCheck`) is part of the reference key and of every run's metrics.
Tolerances are relative to the largest logit: 1e-4 in float32 (sdpa vs eager differ by ~1e-6 there), 2e-2 in
half precision.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError
from ..structure import apply_final, layout
from .capture import OWN_LOGITS, forward_sites, own_logits, unembed
from .kernels import KERNEL, fast_attention, use_fast_attention

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

PROBE_TOKENS = 48  # the probe's length beyond the longest sliding window, so windowed attention is exercised
PROBE_MAX = 1024
COMPARED = 32  # the last positions compared (their keys span beyond any sliding window)
_WINDOW_ATTRS = ("sliding_window", "attention_window_size", "window_size", "local_window_size")
NO_LENS = "_hemlab_no_lens"  # set on a model whose final path could not be verified


def tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype == torch.float32 else 2e-2


@dataclass(frozen=True)
class SelfCheck:
    """What the check chose and the relative differences it measured (max |delta logit| / max |logit|)."""

    output_path: (
        str  # "fast" (the profile's own unembedding) or "model" (the model's forward after the decoder)
    )
    kernel: str  # "hemlab" (sdpa corpus pass) or "eager" (the model's own attention everywhere)
    lens: bool  # whether the logit lens's final path reproduces the decoder's output
    output_rel_diff: float  # of the chosen output path, on the model's own attention
    kernel_rel_diff: float | None  # of the fast kernel (None: the model was not on it)
    tolerance: float

    def key(self) -> str:
        """What the reference cache key needs: the paths numbers are computed on."""
        return f"{self.output_path}/{self.kernel}/lens={int(self.lens)}"

    def metrics(self) -> dict[str, float]:
        out = {"selfcheck_output_rel_diff": self.output_rel_diff}
        if self.kernel_rel_diff is not None:
            out["selfcheck_kernel_rel_diff"] = self.kernel_rel_diff
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def _probe_ids(model: PreTrainedModel) -> torch.Tensor:
    """[1, T] seeded random token ids, T = the longest sliding window + PROBE_TOKENS (within the positions)."""
    cfg = model.config.get_text_config()
    windows = [w for a in _WINDOW_ATTRS if isinstance(w := getattr(cfg, a, None), int) and w > 0]
    length = PROBE_TOKENS + max(windows, default=0)
    positions = [
        p for a in ("max_position_embeddings", "n_positions") if isinstance(p := getattr(cfg, a, None), int)
    ]
    length = min(length, PROBE_MAX, *positions)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    generator = torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    return torch.randint(0, vocab, (1, length), generator=generator).to(device)


def _set_eager(model: PreTrainedModel) -> None:
    model.set_attn_implementation("eager")


def self_check(model: PreTrainedModel) -> SelfCheck:
    """Check (and where needed switch) how `model` is measured; see the module docstring. Raises ModelError when
    no path reproduces the model's own logits. Mutates only the model's measurement settings (kernel, flags)."""
    layout(model)  # the block list and final path, traced once
    dtype = next(model.parameters()).dtype
    tol = tolerance(dtype)
    ids = _probe_ids(model)
    keep = min(COMPARED, ids.shape[1])
    with torch.inference_mode():
        # The eager branch of any kernel is the model's own attention; only the last positions' logits are kept
        # (a 262k vocabulary times a long probe would be hundreds of MB).
        truth = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits.float()
        final, resid = forward_sites(model, ids)
    flat = final[:, -keep:].reshape(-1, final.shape[-1])
    truth_flat = truth.reshape(-1, truth.shape[-1])

    model.__dict__.pop(OWN_LOGITS, None)
    output_diff = _rel(unembed(model, flat), truth_flat)
    output_path = "fast"
    if output_diff > tol:
        own_diff = _rel(own_logits(model, flat), truth_flat)
        log.warning(
            "%s: the profile's unembedding differs from the model's logits by %.2e (tolerance %.0e); using the "
            "model's own output path (%.2e)",
            type(model).__name__,
            output_diff,
            tol,
            own_diff,
        )
        if own_diff > tol:
            raise ModelError(
                f"{type(model).__name__}: neither the profile's unembedding (relative difference {output_diff:.2e})"
                f" nor the model's own output path ({own_diff:.2e}) reproduces model(ids).logits within {tol:.0e};"
                " this architecture cannot be measured correctly, so it is refused."
            )
        model.__dict__[OWN_LOGITS] = True
        output_path, output_diff = "model", own_diff

    kernel_diff = None
    kernel = getattr(model.config, "_attn_implementation", None)
    if kernel == KERNEL:
        try:
            with torch.inference_mode(), fast_attention():
                fast_final, _ = forward_sites(model, ids)
            kernel_diff = _rel(
                unembed(model, fast_final[:, -keep:].reshape(-1, fast_final.shape[-1])), truth_flat
            )
            reason = f"relative difference {kernel_diff:.2e} > {tol:.0e}"
        except Exception as exc:  # an attention variant the sdpa kernel cannot express (sinks, soft-capping)
            kernel_diff, reason = float("inf"), f"{type(exc).__name__}: {exc}"
        refused = kernel_diff > tol
        if not refused and getattr(type(model), "_supports_sdpa", True) is False:
            refused, reason = (
                True,
                "the model class declares no sdpa support",
            )  # trust it over one short probe
        if refused:
            log.warning(
                "%s: the fast attention kernel does not reproduce the model's attention (%s); using the model's "
                "own eager attention",
                type(model).__name__,
                reason,
            )
            _set_eager(model)
            kernel = "eager"
        else:
            kernel = KERNEL
    else:
        kernel = str(kernel)

    with torch.inference_mode():
        lens_input = apply_final(model, resid[-1])
    lens_ok = bool(
        lens_input.shape == final.shape
        and _rel(lens_input.float(), final.float()) <= tol
        and layout(model).final_path
    ) or (not layout(model).final_path and torch.equal(resid[-1], final))
    if not lens_ok:
        log.warning(
            "%s: the final norm could not be located exactly; the logit lens is off", type(model).__name__
        )
        model.__dict__[NO_LENS] = True
    else:
        model.__dict__.pop(NO_LENS, None)
    result = SelfCheck(output_path, kernel, lens_ok, output_diff, kernel_diff, tol)
    log.info("self-check of %s: %s", type(model).__name__, result)
    return result


def prepare_measurement(model: PreTrainedModel) -> SelfCheck:
    """Give a freshly loaded model (before it is shared) the fast kernel where its class allows it, then check
    everything the profile computes itself against the model's own forward (`self_check`)."""
    if getattr(type(model), "_supports_sdpa", True) is not False:
        use_fast_attention(model)  # sdpa for corpus passes, eager wherever attention weights are read
    return self_check(model)
