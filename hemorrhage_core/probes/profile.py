"""Profile a modified model against the base reference: every metric from one decoder pass per batch.

Per batch the modified model runs once (sdpa kernel, see kernels.py); hooks collect the residual stream after
every block, the final hidden states are unembedded in position chunks, and all prediction metrics come from one
summary of each chunk's logits (`metrics.summarize_logits`: a top-k and one log-sum-exp, shared); the KL is the
exact full-vocabulary KL (exact_kl.py: from the summary, the reference's tail moments and the final hidden
states, or from the base logits recomputed when the head or the logit transform is not linear). The
residual streams give the per-layer errors, the cascade ratio e(l)/e(l-1) and the logit lens (a fixed subset of
positions read through the base model's final norm and unembedding; no extra pass). The attention probe set is
the prefix of the first windows: its maps are computed during the same pass (kernels.capture_prefix; maps are
T x T, so only short prefixes are read) and skipped when the modified model is the base model itself
(decoding-only chains), as are the residual comparisons and the logit lens: the states are the reference's, so
their errors are exactly zero and are filled in without being recomputed (`SHARED_BASE_NOTE`). Memory stays flat
in the corpus size: per batch, only O(positions) scalars are kept.

While it runs, `partial` hears running estimates of the headline numbers with confidence intervals after every
batch (partial.py), and `preview` gives the first ones from one window before the profile starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..errors import Cancelled
from ..memory import release_freed_memory
from ..modify.base import ModifiedModel
from . import partial as partial_mod
from .decoding import PredictionStats
from .exact_kl import ExactKL
from .lens import lens_kl, lens_rows, predicting_rows
from .metrics import (
    LayerAccumulator,
    histogram,
    quantile_summary,
    summarize_logits,
)
from .partial import PartialMetrics, position_blocks
from .reference import (
    BaseReference,
    ProbeMaps,
    batch_block_reporter,
    batch_fraction,
    batch_slices,
    corpus_pass,
    position_logits,
)
from .selfcheck import NO_LENS

if TYPE_CHECKING:
    from transformers import PreTrainedModel

Progress = Callable[[float, str], None]
PartialListener = Callable[[PartialMetrics], None]

__all__ = ["Cancelled", "Profile", "preview", "profile_model"]  # Cancelled: where the pages import it from

SHARED_BASE_NOTE = (
    "This chain changes no weight: the per-layer residual-stream errors, the logit lens and the attention maps are "
    "exactly the original's (zero difference) and were filled in without being recomputed; only the next-token "
    "distributions were measured."
)


@dataclass
class Profile:
    """Everything measured for one run. Frames are tidy: one row per (layer[, head], metric)."""

    metrics: dict[str, float]
    layers: pd.DataFrame  # columns: layer, metric, value
    heads: pd.DataFrame  # columns: layer, head, metric, value
    kl_hist: pd.DataFrame  # columns: bin_lo, bin_hi, count
    report: dict[str, float] = field(default_factory=dict)

    def layer_table(self) -> pd.DataFrame:
        """Wide per-layer table: one row per layer, one column per metric."""
        if self.layers.empty:
            return pd.DataFrame(columns=["layer"])
        return (
            self.layers.pivot(index="layer", columns="metric", values="value")
            .reset_index()
            .rename_axis(None, axis=1)
        )


def profile_model(
    mod: ModifiedModel,
    reference: BaseReference,
    windows: torch.Tensor,
    *,
    batch_size: int,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
    base_model: PreTrainedModel | None = None,
    partial: PartialListener | None = None,
) -> Profile:
    """Every metric of `mod` against `reference` on `windows` [n, T] and the attention probe set (the reference's
    probe prefix of the first windows, see `reference.attention_probe_shape`).

    `base_model` (read-only) supplies the final norm and unembedding of the logit lens, so the lens compares
    residual streams only; without it the modified model's own are used (the same unless lm_head was modified).

    `progress` hears every block of every batch's pass (one batch is the whole default budget) and `cancelled`
    is checked there too; `partial` hears the running headline estimates after every batch, the last one
    (`final=True`) equal to the returned metrics.
    """
    model = mod.model
    lens_model = base_model if base_model is not None else model
    # The self-check switches the lens off for a model whose final norm it could not locate exactly.
    use_lens = not lens_model.__dict__.get(NO_LENS)
    device = next(model.parameters()).device
    store_dtype = getattr(torch, reference.meta["hidden_dtype"].replace("torch.", ""))
    num_layers = len(mod.layer_map)
    acc = LayerAccumulator(num_layers)
    # Logit lens: summed exact KL per layer over a fixed subset of positions of every batch.
    lens_sum = torch.zeros(num_layers, dtype=torch.float64)
    lens_count = 0
    kl_parts, base_t, mod_t, agree, top5 = [], [], [], [], []
    decoding = PredictionStats()  # support cut by samplers, reverse KL, ECE
    exact = ExactKL(mod, reference.meta, base_model)  # how the per-position KL is made exact (exact_kl.py)

    # A decoding-only chain works on the base model itself (no copy): its maps and states are the reference's.
    shares_base = base_model is not None and mod.model is base_model
    probe_maps = ProbeMaps(windows, *reference.meta["probe"])
    slices = batch_slices(windows.shape[0], batch_size)
    width = windows.shape[1] - 1  # predicted positions per window
    blocks: list[torch.Tensor] = []  # bootstrap block of every position (partial.py), only with `partial`

    def report(fraction: float, message: str) -> None:
        if cancelled and cancelled():
            raise Cancelled("profile cancelled")
        if progress:
            progress(fraction, message)

    for i, sl in enumerate(slices):
        report(batch_fraction(i, len(slices), 0.0), f"profiling batch {i + 1}/{len(slices)}")
        ref = reference.batch(i)
        ids = windows[sl].to(device)
        # The reference was built by the same pass (sdpa, attention probes captured from the first windows).
        final, resid, maps = corpus_pass(
            model,
            ids,
            0 if shares_base else probe_maps.rows_in(sl),
            probe_maps.length,
            batch_block_reporter(report, i, len(slices), "profiling") if progress or cancelled else None,
        )
        probe_maps.add(maps)
        targets = ids[:, 1:].reshape(-1)
        flat = final[:, :-1].reshape(-1, final.shape[-1])  # the rows `position_logits` unembeds
        context = ids if mod.needs_context else None  # a repetition penalty reads the preceding tokens
        for rows, logits in position_logits(model, final, mod.transform_logits, context_ids=context):
            s, base_top, base_tail, kl = _compare_chunk(
                mod, exact, ref, rows, logits, flat[rows], targets, device
            )
            decoding.add(base_top, base_tail, s, targets[rows])
            kl_parts.append(kl.cpu())
            mod_t.append(s.target_lp.cpu())
            agree.append((s.best_ids[:, 0] == s.top_ids[:, 0]).cpu())
            base_top5 = s.top_ids[:, : s.best_ids.shape[1]]
            top5.append((base_top5[:, :, None] == s.best_ids[:, None, :]).any(-1).float().mean(-1).cpu())
        # clone: a tensor loaded by safetensors keeps the whole batch file's buffer alive (the 140 MB of
        # hidden states too), which made memory grow with every batch.
        base_t.append(ref["target_lp"].clone())
        ref_hidden = ref["hidden"]
        lens_idx = lens_rows(targets.numel()) if use_lens else torch.zeros(0, dtype=torch.long)
        lens_count += len(lens_idx)
        lens_layers, lens_ref, lens_mod = [], [], []
        for layer, j in enumerate(mod.layer_map):
            if shares_base:
                # The same weights on the same tokens: the states are the reference's (the lens KL is 0).
                acc.add_identical(layer, ref_hidden[layer])
            elif j is not None:
                # Both sides in the storage dtype, so an unmodified layer differs by exactly 0.
                mod_hidden = resid[j].to(store_dtype)
                acc.add(layer, ref_hidden[layer], mod_hidden.cpu())
                rows_ref = predicting_rows(ref_hidden[layer], lens_idx)
                rows_mod = predicting_rows(mod_hidden, lens_idx)
                # Identical inputs give a lens KL of exactly 0, so nothing is unembedded for layers before the
                # first modified one, or for any layer of a decoding-only chain.
                if not use_lens or torch.equal(rows_ref, rows_mod.cpu()):
                    continue
                lens_layers.append(layer)
                lens_ref.append(rows_ref)
                lens_mod.append(rows_mod)
        if lens_layers:
            # The lens reads hidden states this pass already captured (no extra forward pass): [layers * rows, d].
            kl_rows = lens_kl(lens_model, torch.cat(lens_ref).to(device), torch.cat(lens_mod))
            per_layer = kl_rows.view(len(lens_layers), -1).sum(-1).cpu()
            lens_sum[lens_layers] += per_layer
        release_freed_memory()  # this batch's tensors are gone: keep the process from growing (memory.py)
        report(batch_fraction(i, len(slices), 1.0), f"profiling batch {i + 1}/{len(slices)}")
        if partial:
            blocks.append(position_blocks(sl.start, sl.stop - sl.start, width))
            if i + 1 < len(slices):  # the last batch's estimate is the final one, given below
                partial(
                    partial_mod.estimate(
                        torch.cat(kl_parts),
                        torch.cat(base_t),
                        torch.cat(mod_t),
                        torch.cat(agree),
                        torch.cat(blocks),
                        windows=sl.stop,
                        total_windows=windows.shape[0],
                        source="profile",
                    )
                )

    if cancelled and cancelled():
        raise Cancelled("profile cancelled")
    kl = torch.cat(kl_parts).double()
    base_lp, mod_lp = torch.cat(base_t).double(), torch.cat(mod_t).double()
    dp = mod_lp.exp() - base_lp.exp()
    ppl_base, ppl = math.exp(-float(base_lp.mean())), math.exp(-float(mod_lp.mean()))
    metrics = {
        "ppl_base": ppl_base,
        "ppl": ppl,
        "ppl_ratio": ppl / ppl_base,
        **quantile_summary(kl, "kl"),
        "top1_agreement": float(torch.cat(agree).double().mean()),
        "top5_overlap": float(torch.cat(top5).double().mean()),
        "dp_mean": float(dp.mean()),
        "dp_rms": float(dp.pow(2).mean().sqrt()),
        "evaluated_tokens": float(kl.numel()),
        "kl_exact": float(
            exact.exact
        ),  # 1: full-vocabulary KL; 0: the top-K + tail lower bound (exact_kl.py)
        **decoding.results(),
    }

    hidden_results = acc.results()
    layer_rows = [
        (layer, name, value) for name, values in hidden_results.items() for layer, value in enumerate(values)
    ]
    present = [j is not None for j in mod.layer_map]
    layer_rows += [
        (layer, "lens_kl", float(lens_sum[layer]) / max(lens_count, 1))
        for layer in range(num_layers)
        if present[layer] and use_lens
    ]
    cascade = cascade_ratios(hidden_results["hidden_rel_error"])
    layer_rows += [(layer, "cascade_ratio", ratio) for layer, ratio in cascade.items()]
    metrics["lens_positions"] = float(lens_count)
    if cascade:
        # Geometric mean of e(l+1)/e(l): above 1, error is amplified with depth on average.
        metrics["cascade_growth"] = math.exp(sum(math.log(r) for r in cascade.values()) / len(cascade))
    base_maps = reference.attention()  # per block: [n, H, t, t] or None (no attention in that block)
    modified_maps = list(base_maps) if shares_base else probe_maps.result(model)
    head_rows, attn_layer_rows = _attention_rows(mod, base_maps, modified_maps)
    layers = pd.DataFrame(layer_rows + attn_layer_rows, columns=["layer", "metric", "value"])
    heads = pd.DataFrame(head_rows, columns=["layer", "head", "metric", "value"])
    if not heads.empty:
        metrics["attn_js_mean"] = float(heads.loc[heads.metric == "attn_js", "value"].mean())
    hidden = layers[layers.metric == "hidden_rel_error"]
    if not hidden.empty:
        metrics["last_layer_rel_error"] = float(hidden.sort_values("layer")["value"].iloc[-1])
    kl_hist = pd.DataFrame(histogram(kl), columns=["bin_lo", "bin_hi", "count"])
    if partial:
        # The same tensors as the metrics above: the final estimate is the stored number, bit for bit.
        partial(
            partial_mod.estimate(
                kl,
                base_lp,
                mod_lp,
                torch.cat(agree),
                torch.cat(blocks),
                windows=windows.shape[0],
                total_windows=windows.shape[0],
                source="profile",
                final=True,
            )
        )
    return Profile(metrics=metrics, layers=layers, heads=heads, kl_hist=kl_hist, report=dict(mod.report))


def _compare_chunk(
    mod: ModifiedModel,
    exact: ExactKL,
    ref: dict,
    rows: slice,
    logits: torch.Tensor,
    hidden: torch.Tensor,
    targets,
    device,
):
    """(summary, base top-k log-probs, base tail, KL per position) of one chunk of the modified model's logits
    [R, V] (from its final hidden states `hidden` [R, d]) against the reference rows `rows` of its batch."""
    # One summary per chunk (a top-k and one log-sum-exp, metrics.summarize_logits) serves every metric: on CPU
    # these passes over R x V floats cost as much as the unembedding itself.
    base_top, base_tail = ref["top_lp"][rows].to(device), ref["tail_lp"][rows].to(device)
    cross = exact.cross(ref, rows, logits, hidden)  # before the summary overwrites the logits
    # Only a logit transform (a truncating sampler) can make a finite logit -inf.
    s = summarize_logits(
        logits,
        targets[rows],
        top_ids=ref["top_ids"][rows].to(device),
        check_infinite=bool(mod.logit_transforms),
    )
    kl = exact.kl(cross, ref, rows, s, base_top, base_tail)
    # A truncating sampler gives probability 0 to tokens the base can emit: KL(base || mod) is infinite there by
    # definition (kl_topk would give inf, or NaN through 0 * inf).
    kl = torch.where(s.infinite, torch.full_like(kl, math.inf), kl)
    return s, base_top, base_tail, kl


# Predicted positions of the first estimate: the first PREVIEW_POSITIONS of window 0 (8 bootstrap blocks of 32). A
# causal model's logits at these positions do not depend on the rest of the window, so they are the reference's
# own first positions; half the default window halves the forward pass between a slider change and the first
# numbers (bench/dashboard_loop.py). Read at call time, so the bench can time the full window beside it.
PREVIEW_POSITIONS = 256


def preview(
    mod: ModifiedModel,
    reference: BaseReference,
    windows: torch.Tensor,
    *,
    positions: int | None = None,
    progress: Progress | None = None,
    base_model: PreTrainedModel | None = None,
) -> PartialMetrics:
    """First estimates of the headline numbers from the first `positions` predicted positions of the first
    evaluation window (default PREVIEW_POSITIONS; at most the whole window), before the profile: one pass over a
    sixteenth of the default budget. Only the final position distributions are compared (no residual streams,
    lens or attention), and nothing of it is stored: the profile measures every window again in its own batches,
    so the stored numbers do not depend on it."""
    model = mod.model
    device = next(model.parameters()).device
    ref = reference.first_predictions()
    n = min(positions or PREVIEW_POSITIONS, windows.shape[1] - 1, ref["target_lp"].shape[0])
    ids = windows[:1, : n + 1].to(
        device
    )  # a prefix of window 0: its positions are the reference's rows 0..n-1
    on_block = (
        (lambda done, total: progress(done / total, f"first estimate: block {done}/{total}"))
        if progress
        else None
    )
    final, _resid, _ = corpus_pass(model, ids, 0, 0, on_block)
    del _resid
    targets = ids[:, 1:].reshape(-1)
    flat = final[:, :-1].reshape(-1, final.shape[-1])
    context = ids if mod.needs_context else None
    exact = ExactKL(mod, reference.meta, base_model)
    kl_parts, mod_t, agree = [], [], []
    for rows, logits in position_logits(model, final, mod.transform_logits, context_ids=context):
        s, _, _, kl = _compare_chunk(mod, exact, ref, rows, logits, flat[rows], targets, device)
        kl_parts.append(kl.cpu())
        mod_t.append(s.target_lp.cpu())
        agree.append((s.best_ids[:, 0] == s.top_ids[:, 0]).cpu())
    return partial_mod.estimate(
        torch.cat(kl_parts),
        ref["target_lp"][:n].clone(),
        torch.cat(mod_t),
        torch.cat(agree),
        position_blocks(0, 1, n),
        windows=1,
        total_windows=windows.shape[0],
        source="preview",
    )


def cascade_ratios(rel_errors: list[float]) -> dict[int, float]:
    """The cascade ratio e(l) / e(l-1) of consecutive relative errors, keyed by l (l >= 1).

    Only where both errors are finite and positive: before the first modified layer the error is exactly 0 and
    the ratio is undefined; a removed layer (NaN) has no ratio with its neighbours.
    """
    out = {}
    for layer in range(1, len(rel_errors)):
        prev, cur = rel_errors[layer - 1], rel_errors[layer]
        if math.isfinite(prev) and math.isfinite(cur) and prev > 0 and cur > 0:
            out[layer] = cur / prev
    return out


ATTN_TOPK = 4  # attended positions compared per query by `attn_topk_overlap`


def topk_overlap(p: torch.Tensor, q: torch.Tensor, k: int = ATTN_TOPK) -> torch.Tensor:
    """Share of the k most attended keys that two attention maps [..., T, T] have in common, per query [..., T].

    Queries with fewer than k + 1 visible keys (t < k under a causal mask) would compare masked zeros, so they
    are NaN; average with nanmean.
    """
    k = min(k, p.shape[-1] - 1)
    top_p = p.topk(k, dim=-1).indices
    top_q = q.topk(k, dim=-1).indices
    share = (top_p[..., :, None] == top_q[..., None, :]).any(-1).float().mean(-1)
    visible = torch.arange(p.shape[-2], device=p.device) >= k
    return torch.where(visible, share, torch.full_like(share, math.nan))


def _attention_rows(mod: ModifiedModel, base: list, modified: list):
    """Per (layer, head): JS divergence, entropy shift, attention-sink mass and top-k attended-position overlap
    between the base probe maps `base` and the modified model's, one [n, H', t, t] per block (None: a block
    without attention, which has no rows)."""
    head_rows, layer_rows = [], []
    for layer, j in enumerate(mod.layer_map):
        if j is None or base[layer] is None or modified[j] is None:
            continue
        p, q = base[layer], modified[j].cpu()
        heads = mod.head_map.get(layer, list(range(p.shape[1])))  # original index of each modified head
        p = p[:, heads]  # pruned heads: compare each surviving head with the head it was
        if p.shape != q.shape:  # a structural change altered the head count: heads no longer correspond
            continue
        # p log p and q log q serve both the entropies and the JS divergence (js_divergence's formula, summed
        # elementwise so small divergences do not cancel); identical maps give exactly 0.
        pp, qq = torch.xlogy(p, p), torch.xlogy(q, q)
        m = 0.5 * (p + q)
        js_rows = 0.5 * (pp - torch.xlogy(p, m)).sum(-1) + 0.5 * (qq - torch.xlogy(q, m)).sum(-1)  # [n, H, T]
        js = js_rows.mean(dim=(0, 2))  # [H]: mean over probes and queries
        dh = (pp.sum(-1) - qq.sum(-1)).mean(dim=(0, 2))  # H(q) - H(p)
        # Sink mass: attention on the first token, over queries >= 1 (query 0 can only attend to itself).
        sink_p, sink_q = p[:, :, 1:, 0].mean(dim=(0, 2)), q[:, :, 1:, 0].mean(dim=(0, 2))
        overlap = topk_overlap(p, q).transpose(1, 2).reshape(-1, p.shape[1]).nanmean(0)  # [H]
        for h in range(js.shape[0]):
            head_rows += [
                (layer, heads[h], "attn_js", float(js[h])),
                (layer, heads[h], "attn_entropy_shift", float(dh[h])),
                (layer, heads[h], "attn_sink_base", float(sink_p[h])),
                (layer, heads[h], "attn_sink", float(sink_q[h])),
                (layer, heads[h], "attn_topk_overlap", float(overlap[h])),
            ]
        layer_rows += [
            (layer, "attn_js_mean", float(js.mean())),
            (layer, "attn_entropy_shift", float(dh.mean())),
            (layer, "attn_topk_overlap", float(overlap.mean())),
        ]
    return head_rows, layer_rows
