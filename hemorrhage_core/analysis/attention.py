"""Attention maps of the original and the modified model for one prompt, layer and head, ready for the dashboard.

`attention_view` tokenizes a user prompt (with the model's BOS convention, truncated to `max_tokens`), runs the
eager attention of both models once, and returns the original map, the modified map and their difference for
one layer (all heads, or one), token labels for the axes, and per-head summaries: JS divergence, entropy shift,
attention-sink mass before and after, and top-k attended-position overlap (docs/metrics.md §3).

Layers and heads are named as in the original model: after a depth change, layer l is compared with the block
it maps to (`layer_map`); after head pruning, each surviving head with the head it was (`head_map`), and a head
that was removed has no modified map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..corpora import sequence_bos
from ..probes.capture import attention_patterns
from ..probes.metrics import entropy, js_divergence
from ..probes.profile import ATTN_TOPK, topk_overlap
from ..progress import Progress, scaled

HEAD_COLUMNS = ["head", "js", "entropy_shift", "sink_base", "sink_modified", "topk_overlap", "present"]


@dataclass
class AttentionView:
    """Attention of one layer on one prompt. Maps are [H, T, T] (query, key) float32 numpy arrays, or [T, T]
    when one head was chosen; `modified` / `diff` are None for a layer (or head) the modified model lost."""

    prompt: str
    tokens: list[str]  # the text of each token, in order
    labels: list[str]  # unique axis labels: "3: the"
    layer: int
    head: int | None
    mapped_layer: int | None  # the modified model's block compared with `layer`
    base: np.ndarray
    modified: np.ndarray | None
    diff: np.ndarray | None
    heads: pd.DataFrame  # one row per original head: HEAD_COLUMNS

    def to_frame(self) -> pd.DataFrame:
        """Tidy rows (head, query, key, query_token, key_token, base, modified, diff) for plotting; heads as in
        the original model (a single chosen head, or all)."""
        base = self.base if self.base.ndim == 3 else self.base[None]
        mod = (
            None
            if self.modified is None
            else (self.modified if self.modified.ndim == 3 else self.modified[None])
        )
        heads = [self.head] if self.head is not None else list(range(base.shape[0]))
        t = base.shape[-1]
        q, k = np.meshgrid(np.arange(t), np.arange(t), indexing="ij")
        frames = []
        for i, h in enumerate(heads):
            frames.append(
                pd.DataFrame(
                    {
                        "head": h,
                        "query": q.ravel(),
                        "key": k.ravel(),
                        "query_token": np.asarray(self.labels)[q.ravel()],
                        "key_token": np.asarray(self.labels)[k.ravel()],
                        "base": base[i].ravel(),
                        "modified": np.nan if mod is None else mod[i].ravel(),
                    }
                )
            )
        df = pd.concat(frames, ignore_index=True)
        df["diff"] = df.modified - df.base
        return df


def _prompt_ids(tokenizer, prompt: str, max_tokens: int) -> torch.Tensor:
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = sequence_bos(tokenizer)
    if bos is not None:
        ids = [bos, *ids]
    return torch.tensor(ids[:max_tokens], dtype=torch.long)[None]  # [1, T]


def attention_maps(
    base_model,
    modified,
    tokenizer,
    prompt: str,
    layer: int,
    head: int | None = None,
    *,
    max_tokens: int = 128,
) -> AttentionView:
    """The view for `layer` (and `head`, or all heads) of `prompt`; `modified` is a ModifiedModel.

    Both models run the eager kernel (attention weights). Raises ValueError for an empty prompt or a layer or
    head out of range.
    """
    num_layers = len(modified.layer_map)
    if not 0 <= layer < num_layers:
        raise ValueError(f"layer must be in 0..{num_layers - 1}, got {layer}")
    ids = _prompt_ids(tokenizer, prompt, max_tokens)
    device = next(base_model.parameters()).device
    base_all = attention_patterns(base_model, ids.to(device))
    base_layer = base_all[layer]
    if base_layer is None:
        with_attention = [i for i, m in enumerate(base_all) if m is not None]
        raise ValueError(f"block {layer} has no attention; blocks with attention: {with_attention or 'none'}")
    base_maps = base_layer[0].cpu()  # [H, T, T]
    n_heads = base_maps.shape[0]
    if head is not None and not 0 <= head < n_heads:
        raise ValueError(f"head must be in 0..{n_heads - 1}, got {head}")
    j = modified.layer_map[layer]
    mod_full = None
    present = list(range(n_heads))
    if j is not None:
        maps = attention_patterns(modified.model, ids.to(device))[j][0].cpu()  # [H', T, T]
        present = modified.head_map.get(layer, list(range(maps.shape[0])))  # original index of each head
        if len(present) == maps.shape[0]:
            mod_full = torch.full_like(base_maps, float("nan"))
            mod_full[present] = maps

    rows = []
    t = base_maps.shape[-1]
    for h in range(n_heads):
        p = base_maps[h]
        q = mod_full[h] if mod_full is not None and h in present else None
        row = {
            "head": h,
            "sink_base": float(p[1:, 0].mean()) if t > 1 else float("nan"),
            "present": q is not None,
        }
        if q is not None:
            row |= {
                "js": float(js_divergence(p, q).mean()),
                "entropy_shift": float((entropy(q) - entropy(p)).mean()),
                "sink_modified": float(q[1:, 0].mean()) if t > 1 else float("nan"),
                "topk_overlap": float(topk_overlap(p, q, ATTN_TOPK).nanmean()) if t > 1 else float("nan"),
            }
        rows.append(row)
    heads = pd.DataFrame(rows).reindex(columns=HEAD_COLUMNS)

    tokens = [tokenizer.decode([int(i)]) for i in ids[0]]
    labels = [f"{i}: {tok!r}"[:24] for i, tok in enumerate(tokens)]
    pick = slice(None) if head is None else head
    base_np = base_maps[pick].numpy()
    mod_np = None
    if mod_full is not None and (head is None or head in present):
        mod_np = mod_full[pick].numpy()
    return AttentionView(
        prompt=prompt,
        tokens=tokens,
        labels=labels,
        layer=layer,
        head=head,
        mapped_layer=j,
        base=base_np,
        modified=mod_np,
        diff=None if mod_np is None else mod_np - base_np,
        heads=heads,
    )


def attention_view(
    runner,
    spec,
    prompt: str,
    layer: int,
    head: int | None = None,
    *,
    max_tokens: int = 128,
    progress: Progress | None = None,
):
    """`attention_maps` for a RunSpec, with the runner's shared base model (never mutated) and a modified copy.
    `progress` hears the modification block by block (two short passes on the prompt follow)."""
    loaded = runner.base(spec.model)
    modified = runner.modify(spec, progress=scaled(progress, 0.0, 0.9))
    if progress is not None:
        progress(0.9, "attention maps of both models on the prompt")
    view = attention_maps(
        loaded.model, modified, loaded.tokenizer, prompt, layer, head, max_tokens=max_tokens
    )
    if progress is not None:
        progress(1.0, "done")
    return view
