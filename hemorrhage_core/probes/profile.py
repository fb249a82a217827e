"""Profile a modified model against the base reference: every metric from one decoder pass per batch.

Per batch the modified model runs once; hooks collect the residual stream after every block, the final hidden
states are unembedded in position chunks, and all prediction metrics come from those log-probs. The attention
probe set is a separate, short pass (attention maps are T x T, so they are read on short sequences only).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from ..modify.base import ModifiedModel
from .capture import attention_patterns, forward_sites
from .decoding import PredictionStats
from .metrics import LayerAccumulator, entropy, histogram, js_divergence, kl_topk, quantile_summary
from .reference import BaseReference, batch_slices, position_logprobs

Progress = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised between batches when the caller's cancel check returns True; nothing is stored."""


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
        return self.layers.pivot(index="layer", columns="metric", values="value").reset_index().rename_axis(None, axis=1)


def profile_model(
    mod: ModifiedModel,
    reference: BaseReference,
    windows: torch.Tensor,
    probe_ids: torch.Tensor,
    *,
    batch_size: int,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Profile:
    model = mod.model
    device = next(model.parameters()).device
    store_dtype = getattr(torch, reference.meta["hidden_dtype"].replace("torch.", ""))
    num_layers = len(mod.layer_map)
    acc = LayerAccumulator(num_layers)
    kl_parts, base_t, mod_t, agree, top5 = [], [], [], [], []
    decoding = PredictionStats()  # support cut by samplers, reverse KL, ECE

    slices = batch_slices(windows.shape[0], batch_size)
    for i, sl in enumerate(slices):
        if cancelled and cancelled():
            raise Cancelled("profile cancelled")
        ref = reference.batch(i)
        ids = windows[sl].to(device)
        final, resid = forward_sites(model, ids)
        targets = ids[:, 1:].reshape(-1)
        context = ids if mod.needs_context else None  # a repetition penalty reads the preceding tokens
        for rows, lp in position_logprobs(model, final, mod.transform_logits, context_ids=context):
            top_ids = ref["top_ids"][rows].to(device)
            kl = kl_topk(ref["top_lp"][rows].to(device), ref["tail_lp"][rows].to(device), top_ids, lp)
            # A truncating sampler gives probability 0 to tokens the base can emit: KL(base || mod) is infinite
            # there by definition (kl_topk would give inf, or NaN through 0 * inf).
            kl = torch.where(torch.isneginf(lp).any(-1), torch.full_like(kl, math.inf), kl)
            decoding.add(
                ref["top_lp"][rows].to(device), ref["tail_lp"][rows].to(device), top_ids, lp, targets[rows]
            )
            kl_parts.append(kl.cpu())
            mod_t.append(lp.gather(1, targets[rows, None]).squeeze(1).cpu())
            mod_top5 = torch.topk(lp, min(5, lp.shape[-1]), dim=-1).indices
            agree.append((mod_top5[:, 0] == top_ids[:, 0]).cpu())
            base_top5 = top_ids[:, : mod_top5.shape[1]].long()
            top5.append((base_top5[:, :, None] == mod_top5[:, None, :]).any(-1).float().mean(-1).cpu())
        base_t.append(ref["target_lp"])
        ref_hidden = ref["hidden"]
        for layer, j in enumerate(mod.layer_map):
            if j is not None:
                # Both sides in the storage dtype, so an unmodified layer differs by exactly 0.
                acc.add(layer, ref_hidden[layer], resid[j].to(store_dtype).cpu())
        if progress:
            progress((i + 1) / (len(slices) + 1), f"profiling batch {i + 1}/{len(slices)}")

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
        **decoding.results(),
    }

    layer_rows = [
        (layer, name, value) for name, values in acc.results().items() for layer, value in enumerate(values)
    ]
    head_rows, attn_layer_rows = _attention_rows(mod, reference, probe_ids.to(device))
    layers = pd.DataFrame(layer_rows + attn_layer_rows, columns=["layer", "metric", "value"])
    heads = pd.DataFrame(head_rows, columns=["layer", "head", "metric", "value"])
    if not heads.empty:
        metrics["attn_js_mean"] = float(heads.loc[heads.metric == "attn_js", "value"].mean())
    hidden = layers[layers.metric == "hidden_rel_error"]
    if not hidden.empty:
        metrics["last_layer_rel_error"] = float(hidden.sort_values("layer")["value"].iloc[-1])
    kl_hist = pd.DataFrame(histogram(kl), columns=["bin_lo", "bin_hi", "count"])
    return Profile(metrics=metrics, layers=layers, heads=heads, kl_hist=kl_hist, report=dict(mod.report))


def _attention_rows(mod: ModifiedModel, reference: BaseReference, probe_ids: torch.Tensor):
    """Per (layer, head): JS divergence, entropy shift and attention-sink mass against the base probe maps."""
    base = reference.attention()  # [L, n, H, T, T]
    modified = attention_patterns(mod.model, probe_ids)
    head_rows, layer_rows = [], []
    for layer, j in enumerate(mod.layer_map):
        if j is None:
            continue
        p, q = base[layer], modified[j].cpu()
        heads = mod.head_map.get(layer, list(range(p.shape[1])))  # original index of each modified head
        p = p[:, heads]  # pruned heads: compare each surviving head with the head it was
        if p.shape != q.shape:  # a structural change altered the head count: heads no longer correspond
            continue
        js = js_divergence(p, q).mean(dim=(0, 2))  # [H]: mean over probes and queries
        dh = (entropy(q) - entropy(p)).mean(dim=(0, 2))
        # Sink mass: attention on the first token, over queries >= 1 (query 0 can only attend to itself).
        sink_p, sink_q = p[:, :, 1:, 0].mean(dim=(0, 2)), q[:, :, 1:, 0].mean(dim=(0, 2))
        for h in range(js.shape[0]):
            head_rows += [
                (layer, heads[h], "attn_js", float(js[h])),
                (layer, heads[h], "attn_entropy_shift", float(dh[h])),
                (layer, heads[h], "attn_sink_base", float(sink_p[h])),
                (layer, heads[h], "attn_sink", float(sink_q[h])),
            ]
        layer_rows += [(layer, "attn_js_mean", float(js.mean())), (layer, "attn_entropy_shift", float(dh.mean()))]
    return head_rows, layer_rows
