"""SparseGPT (Frantar & Alistarh, 2023): prune with the OBS update of the weights that stay.

For a layer with weight W [out, in] and calibration inputs X, the layer's output error ‖WX − W′X‖² has Hessian
H = 2XXᵀ [in, in] shared by every row. Columns are processed left to right; when column i is pruned in a row, the
error it leaves is spread over the columns not yet processed along row i of the upper Cholesky factor of H⁻¹, which
is the optimal correction for those columns given the ones already fixed. The mask is chosen per block of
`blocksize` columns from the OBS saliency w² / [H⁻¹]_ii² of the weights as updated so far; N:M groups are chosen the
same way when the column loop reaches a group's first column.

Mask selection per block: with `scope="row"` every output row loses its share in every block (so each row ends at
exactly floor(sparsity · in) zeros, as with the other methods); `scope="tensor"` takes one threshold over the whole
block, as the reference implementation does.
"""

from __future__ import annotations

import logging

import torch

from ..specs import Prune
from .obs import inverse_hessian_factor, single_threaded
from .prune import Evidence, pruning_method

log = logging.getLogger(__name__)


def _block_drop(saliency: torch.Tensor, k: int, scope: str) -> torch.Tensor:
    """Drop-mask [count, out] (transposed block) of the k lowest saliencies per output row or in the whole block."""
    drop = torch.zeros_like(saliency, dtype=torch.bool)
    if k <= 0:
        return drop
    if scope == "row":
        drop.scatter_(0, torch.topk(saliency, k, dim=0, largest=False).indices, True)
    else:
        drop.view(-1)[torch.topk(saliency.flatten(), k, largest=False).indices] = True
    return drop


def sparsegpt_prune(
    w: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    scope: str = "row",
    blocksize: int = 128,
    damp: float = 0.01,
) -> torch.Tensor:
    """Pruned and compensated copy of `w` [out, in]; `hessian` [in, in] ∝ Σ x xᵀ over calibration tokens.

    Exactly floor(sparsity · in) zeros per row (`scope="row"`), floor(sparsity · out · in) per matrix ("tensor"),
    or N in every M consecutive inputs (`nm`). Inputs never active in calibration (zero Hessian diagonal) are
    zeroed first, as in the reference code (their weights cannot affect the calibration outputs); the masks then
    pick them first, so the counts hold unless more of them are dead than the count asks for.

    The loop runs on the transposed weight [in, out] so that a column of W is a contiguous row (the same trick
    as the project's GPTQ): the per-column OBS update is then one rank-1 `addr_` on contiguous memory.
    """
    cols, rows = w.shape[1], w.shape[0]
    Wt = w.detach().float().t().contiguous()  # [in, out]: Wt[i] is input column i of W
    H = hessian.clone().float()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    Wt[dead] = 0.0
    Hinv = inverse_hessian_factor(H, damp)  # [in, in], upper triangular
    # floor(sparsity * total) weights go, spread over the column blocks by cumulative rounding
    total = rows * cols if scope == "tensor" else cols

    with single_threaded():
        _obs_loop(Wt, Hinv, sparsity=sparsity, nm=nm, scope=scope, blocksize=blocksize, total=total)
    return Wt.t().contiguous()


def _obs_loop(
    Wt: torch.Tensor,
    Hinv: torch.Tensor,
    *,
    sparsity: float,
    nm: tuple[int, int] | None,
    scope: str,
    blocksize: int,
    total: int,
) -> None:
    """The SparseGPT column loop on the transposed weight Wt [in, out], in place (see `sparsegpt_prune`)."""
    cols = Wt.shape[0]
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = Wt[i1:i2].clone()  # [count, out]
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = Hinv1.diagonal()  # [count]
        if nm is None:
            k = int(sparsity * total * i2 / cols) - int(sparsity * total * i1 / cols)
            drop = _block_drop(W1.pow(2) / d.pow(2)[:, None], k, scope)
        else:
            drop = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(count):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                sal = W1[i : i + m].pow(2) / d[i : i + m].pow(2)[:, None]  # [m, out]
                drop.scatter_(0, i + torch.topk(sal, n, dim=0, largest=False).indices, True)
            col = W1[i]  # [out]
            q = col.masked_fill(drop[i], 0.0)
            err = (col - q) / Hinv1[i, i]  # [out]
            Q1[i] = q
            Err1[i] = err
            W1[i:].addr_(Hinv1[i, i:], err, alpha=-1)  # OBS update of this block's remaining columns
        Wt[i1:i2] = Q1
        Wt[i2:].addmm_(Hinv[i1:i2, i2:].t(), Err1, alpha=-1)  # and of every later block at once


@pruning_method("sparsegpt", hessian=True)
def sparsegpt_method(w: torch.Tensor, ev: Evidence, mod: Prune) -> torch.Tensor:
    hessian = ev.needed_inputs().hessian
    if hessian is None:
        raise RuntimeError(f"{ev.name}: input statistics were collected without the Hessian")
    return sparsegpt_prune(
        w,
        hessian.to(w.device),
        sparsity=mod.sparsity,
        nm=mod.nm,
        scope=mod.scope,
        blocksize=mod.blocksize,
        damp=mod.damp,
    )
